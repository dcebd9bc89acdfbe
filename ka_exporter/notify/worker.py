"""Delivery: one loop per sink over the spool, one send at a time per sink so a receiver sees
notifications in the order they happened, and a bound on sends in flight overall.

A sink that is down holds back only its own queue (its head waits out the backoff); the
others go on. Firing alerts are re-sent to sinks that ask for it (Alertmanager) until a newer
notification with the same labels replaces them or they end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping

from ka_exporter.notify.sink import Reject, Retry, Sink
from ka_exporter.notify.spool import LEASE_SECONDS, Delivery, Spool, SpoolError

log = logging.getLogger("ka_notify")

POLL_SECONDS = 1.0  # how late a row another process added may be noticed
SEND_TIMEOUT = LEASE_SECONDS / 2  # a send must end well before its lease does


class Worker:
    def __init__(
        self,
        spool: Spool,
        sinks: Mapping[str, Sink],
        *,
        concurrency: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spool, self.sinks, self.clock = spool, sinks, clock
        self.slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """New rows are in the spool: wake every sink loop now rather than at the next poll."""
        self._wake.set()
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Delivers forever (the daemon), even with no sink: the daemon still reads the FIFO."""
        await self.drain(linger=math.inf)
        await asyncio.Event().wait()  # reached only when there is no sink

    async def drain(self, linger: float = 0.0) -> None:
        """Delivers until no sink has anything due within `linger` seconds."""
        await asyncio.gather(*(self._loop(name, sink, linger) for name, sink in self.sinks.items()))

    async def _loop(self, name: str, sink: Sink, linger: float) -> None:
        while True:
            now = self.clock()
            try:
                if sink.resend_interval:
                    for d in self.spool.resends_due(name, now):
                        await self.deliver(sink, d, resend=True)
                claimed = self.spool.claim(name, now)
                if claimed is not None:
                    await self.deliver(sink, claimed)
                    continue
                due = self.spool.next_due(name)
            except SpoolError as exc:
                log.error("%s", exc)
                due = now + POLL_SECONDS
            wait = None if due is None else max(0.0, due - now)
            if wait is None or wait > linger:
                if math.isfinite(linger):
                    return
                wait = POLL_SECONDS
            # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancellation that comes
            # as the wake-up does, and this loop would then outlive the daemon's shutdown
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(wait, POLL_SECONDS)):
                    await self._wake.wait()

    async def deliver(self, sink: Sink, d: Delivery, *, resend: bool = False) -> tuple[str, str]:
        """One attempt, recorded in the spool; returns the result and the sink's reason."""
        alert, reason = d.alert, ""
        try:
            async with self.slots, asyncio.timeout(SEND_TIMEOUT):
                await sink.send(alert)
        except Retry as exc:
            result, reason = "retried", str(exc)
            if not resend:
                delay = self.spool.retry(d, self.clock(), reason, exc.after)
                log.warning("sink=%s alert=%s retry in %.1fs: %s", d.sink, alert.id, delay, reason)
        except Reject as exc:
            result, reason = "rejected", str(exc)
            if not resend:
                self.spool.dead(d, self.clock(), reason)
                log.error("sink=%s alert=%s rejected: %s", d.sink, alert.id, reason)
        except TimeoutError:
            result, reason = "retried", f"no answer in {SEND_TIMEOUT:.0f}s"
            if not resend:
                self.spool.retry(d, self.clock(), reason, None)
        except Exception as exc:  # a sink's bug must not stop the others; the row is retried
            result, reason = "retried", type(exc).__name__
            log.exception("sink=%s alert=%s failed", d.sink, alert.id)
            if not resend:
                self.spool.retry(d, self.clock(), reason, None)
        else:
            result = "delivered"
            if not resend:
                self.spool.delivered(d, self.clock(), sink.resend_interval)
            log.info("sink=%s alert=%s %s delivered", d.sink, alert.id, alert.status.value)
        if resend and sink.resend_interval:
            self.spool.resent(d, self.clock(), sink.resend_interval)
        with self.spool.transaction():
            self.spool.count("deliveries", d.sink, result)
        return result, reason
