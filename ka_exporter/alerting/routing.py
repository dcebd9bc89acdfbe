"""Which sinks an alert goes to: the union of the matching routes, in the order configured.

People read mail and chat, so there one change is one message. An instance leaving FAULT gives
two alerts, the FAULT's resolution and the event of the new state; machines (webhooks,
Alertmanager) take both, while mail and chat get only the resolution, which says
`FAULT -> new` already.
"""

from __future__ import annotations

from ka_exporter.alerting.alert import Alert, Status
from ka_exporter.alerting.config import Config

READ_BY_PEOPLE = frozenset({"smtp", "slack"})


def _told_by_the_resolution(alert: Alert) -> bool:
    return (
        alert.status is Status.FIRING
        and alert.annotations.get("old_state") == "FAULT"
        and alert.labels.get("state") != "FAULT"
    )


def sinks_for(alert: Alert, config: Config) -> list[str]:
    """No routes at all means every sink: a one-sink setup needs no [[route]] table."""
    if not config.routes:
        chosen = [s.name for s in config.sinks]
    else:
        chosen = []
        for route in config.routes:
            if route.matches(alert.name, alert.severity):
                chosen += [name for name in route.sinks if name not in chosen]
    if _told_by_the_resolution(alert):
        people = {s.name for s in config.sinks if s.kind in READ_BY_PEOPLE}
        chosen = [name for name in chosen if name not in people]
    return chosen
