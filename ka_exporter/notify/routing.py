"""Which sinks an alert goes to: the union of the matching routes, in the order configured."""

from __future__ import annotations

from ka_exporter.notify.alert import Alert
from ka_exporter.notify.config import Config


def sinks_for(alert: Alert, config: Config) -> list[str]:
    """No routes at all means every sink: a one-sink setup needs no [[route]] table."""
    if not config.routes:
        return [s.name for s in config.sinks]
    chosen: list[str] = []
    for route in config.routes:
        if route.matches(alert.name, alert.severity):
            chosen += [name for name in route.sinks if name not in chosen]
    return chosen
