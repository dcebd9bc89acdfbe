"""What is delivered: one alert record, the same for every input and every sink.

An alert is identified by its labels (Alertmanager's rule: the same labels are the same alert,
so a resolution matches its firing); each notification about it has its own id, which is the
idempotency key sinks pass on (webhook-id, Message-ID) so a retried delivery is recognisable.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import asdict, dataclass, field


class Severity(enum.StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class Status(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Source(enum.StrEnum):
    NOTIFY = "notify"  # keepalived's notify hook (ka-notify)
    FIFO = "fifo"  # keepalived's notify FIFO
    EXPORTER = "exporter"  # what the exporter sees on the wire
    TEST = "test"  # ka-notify test


@dataclass(frozen=True, slots=True)
class Alert:
    name: str  # the alertname label, e.g. VRRPSplitBrain, KeepalivedStateChange
    severity: Severity
    status: Status
    source: Source
    starts_at: float  # Unix seconds
    ends_at: float | None = None  # None while firing with no known end
    labels: dict[str, str] = field(default_factory=dict)  # besides alertname and severity
    annotations: dict[str, str] = field(default_factory=dict)  # summary, description, wire

    @property
    def all_labels(self) -> dict[str, str]:
        return {"alertname": self.name, "severity": self.severity.value, **self.labels}

    @property
    def fingerprint(self) -> str:
        """Identity of the alert across its firing and resolution."""
        canonical = json.dumps(self.all_labels, sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()[:16]

    @property
    def subject(self) -> str:
        """What the alert is about, whatever its state: its labels but `state` (a keepalived
        instance, a VRID on a link). A sink gets one subject's notifications in the order they
        happened; different subjects need not wait for each other."""
        labels = {k: v for k, v in self.labels.items() if k != "state"}
        return json.dumps(labels, sort_keys=True)

    @property
    def id(self) -> str:
        """Identity of this one notification: stable across retries, new for each change."""
        canonical = json.dumps([self.fingerprint, self.status.value, self.starts_at, self.ends_at])
        return hashlib.sha256(canonical.encode()).hexdigest()[:24]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Alert:
        raw = json.loads(text)
        return cls(
            name=raw["name"],
            severity=Severity(raw["severity"]),
            status=Status(raw["status"]),
            source=Source(raw["source"]),
            starts_at=float(raw["starts_at"]),
            ends_at=None if raw["ends_at"] is None else float(raw["ends_at"]),
            labels=dict(raw["labels"]),
            annotations=dict(raw["annotations"]),
        )
