"""The exporter's own alerts: its model events and VIP ownership, through the same durable
spool, routes, sinks and delivery worker as `ka-notify daemon`, in the exporter's loop.

An alert is committed before the worker is woken, so a crash between the two loses nothing: the
next start delivers what is pending.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import TextIO

from ka_exporter.alerting.alert import Alert
from ka_exporter.alerting.config import Config, make_sinks
from ka_exporter.alerting.routing import sinks_for
from ka_exporter.alerting.spool import Spool, SpoolError, try_drain_lock
from ka_exporter.alerting.worker import Worker
from ka_exporter.alerts import Context, EventAlerts, ownership_alerts
from ka_exporter.model import Event, VridKey, VridView
from ka_exporter.ownership import ownership

log = logging.getLogger(__name__)
LOCK_RETRY_SECONDS = 5.0  # how soon we take over delivery when the daemon stops


def owned(
    views: Iterable[VridView], addresses: Mapping[str, frozenset[str]]
) -> set[tuple[VridKey, str]]:
    """(VRID, "duplicate" or "orphan") for each VRID whose VIPs this host holds wrongly."""
    pairs = set()
    for view in views:
        held = addresses.get(view.key.segment.netns)
        if held is None:
            continue
        pairs |= {(view.key, kind) for kind in ownership(view, held).wrongly}
    return pairs


class Alerting:
    def __init__(self, config: Config, host: str, expected_peers: Iterable[str] = ()) -> None:
        """Opens the spool; raises SpoolError if it cannot."""
        self.config = config
        self.context = Context(config.cluster, host, config.expected_peers | set(expected_peers))
        self.spool = Spool.open(config.state_dir)
        self._lock: TextIO | None = None
        self.worker = Worker(self.spool, make_sinks(config))
        self.events = EventAlerts(self.context)
        self._waiting_logged = False
        self._owned: set[tuple[VridKey, str]] = set()

    def commit(self, alerts: list[Alert], now: float) -> None:
        """Stores the alerts for their sinks, durably, then wakes the worker."""
        if not alerts:
            return
        try:
            with self.spool.transaction(durable=True):
                for alert in alerts:
                    self.spool.count("events", alert.source.value, alert.name)
                    self.spool.add(alert, sinks_for(alert, self.config), now)
        except SpoolError as exc:  # the exporter goes on; the log and the alert rules remain
            log.error("cannot commit %d alerts: %s", len(alerts), exc)
            return
        self.worker.poke()

    def feed(
        self, events: Iterable[Event], held_wrongly: set[tuple[VridKey, str]], now: float
    ) -> None:
        """One tick of the model: its events, and the VIPs held wrongly now (`owned`)."""
        alerts = [alert for event in events for alert in self.events.feed(event)]
        alerts += ownership_alerts(self._owned, held_wrongly, now, self.context)
        self._owned = held_wrongly
        self.commit(alerts, now)

    async def run(self) -> None:
        """Delivers once it holds the drain lock. Until then a `ka-notify daemon` on the same
        state_dir holds it and delivers what we commit (its worker polls the spool)."""
        while (lock := try_drain_lock(self.config.state_dir)) is None:
            if not self._waiting_logged:
                log.info(
                    "%s is delivered by another process; committing only", self.config.state_dir
                )
                self._waiting_logged = True
            await asyncio.sleep(LOCK_RETRY_SECONDS)
        self._lock = lock
        self.spool.release_leases()  # we are the only deliverer: a lease is a dead process's
        await self.worker.run()

    def close(self) -> None:
        self.spool.close()
        if self._lock is not None:
            self._lock.close()
