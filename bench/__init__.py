"""Benchmarks, run as modules (`python -m bench.decode`); figures go to docs/benchmarks.md."""
