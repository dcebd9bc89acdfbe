"""The lifecycle both daemons share: a stop that SIGTERM or SIGINT asks for, and background tasks
that cannot die in silence.

A task that ends, by an exception or by returning, is said once in the log with its traceback
and stops the process, which then exits 1: a capture tick or a netlink watch that died while
/metrics went on serving stale numbers would be worse than a restart by systemd.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXIT_CRASHED = 1


class Runtime:
    def __init__(self, log: logging.Logger) -> None:
        self.stopping = asyncio.Event()
        self.crashed: str | None = None  # the task whose end stopped the process
        self._log = log
        self._loop = asyncio.get_running_loop()
        self._tasks: list[asyncio.Task[None]] = []

    def handle_signals(self) -> None:
        # Not loop.add_signal_handler: its wakeup fd is inherited by the children pyroute2 forks
        # to open sockets in other namespaces, and their SIGTERM would stop us.
        for sig in SIGNALS:
            signal.signal(sig, lambda *_: self._loop.call_soon_threadsafe(self.stopping.set))

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = self._loop.create_task(coro, name=name)
        task.add_done_callback(self._ended)
        self._tasks.append(task)
        return task

    @property
    def exit_status(self) -> int:
        return EXIT_CRASHED if self.crashed else 0

    async def wait(self) -> int:
        """Until asked to stop or a task ended; the exit status."""
        await self.stopping.wait()
        return self.exit_status

    async def close(self) -> None:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.stopping.is_set():
            return
        exc = task.exception()
        if exc is None:
            self._log.error("%s ended, which it never should; stopping", task.get_name())
        else:
            self._log.error("%s failed; stopping: %s", task.get_name(), exc, exc_info=exc)
        self.crashed = task.get_name()
        self.stopping.set()
