"""Processes the integration tests start: their output to a log file, always stopped."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Runs `argv` with stdout and stderr appended to `log`; SIGTERM, then SIGKILL, on exit."""
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s; reaped either way."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ready(port: int, path: str = "/-/ready") -> bool:
    """Whether a server on loopback answers `path` with 200 now."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def scrape(port: int, path: str = "/metrics") -> str:
    """The page a server on loopback serves at `path`, or "" if it does not answer (yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return ""
