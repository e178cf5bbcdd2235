"""The test and bench app launcher (:func:`harness.api_client.running_app`) against stand-in apps."""

from __future__ import annotations

import pytest

from harness.api_client import GRADIO_SLOW_START, START_ATTEMPTS, running_app

# A stand-in for app.py (same flags): fails like Gradio on a busy machine until it has been started
# ``fails`` times, then answers /gradio_api/info on its port.
STAND_IN = """
import http.server, pathlib, sys
count = pathlib.Path(sys.argv[sys.argv.index("--count") + 1])
starts = int(count.read_text() or 0) + 1 if count.exists() else 1
count.write_text(str(starts))
if starts <= int(sys.argv[sys.argv.index("--fails") + 1]):
    sys.exit("OSError: {message} in range: 1-1.")
class Info(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/gradio_api/info" else 404)
        self.end_headers()
port = int(sys.argv[sys.argv.index("--port") + 1])
http.server.HTTPServer(("127.0.0.1", port), Info).serve_forever()
"""


@pytest.fixture
def stand_in(tmp_path):
    path = tmp_path / "stand_in.py"
    path.write_text(STAND_IN.replace("{message}", GRADIO_SLOW_START))
    return path


def test_an_app_gradio_gave_up_on_while_starting_is_started_again_on_a_new_port(stand_in, tmp_path):
    count = tmp_path / "starts"
    args = ["--count", str(count), "--fails", str(START_ATTEMPTS - 1)]
    with running_app(args, log_path=tmp_path / "app.log", ready_timeout_s=60, entry=stand_in) as app:
        assert app.proc.poll() is None
    assert count.read_text() == str(START_ATTEMPTS)
    assert (tmp_path / "app.log").read_text().count(GRADIO_SLOW_START) == START_ATTEMPTS - 1, "earlier logs are kept"
    assert app.proc.poll() is not None, "the app stops with the block"


def test_other_start_failures_and_a_slow_start_every_time_are_reported_not_retried(stand_in, tmp_path):
    count = tmp_path / "starts"
    with pytest.raises(RuntimeError, match=GRADIO_SLOW_START):
        with running_app(["--count", str(count), "--fails", "99"], log_path=tmp_path / "a.log", entry=stand_in):
            pass
    assert count.read_text() == str(START_ATTEMPTS)
    crash = tmp_path / "crash.py"
    crash.write_text("import sys; sys.exit('ValueError: bad flag')")
    with pytest.raises(RuntimeError, match="bad flag"):
        with running_app([], log_path=tmp_path / "b.log", entry=crash):
            pass
