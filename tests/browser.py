"""Headless Chromium on a page written to a file: the DOM it built and a screenshot of it.

Run as PID 1 of a PID namespace of its own when root (its zygotes and crash handler would
otherwise outlive it), and killed with that namespace if it hangs.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
SIZE = (1400, 900)


def _run(args: list[str], profile: Path, timeout: float = 60) -> str:
    if shutil.which("chromium") is None:
        pytest.skip("needs chromium")
    jail = ["unshare", "--pid", "--fork", "--kill-child"] if os.geteuid() == 0 else []
    argv = [*jail, "chromium", *FLAGS, f"--user-data-dir={profile}", *args]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:  # unshare killed: --kill-child takes the namespace
        pytest.fail(f"chromium {' '.join(args)} still running after {timeout:g} s")
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode()


def browse(page: str, out: Path, name: str) -> str:
    """Writes `page` to out/NAME.html, screenshots it to out/NAME.png; returns Chromium's DOM."""
    source = out / f"{name}.html"
    source.write_text(page, encoding="utf-8")
    url = source.resolve().as_uri()
    dom = _run(["--dump-dom", url], out / f"{name}-profile-dom")
    png = out / f"{name}.png"
    size = f"--window-size={SIZE[0]},{SIZE[1]}"
    _run([f"--screenshot={png}", size, "--hide-scrollbars", url], out / f"{name}-profile-png")
    image = png.read_bytes()
    assert image[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", image[16:24]) == SIZE
    assert len(image) > 10_000, f"a {len(image)}-byte screenshot is blank"
    return dom
