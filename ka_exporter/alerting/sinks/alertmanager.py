"""Alertmanager API v2: POST /api/v2/alerts to every replica.

Alertmanager replicas do not forward client alerts to each other, so each one is sent the alert
(its docs: no load balancer in front). One replica accepting is enough: they gossip
notifications, and the worker re-sends firing alerts every `resend_interval` anyway. A firing
alert without a known end gets endsAt = now + 3 x resend_interval, so if this process dies
Alertmanager resolves it by itself after three missed re-sends instead of holding it forever.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

from yarl import URL

from ka_exporter.alerting.alert import Alert, Status
from ka_exporter.alerting.secret import Redactor, Secret, credential_parts
from ka_exporter.alerting.sink import Reject, Retry
from ka_exporter.alerting.sinks import http
from ka_exporter.alerting.sinks.options import Delivery, Options, checked_url, known_keys
from ka_exporter.alerting.sinks.payload import am_alert, resolved_at, rfc3339

KEYS = known_keys(("urls", "resend_interval", "username", "external_url"), secrets=("password",))


@dataclass
class AlertmanagerSink(Delivery):
    name: str
    urls: tuple[URL, ...]
    lifetime: float  # endsAt ahead of now for a firing alert with no known end
    auth: tuple[str, Secret] | None
    external_url: str

    def ends_at(self, alert: Alert) -> float:
        if alert.status is Status.RESOLVED:
            return resolved_at(alert)
        if alert.ends_at is not None:
            return alert.ends_at
        return time.time() + self.lifetime

    async def send(self, alert: Alert) -> None:
        body = json.dumps(
            [am_alert(alert, rfc3339(self.ends_at(alert)), self.external_url)]
        ).encode()
        results = await asyncio.gather(
            *(
                http.post(
                    url,
                    body,
                    headers={},
                    timeout=self.timeout,
                    tls=self.tls,
                    redact=self.redact,
                    auth=self.auth,
                )
                for url in self.urls
            ),
            return_exceptions=True,
        )
        failures = [r for r in results if r is not None]
        if len(failures) < len(results):
            return
        for failure in failures:
            if not isinstance(failure, Retry | Reject):
                raise failure
        reason = "no Alertmanager accepted the alert: " + "; ".join(map(str, failures))
        retries = [f for f in failures if isinstance(f, Retry)]
        if not retries:
            raise Reject(reason)
        waits = [f.after for f in retries if f.after is not None]
        raise Retry(reason, after=min(waits, default=None))


def build(name: str, options: Mapping[str, object]) -> AlertmanagerSink:
    opts = Options(options, KEYS)
    urls = tuple(
        checked_url(text, "urls") / "api" / "v2" / "alerts" for text in opts.string_list("urls")
    )
    resend_interval = opts.number("resend_interval", 60.0)
    auth = opts.credentials()
    return AlertmanagerSink(
        name=name,
        urls=urls,
        resend_interval=resend_interval,
        lifetime=3 * resend_interval,
        auth=auth,
        external_url=opts.string("external_url", ""),
        **opts.delivery(10.0, Redactor(credential_parts(auth))),
    )
