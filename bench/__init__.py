"""Benchmarks, run as modules (`python -m bench.decode`); figures go to docs/benchmarks.md."""

import platform


def kernel() -> str:
    """`Linux 6.1`: the release without its build suffix, which says nothing about speed."""
    return "Linux " + ".".join(platform.release().split(".")[:2])
