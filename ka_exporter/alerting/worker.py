"""Delivery: one loop per sink over the spool, one send at a time per sink so a receiver sees
notifications in the order they happened, and a bound on sends in flight overall.

A sink that is down holds back only its own queue (its head waits out the backoff); the
others go on. Within a sink, one bad row does not hold back the rows behind it: when the head
fails, the oldest row of another subject is tried (Pick.PROBE). If that is delivered, the sink
works and only the head's subject is held: the other subjects' rows go on in their order while
the failing row waits out its backoff (Pick.ANY). If the probe fails too, the sink is down and
keeps its order (Pick.HEAD) until its head goes through, probing again after each failure of
its head. One subject's rows (a keepalived instance's states) are never delivered out of order:
a newer state waits behind an older one still being retried, until that one is delivered or
becomes a dead letter.

Firing alerts are re-sent to sinks that ask for it (Alertmanager) until a newer notification
with the same labels replaces them or they end.

Every attempt ends in one of three ways, so no row can hold its sink's queue for good: delivered;
retried with backoff (the sink's Retry, which is what its `timeout` running out gives) until the
sink's `max_attempts` or `max_age`; or a dead letter (the sink's Reject, any other exception: a
sink that cannot render an alert fails the same way on every try; or a Retry past the bound,
with its last reason). A sink that overruns its own timeout is cut GRACE seconds
later, and that too is a retry. Reasons are made one line and redacted of every sink's secrets
before they are logged or stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import traceback
from collections.abc import Callable, Mapping
from functools import reduce
from operator import or_

from ka_exporter.alerting.secret import Redactor
from ka_exporter.alerting.sink import Reject, Retry, Sink
from ka_exporter.alerting.spool import Delivery, Pick, Spool, SpoolError

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # how late a row another process added may be noticed
# A sink ends its attempt at its `timeout` with its own, more precise reason (which replica,
# which server); the worker's cut is the backstop.
GRACE = 1.0


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
        self.redact: Redactor = reduce(or_, (s.redact for s in sinks.values()), Redactor())
        self._wake = asyncio.Event()
        self._pick: dict[str, Pick] = {}  # per sink, from how its last attempts ended

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
                pick = self._pick.get(name, Pick.ANY)
                claimed = self.spool.claim(name, now, pick)
                if claimed is None and pick is Pick.PROBE:  # nothing but the head's subject
                    self._pick[name] = pick = Pick.HEAD
                    claimed = self.spool.claim(name, now, pick)
                if claimed is not None:
                    await self.deliver(sink, claimed)
                    continue
                due = self.spool.next_due(name, pick)
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
        """One attempt, recorded in the spool; returns the result and its reason, redacted."""
        alert = d.alert
        redact = self.redact if self.sinks.get(sink.name) is sink else self.redact | sink.redact
        outcome: Retry | Reject | None = None
        try:
            async with self.slots, asyncio.timeout(sink.timeout + GRACE):
                await sink.send(alert)
        except TimeoutError:
            outcome = Retry(f"not done within its {sink.timeout:g} s timeout")
        except (Retry, Reject) as exc:
            outcome = exc
        except Exception as exc:
            outcome = Reject(f"{type(exc).__name__}: {exc}")
            trace = "".join(traceback.format_exception(exc))
            log.error("sink=%s alert=%s cannot be sent:\n%s", d.sink, alert.id, redact(trace))
        if outcome is None:
            result, reason = "delivered", ""
            self._pick[d.sink] = Pick.ANY
            if not resend:
                self.spool.delivered(d, self.clock(), sink.resend_interval)
            log.info("sink=%s alert=%s %s delivered", d.sink, alert.id, alert.status.value)
        else:
            reason = " ".join(redact(str(outcome)).split())
            if resend:
                result = "retried" if isinstance(outcome, Retry) else "rejected"
                log.warning("sink=%s alert=%s re-send failed: %s", d.sink, alert.id, reason)
            elif isinstance(outcome, Retry) and (limit := self._past_bound(sink, d)) is not None:
                result, reason = "rejected", f"{limit}: {reason}"
                self.spool.dead(d, self.clock(), reason)
                log.error("sink=%s alert=%s dead letter, %s", d.sink, alert.id, reason)
            elif isinstance(outcome, Retry):
                result = "retried"
                # the head failed: probe another subject; the probe failed too: the sink is down
                failed = self._pick.get(d.sink, Pick.ANY)
                self._pick[d.sink] = Pick.HEAD if failed is Pick.PROBE else Pick.PROBE
                delay = self.spool.retry(d, self.clock(), reason, outcome.after)
                log.warning("sink=%s alert=%s retry in %.1fs: %s", d.sink, alert.id, delay, reason)
            else:
                result = "rejected"
                self.spool.dead(d, self.clock(), reason)
                log.error("sink=%s alert=%s rejected: %s", d.sink, alert.id, reason)
        if resend and sink.resend_interval:
            self.spool.resent(d, self.clock(), sink.resend_interval)
        with self.spool.transaction():
            self.spool.count("deliveries", d.sink, result)
        return result, reason

    def _past_bound(self, sink: Sink, d: Delivery) -> str | None:
        """Why a delivery that failed once more is given up, if it is."""
        attempts, age = d.attempts + 1, self.clock() - d.queued
        if attempts >= sink.max_attempts:
            return f"gave up after {attempts} attempts"
        if d.queued and age >= sink.max_age:
            return f"gave up after {attempts} attempt{'s' * (attempts != 1)} in {age:.0f} s"
        return None
