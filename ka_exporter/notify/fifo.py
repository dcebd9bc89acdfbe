"""keepalived's notify FIFO, read without blocking the loop and across keepalived restarts.

We hold a write end of our own open, so keepalived closing its end (a restart) is not EOF and
the read end never spins; should EOF come anyway, the FIFO is reopened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

MAX_LINE = 4096  # keepalived's lines are short; longer input is junk, skipped


class FifoError(Exception):
    """The path cannot be used as the FIFO; the message is for the user."""


def ensure_fifo(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        try:
            os.mkfifo(path, 0o600)
        except OSError as exc:
            raise FifoError(f"cannot create FIFO {path}: {exc.strerror}") from None
        return
    if not stat.S_ISFIFO(mode):
        raise FifoError(f"{path} exists and is not a FIFO")


async def read_lines(path: Path, on_line: Callable[[str], None]) -> None:
    """Calls `on_line` for every line until cancelled."""
    ensure_fifo(path)
    loop = asyncio.get_running_loop()
    while True:
        read_fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        keep_fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        reader = asyncio.StreamReader(limit=MAX_LINE)
        transport, _ = await loop.connect_read_pipe(
            lambda r=reader: asyncio.StreamReaderProtocol(r),  # type: ignore[misc]
            os.fdopen(read_fd, "rb", buffering=0),
        )
        try:
            while True:
                try:
                    raw = await reader.readline()
                except ValueError:  # longer than MAX_LINE: drop what is buffered
                    log.warning("fifo=%s line longer than %d bytes skipped", path, MAX_LINE)
                    continue
                if not raw:
                    break  # EOF: reopen
                on_line(raw.decode("utf-8", "replace"))
        finally:
            transport.close()
            with contextlib.suppress(OSError):
                os.close(keep_fd)
