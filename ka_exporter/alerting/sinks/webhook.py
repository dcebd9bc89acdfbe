"""Generic webhook: Alertmanager's webhook v4 body, signed as Standard Webhooks say.

The body is exactly what Alertmanager would POST for a group holding this one alert, so any
Alertmanager webhook receiver works unchanged. Each alert is its own group (groupKey from all
its labels): a receiver that opens a ticket per group must not merge two clusters' split-brains
and close both when one resolves. webhook-id is the notification id, stable across retries, so
receivers can drop duplicates; the timestamp and signature are per attempt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from yarl import URL

from ka_exporter.alerting.alert import Alert, Status
from ka_exporter.alerting.secret import (
    Redactor,
    Secret,
    authorization_parts,
    token_like,
    url_parts,
)
from ka_exporter.alerting.sinks import http
from ka_exporter.alerting.sinks.options import Delivery, Options, known_keys
from ka_exporter.alerting.sinks.payload import ZERO_TIME, am_alert, resolved_at, rfc3339

_RESERVED = ("content-type", "webhook-id", "webhook-timestamp", "webhook-signature")
KEYS = known_keys(("url", "headers", "external_url"), secrets=("secret", "authorization"))


@dataclass
class WebhookSink(Delivery):
    name: str
    url: URL
    key: bytes | None = field(repr=False)
    headers: dict[str, str]
    authorization: Secret | None
    external_url: str

    def body(self, alert: Alert) -> bytes:
        ends_at = ZERO_TIME if alert.status is Status.FIRING else rfc3339(resolved_at(alert))
        labels = alert.all_labels
        message = {
            "version": "4",
            "groupKey": "{}:{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}",
            "truncatedAlerts": 0,
            "status": alert.status.value,
            "receiver": self.name,
            "groupLabels": labels,
            "commonLabels": labels,
            "commonAnnotations": alert.annotations,
            "externalURL": self.external_url,
            "alerts": [
                {
                    "status": alert.status.value,
                    **am_alert(alert, ends_at, self.external_url),
                    "fingerprint": alert.fingerprint,
                }
            ],
        }
        return json.dumps(message, separators=(",", ":")).encode()

    async def send(self, alert: Alert) -> None:
        body = self.body(alert)  # serialized once: the signature covers these exact bytes
        headers = {
            **self.headers,
            "webhook-id": alert.id,
            "webhook-timestamp": str(int(time.time())),
        }
        if self.key is not None:
            signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
            digest = hmac.new(self.key, signed, hashlib.sha256).digest()
            headers["webhook-signature"] = "v1," + base64.b64encode(digest).decode()
        if self.authorization is not None:
            headers["Authorization"] = self.authorization.reveal()
        await http.post(
            self.url, body, headers=headers, timeout=self.timeout, tls=self.tls, redact=self.redact
        )


def signing_key(secret: Secret) -> bytes:
    """Standard Webhooks: a `whsec_` secret is base64 of the key bytes; others are used as is."""
    text = secret.reveal()
    if not text.startswith("whsec_"):
        return text.encode()
    try:
        return base64.b64decode(text.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise ValueError("secret: a whsec_ secret must be base64 after the prefix") from None


def build(name: str, options: Mapping[str, object]) -> WebhookSink:
    opts = Options(options, KEYS)
    url = opts.url("url")
    secret = opts.optional_secret("secret")
    headers = opts.table("headers")
    for header in headers:
        if header.lower() == "authorization":
            raise ValueError(
                "headers: Authorization is a secret; use authorization_file or authorization_env"
            )
        if header.lower() in _RESERVED:
            raise ValueError(f"headers: {header} is set by the sink")
    authorization = opts.optional_secret("authorization")
    # the URL and the headers are no secret, but a token in them is, should a receiver echo it
    secrets = [*url_parts(url), *(v for v in headers.values() if token_like(v))]
    if authorization is not None:
        secrets += authorization_parts(authorization.reveal())
    if secret is not None:
        secrets.append(secret.reveal())
    return WebhookSink(
        name=name,
        url=url,
        key=None if secret is None else signing_key(secret),
        headers=headers,
        authorization=authorization,
        external_url=opts.string("external_url", ""),
        **opts.delivery(15.0, Redactor(secrets)),
    )
