"""The benchmark suite (`make bench`, `python benchmarks/bench.py`): a development tool beside
the package, not installed with it."""
