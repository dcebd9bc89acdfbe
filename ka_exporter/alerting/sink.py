"""The contract between the delivery worker and each kind of sink.

A sink either delivers, or says whether trying again can help: `Retry` (connection errors,
5xx, 429 with its Retry-After) goes back to the spool with backoff, `Reject` (any other 4xx, a
refused login) goes to the dead-letter list with its reason. Messages never carry secrets.
"""

from __future__ import annotations

from typing import Protocol

from ka_exporter.alerting.alert import Alert
from ka_exporter.alerting.secret import Redactor

# How long a delivery is retried before it becomes a dead letter with its last reason, whichever
# comes first; each sink may set its own (`max_attempts`, `max_age`). With the backoff's full
# jitter and 300 s cap, 50 attempts are about two hours of a receiver answering 5xx (at most
# about four); a day is as stale as an alert about a failover may be and still say something.
MAX_ATTEMPTS = 50
MAX_AGE = 86400.0


class Retry(Exception):
    def __init__(self, reason: str, after: float | None = None) -> None:
        super().__init__(reason)
        self.after = after  # seconds the receiver asked us to wait (Retry-After), if it did


class Reject(Exception):
    """Permanent failure: retrying the same notification cannot succeed."""


class Sink(Protocol):
    name: str  # as configured; the `sink` label of the delivery metrics
    # Alertmanager expects its clients to re-send firing alerts until they resolve; sinks that
    # want that say how often, the others None.
    resend_interval: float | None
    timeout: float  # seconds: the bound of one whole attempt, connect to the last answer
    redact: Redactor  # blacks out the secrets the sink holds, in every form they are sent in
    max_attempts: int  # a delivery retried this many times is a dead letter
    max_age: float  # seconds: so is one first queued this long ago

    async def send(self, alert: Alert) -> None:
        """Delivers one alert or raises Retry or Reject."""
