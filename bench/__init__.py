"""EarlySketch's benchmarks, by purpose: ``speed/`` (one component's latency or throughput), ``load/`` (many
sessions against the running app), ``accuracy/`` (retrieval quality of models and levers), and ``lib/`` (what
they share: result files, machine header, statistics, synthetic embeddings, app traffic).

Run from the repository root as modules, e.g. ``python -m bench.speed.bench_raster``; ``python -m bench.run_all``
runs the registered ones (``bench/registry.py``) and writes ``bench/RESULTS.md``.
"""
