"""From a keepalived notification to alerts committed in the spool.

The hook and the FIFO reader share this: the instance's previous state, flap damping and
routing happen in the one durable transaction that stores the alerts, so concurrent hook runs
(separate processes) see one consistent damper and one history per instance.
"""

from __future__ import annotations

import os

from ka_exporter.notify import keepalived
from ka_exporter.notify.alert import Alert, Source
from ka_exporter.notify.config import Config
from ka_exporter.notify.damping import Damper
from ka_exporter.notify.routing import sinks_for
from ka_exporter.notify.spool import Spool

DAMPED_STATES = ("MASTER", "BACKUP")  # a flapping pair; FAULT, STOP and priorities always pass
DAMPER = "damper"  # its name in the spool's kv table


def _damper(spool: Spool, config: Config) -> Damper:
    damper = Damper(config.damping.window, config.damping.threshold)
    saved = spool.get_value(DAMPER)
    if saved:
        damper.load(saved)
    return damper


def record(
    spool: Spool,
    config: Config,
    note: keepalived.Notification,
    source: Source,
    now: float,
    host: str | None = None,
) -> list[Alert]:
    """Stores the instance's new state and every alert it gives, routed; returns the alerts."""
    host = host or os.uname().nodename
    with spool.transaction(durable=True):
        spool.count("events", source.value, note.state.lower())
        before = spool.swap_state(
            note.type, note.name, note.state if note.is_state else None, note.priority, now
        )
        previous = keepalived.Previous(*before) if before and note.is_state else None
        if note.is_state and (previous is None or previous.state != note.state):
            spool.count("transitions", note.type, note.name)
        damper = _damper(spool, config)
        passes, digests = True, damper.flush(now)
        leaving_fault = previous is not None and previous.state == "FAULT"
        if note.state in DAMPED_STATES and not leaving_fault:  # a resolution always goes out
            passes, closed = damper.offer(keepalived.damping_key(note), note.state, now)
            digests += closed
        spool.set_value(DAMPER, damper.dump())
        alerts = []
        if passes:
            alerts += keepalived.to_alerts(
                note, host=host, cluster=config.cluster, now=now, source=source, previous=previous
            )
        alerts += [
            keepalived.digest_alert(d, host=host, cluster=config.cluster, source=source)
            for d in digests
        ]
        for alert in alerts:
            spool.add(alert, sinks_for(alert, config), now)
    return alerts


def flush(
    spool: Spool, config: Config, now: float, source: Source, host: str | None = None
) -> tuple[list[Alert], float | None]:
    """Digests of the damping windows closed by `now`, stored; and when the next one is due."""
    host = host or os.uname().nodename
    with spool.transaction(durable=True):
        damper = _damper(spool, config)
        digests = damper.flush(now)
        alerts = [
            keepalived.digest_alert(d, host=host, cluster=config.cluster, source=source)
            for d in digests
        ]
        if digests:
            spool.set_value(DAMPER, damper.dump())
            for alert in alerts:
                spool.add(alert, sinks_for(alert, config), now)
    return alerts, damper.next_deadline()
