"""What the benchmarks share: result files and their header (``common``), synthetic embeddings (``synthetic``),
and the clients and traffic that drive a running app (``drawing_sessions``, ``study_client``, ``study_traffic``)."""
