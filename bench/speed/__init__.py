"""Speed benchmarks: one component's latency or throughput (rasteriser, encoder, index, the stroke's path)."""
