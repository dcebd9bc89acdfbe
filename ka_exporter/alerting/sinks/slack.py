"""Slack or Mattermost incoming webhook: `text` plus one legacy attachment.

Attachments rather than blocks because Mattermost renders attachments (colour bar, fields) but
not Slack blocks; `text` is the fallback both use in notifications. The URL is the credential
(anyone holding it can post), so it is read like a password and never shown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from ka_exporter.alerting.alert import Alert, Severity, Status
from ka_exporter.alerting.secret import Redactor, Secret, url_parts
from ka_exporter.alerting.sinks import http
from ka_exporter.alerting.sinks.options import Delivery, Options, checked_url, known_keys
from ka_exporter.alerting.sinks.payload import facts, title

KEYS = known_keys(("channel", "username"), secrets=("url",))

RESOLVED_COLOUR = "#2eb886"
COLOURS = {Severity.CRITICAL: "#d00000", Severity.WARNING: "#daa038", Severity.INFO: "#439fe0"}


@dataclass
class SlackSink(Delivery):
    name: str
    url: Secret
    channel: str | None
    username: str | None

    def body(self, alert: Alert) -> bytes:
        resolved = alert.status is Status.RESOLVED
        lines = [alert.annotations.get("description", "")]
        if alert.annotations.get("wire"):
            lines.append(f"On the wire:\n```\n{alert.annotations['wire']}\n```")
        message: dict[str, object] = {
            "text": title(alert),
            "attachments": [
                {
                    "fallback": title(alert),
                    "color": RESOLVED_COLOUR if resolved else COLOURS[alert.severity],
                    "title": title(alert),
                    "text": "\n".join(line for line in lines if line),
                    "fields": [
                        {"title": name, "value": value, "short": True}
                        for name, value in facts(alert)
                    ],
                    "mrkdwn_in": ["text"],
                }
            ],
        }
        if self.channel is not None:
            message["channel"] = self.channel
        if self.username is not None:
            message["username"] = self.username
        return json.dumps(message).encode()

    async def send(self, alert: Alert) -> None:
        url = checked_url(self.url.reveal(), "url")
        await http.post(
            url,
            self.body(alert),
            headers={},
            timeout=self.timeout,
            tls=self.tls,
            redact=self.redact,
        )


def build(name: str, options: Mapping[str, object]) -> SlackSink:
    opts = Options(options, KEYS)
    url = opts.secret("url")
    parsed = checked_url(url.reveal(), "url")
    return SlackSink(
        name=name,
        url=url,
        channel=opts.optional_string("channel"),
        username=opts.optional_string("username"),
        **opts.delivery(15.0, Redactor([url.reveal(), *url_parts(parsed)])),
    )
