"""The processes the integration tests start, and their servers' pages: lab.running, which the
benchmarks share."""

from lab.running import process, ready, scrape, stop

__all__ = ["process", "ready", "scrape", "stop"]
