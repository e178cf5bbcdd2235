"""Clients and launchers that drive a running app from outside: the tests' and benchmarks' harness.

Not part of the library (``retrieval`` never imports it; tests/test_architecture.py checks it):
``api_client`` starts ``app.py`` in a subprocess and calls its ``rank`` endpoint, ``ui_client``
sends the requests the browser page sends, ``browser`` opens Debian's Chromium under Playwright,
``stroke_payloads`` holds the valid, largest allowed and hostile stroke payloads (fuzz tests, parse bench).
"""
