"""kvd's benchmark suite: drivers that start the daemon and its baselines, run each section and
collect min / median / max over repeated runs (see Benchmarks/README.md)."""
