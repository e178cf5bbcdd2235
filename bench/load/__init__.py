"""Load and reliability benchmarks: many sessions against the running app (concurrency, browser, study, hostile
clients, the stroke route, the cluster)."""
