"""What an alert looks like to receivers: Alertmanager's alert JSON, and a readable digest.

The HTTP sinks speak Alertmanager's formats so existing receivers work unchanged; the SMTP and
Slack sinks render the same digest, so a mail and a chat message list the same facts.

The title says "[FIRING]" only for a problem: a condition that lasts until it is resolved
(FAULT, split brain, a duplicate VIP...) or anything critical. A routine change of state is
news, and a tag meant to page would teach people to ignore it. The cluster leads the title, the
state follows it if the summary does not already say it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from ka_exporter.alerting.alert import Alert, Severity, Status

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time: Alertmanager's "no end known"


def rfc3339(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def resolved_at(alert: Alert) -> float:
    """When a resolved alert ended: its own end, or now if the source did not say."""
    return time.time() if alert.ends_at is None else alert.ends_at


def am_alert(alert: Alert, ends_at: str, generator_url: str) -> dict[str, object]:
    """One alert as both Alertmanager's API v2 and its webhook v4 spell it (minus the extras)."""
    return {
        "labels": alert.all_labels,
        "annotations": alert.annotations,
        "startsAt": rfc3339(alert.starts_at),
        "endsAt": ends_at,
        "generatorURL": generator_url,
    }


def _state(alert: Alert) -> str | None:
    fields = {**alert.annotations, **alert.labels}
    new = fields.get("new_state") or fields.get("state")
    old = fields.get("old_state")
    if new and old and new != old:
        return f"{old} -> {new}"
    return new or old


# Keys shown first and by name; any other label follows under its own key.
_NAMED = (("instance", "Host"), ("iname", "Instance"), ("cluster", "Cluster"), ("vrid", "VRID"))
_STATE_KEYS = frozenset({"state", "old_state", "new_state"})
_OWN_KEYS = frozenset({"alertname", "severity", "priority"})


def _problem(alert: Alert) -> bool:
    """Lasts until resolved (FAULT, split brain, a duplicate VIP...), or critical."""
    return alert.ends_at is None or alert.severity is Severity.CRITICAL


def title(alert: Alert) -> str:
    text = alert.annotations.get("summary") or alert.name
    state = _state(alert)
    if state and state not in text:
        text = f"{text} ({state})"
    if alert.labels.get("cluster"):
        text = f"{alert.labels['cluster']}: {text}"
    if alert.status is Status.RESOLVED:
        return f"[RESOLVED] {text}"
    return f"[FIRING] {text}" if _problem(alert) else text


def facts(alert: Alert, vips: list[str] | None = None) -> list[tuple[str, str]]:
    """(name, value) lines for humans: where, which addresses, what changed, how bad, when."""
    fields = {**alert.annotations, **alert.labels}
    lines = [(name, fields[key]) for key, name in _NAMED if fields.get(key)]
    if vips:
        lines.append(("VIPs", ", ".join(vips)))
    state = _state(alert)
    if state:
        lines.append(("State", state))
    if fields.get("priority"):
        lines.append(("Priority", fields["priority"]))
    lines.append(("Severity", alert.severity.value))
    lines.append(("Alert", alert.name))
    lines.append(("Since", rfc3339(alert.starts_at)))
    if alert.status is Status.RESOLVED:
        lines.append(("Resolved", rfc3339(resolved_at(alert))))
    shown = {key for key, _ in _NAMED} | _STATE_KEYS | _OWN_KEYS
    lines.extend((key, value) for key, value in sorted(alert.labels.items()) if key not in shown)
    return lines
