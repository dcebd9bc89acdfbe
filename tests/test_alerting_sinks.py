"""Secrets, option checking, and the webhook and Slack sinks against a real HTTP receiver."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest
from aiohttp import web

from ka_exporter.alerting.alert import Alert, Status
from ka_exporter.alerting.secret import read_secret
from ka_exporter.alerting.sink import Reject, Retry
from ka_exporter.alerting.sinks import SINK_TYPES, alertmanager, slack, webhook
from ka_exporter.alerting.sinks.http import retry_after
from tests.notify_servers import free_port, http_receiver, sample_alert

SECRET = "s3cr3t-never-shown"


def test_secret_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text(f"  {SECRET}\n")
    monkeypatch.setenv("KA_TEST_PW", SECRET)
    from_file = read_secret({"password_file": str(tmp_path / "pw")}, "password")
    from_env = read_secret({"password_env": "KA_TEST_PW"}, "password")
    assert from_file is not None and from_file.reveal() == SECRET
    assert from_env is not None and from_env.reveal() == SECRET
    assert SECRET not in repr(from_file) and SECRET not in str(from_env)
    assert read_secret({}, "password", required=False) is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"password": SECRET}, "password: secrets are not accepted inline; use password_file"),
        ({}, "password: missing; set password_file or password_env"),
        ({"password_env": "KA_TEST_UNSET"}, "password_env: environment variable KA_TEST_UNSET"),
        ({"password_file": "/nonexistent/pw"}, "password_file: cannot read /nonexistent/pw"),
        ({"password_file": "x", "password_env": "y"}, "password: set only one of"),
    ],
)
def test_secret_errors_name_the_key_not_the_value(
    options: dict[str, object], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KA_TEST_UNSET", raising=False)
    with pytest.raises(ValueError, match="^" + message) as caught:
        read_secret(options, "password")
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("webhook", {}, "url: missing"),
        ("webhook", {"url": "ftp://x/"}, "url: expected an http:// or https:// URL"),
        (
            "webhook",
            {"url": "http://x/", "timout": 3},
            "timout: unknown key; did you mean 'timeout'",
        ),
        ("webhook", {"url": "http://u:pw@x/"}, "url: credentials do not go into the URL"),
        ("webhook", {"url": "http://x/", "timeout": 60}, "timeout: at most 30 s: an attempt"),
        ("webhook", {"url": "http://x/", "headers": {"Authorization": "Bearer x"}}, "headers: "),
        ("webhook", {"url": "http://x/", "ca_file": "/nonexistent"}, "ca_file: cannot load"),
        ("alertmanager", {"urls": "http://am:9093"}, "urls: expected a non-empty list"),
        ("alertmanager", {"urls": ["http://am"], "resend_interval": 0}, "resend_interval: "),
        ("alertmanager", {"urls": ["http://am"], "password_env": "PATH"}, "username: missing"),
        ("slack", {"url": "https://hooks.slack.com/x"}, "url: secrets are not accepted inline"),
        ("smtp", {"host": "mx", "from": "a@b", "to": ["c@d"], "tls": "none"}, "tls: 'none'"),
        ("smtp", {"host": "mx", "from": "a@b", "to": ["nobody"]}, "to: not a mail address"),
        ("smtp", {"host": "mx", "from": "a@b", "to": ["c@d"], "tls": "ssl"}, "tls: expected one"),
        ("smtp", {"host": "mx", "from": "a@b", "to": ["c@d"], "port": 0}, "port: expected"),
        ("smtp", {"host": "mx", "from": "a@b\nBcc: e@f", "to": ["c@d"]}, "from: not a mail"),
        (
            "smtp",
            {"host": "mx", "from": "a@b", "too": ["c@d"]},
            "too: unknown key; did you mean 'to'",
        ),
    ],
)
def test_build_rejects_bad_options(kind: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message):
        SINK_TYPES[kind]("test", options)


def test_retry_after_seconds_and_http_date() -> None:
    now = time.time()
    assert retry_after("7") == 7
    assert retry_after(format_datetime(datetime.fromtimestamp(now + 120, UTC), usegmt=True), now)
    assert (
        119
        <= (retry_after(format_datetime(datetime.fromtimestamp(now + 120, UTC), True), now) or 0)
        <= 120
    )
    assert retry_after("soon") is None
    assert retry_after("\u00b2") is None  # a digit to str.isdigit(), not to float()
    assert retry_after(None) is None


class Receiver:
    """Records each request and answers with the status the path starts with (/200, /429/...);
    /slow answers after a second."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def __call__(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        first = request.match_info["tail"].partition("/")[0]
        if first == "slow":
            await asyncio.sleep(1)
        status = int(first) if first.isdigit() else 200
        headers = {"Retry-After": "7"} if status == 429 else {}
        return web.Response(status=status, text=f"status {status}", headers=headers)


def send(sink: webhook.WebhookSink | slack.SlackSink, alert: Alert) -> None:
    asyncio.run(sink.send(alert))


def test_webhook_signed_v4_payload(tmp_path: Path) -> None:
    key = b"0123456789abcdef0123456789abcdef"
    (tmp_path / "whsec").write_text("whsec_" + base64.b64encode(key).decode() + "\n")
    receiver = Receiver()
    alert = sample_alert()

    async def main() -> None:
        async with http_receiver(receiver) as base:
            sink = webhook.build(
                "ops-hook",
                {"url": f"{base}/200", "secret_file": str(tmp_path / "whsec"),
                 "headers": {"X-Team": "net"}, "external_url": "http://node-a:9165/"},
            )  # fmt: skip
            await sink.send(alert)
            await sink.send(alert)  # a retry: same webhook-id

    asyncio.run(main())
    (headers, body), (again, _) = receiver.requests
    assert headers["webhook-id"] == again["webhook-id"] == alert.id
    assert headers["X-Team"] == "net"
    timestamp = headers["webhook-timestamp"]
    assert abs(int(timestamp) - time.time()) < 30
    signed = f"{alert.id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    version, _, signature = headers["webhook-signature"].partition(",")
    assert version == "v1" and hmac.compare_digest(signature, expected)

    message = json.loads(body)
    assert message["version"] == "4" and message["truncatedAlerts"] == 0
    assert message["receiver"] == "ops-hook" and message["status"] == "firing"
    assert message["externalURL"] == "http://node-a:9165/"
    assert message["commonLabels"] == alert.all_labels == message["groupLabels"]
    assert message["commonAnnotations"] == alert.annotations
    assert message["groupKey"].startswith('{}:{alertname="KeepalivedStateChange", cluster="lb1"')
    (sent,) = message["alerts"]
    assert sent["labels"] == alert.all_labels and sent["annotations"] == alert.annotations
    assert sent["fingerprint"] == alert.fingerprint and sent["status"] == "firing"
    assert sent["startsAt"] == datetime.fromtimestamp(int(alert.starts_at), UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert sent["endsAt"] == "0001-01-01T00:00:00Z"
    assert sent["generatorURL"] == "http://node-a:9165/"


def test_webhook_resolved_has_end_and_authorization(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KA_TEST_AUTH", "Bearer " + SECRET)
    receiver = Receiver()
    alert = sample_alert(Status.RESOLVED, ends_at=1_795_000_000.0)

    async def main() -> None:
        async with http_receiver(receiver) as base:
            sink = webhook.build("h", {"url": f"{base}/200", "authorization_env": "KA_TEST_AUTH"})
            assert SECRET not in repr(sink)
            await sink.send(alert)

    asyncio.run(main())
    ((headers, body),) = receiver.requests
    assert headers["Authorization"] == "Bearer " + SECRET
    assert "webhook-signature" not in headers  # no key configured
    message = json.loads(body)
    assert message["status"] == message["alerts"][0]["status"] == "resolved"
    assert message["alerts"][0]["endsAt"] == "2026-11-18T11:06:40Z"


@pytest.mark.parametrize(
    ("status", "error", "after"),
    [(500, Retry, None), (503, Retry, None), (429, Retry, 7.0), (400, Reject, None),
     (404, Reject, None), (301, Reject, None)],
)  # fmt: skip
def test_webhook_status_mapping(status: int, error: type[Exception], after: float | None) -> None:
    async def main() -> None:
        async with http_receiver(Receiver()) as base:
            await webhook.build("h", {"url": f"{base}/{status}"}).send(sample_alert())

    with pytest.raises(error, match=f"HTTP {status}: status {status}") as caught:
        asyncio.run(main())
    assert type(caught.value) is error
    if isinstance(caught.value, Retry):
        assert caught.value.after == after


def test_webhook_connection_refused_is_retry() -> None:
    sink = webhook.build("h", {"url": f"http://127.0.0.1:{free_port()}/hook"})
    with pytest.raises(Retry, match="cannot connect"):
        send(sink, sample_alert())


def test_webhook_timeout_is_retry() -> None:
    async def main() -> None:
        async with http_receiver(Receiver()) as base:
            await webhook.build("h", {"url": f"{base}/slow", "timeout": 0.2}).send(sample_alert())

    with pytest.raises(Retry, match=r"no answer within 0\.2 s"):
        asyncio.run(main())


def test_alertmanager_replica_outcomes_combine() -> None:
    """All replicas refusing is a Reject; any asking to come back makes it a Retry, with the
    soonest Retry-After; the reason names every replica's failure."""

    async def main() -> None:
        async with http_receiver(Receiver()) as base:
            with pytest.raises(Reject, match=r"HTTP 400.*HTTP 404"):
                await alertmanager.build("am", {"urls": [f"{base}/400", f"{base}/404"]}).send(
                    sample_alert()
                )
            with pytest.raises(Retry, match=r"HTTP 400.*HTTP 429") as caught:
                await alertmanager.build("am", {"urls": [f"{base}/400", f"{base}/429"]}).send(
                    sample_alert()
                )
            assert type(caught.value) is Retry and caught.value.after == 7
            await alertmanager.build("am", {"urls": [f"{base}/500", f"{base}/200"]}).send(
                sample_alert()
            )

    asyncio.run(main())


def test_slack_payload_and_secret_url(tmp_path: Path) -> None:
    receiver = Receiver()
    (tmp_path / "url").write_text("placeholder")
    alert = sample_alert()

    async def main() -> None:
        async with http_receiver(receiver) as base:
            (tmp_path / "url").write_text(f"{base}/200?token={SECRET}\n")
            sink = slack.build("chat", {"url_file": str(tmp_path / "url"), "channel": "#ops"})
            assert SECRET not in repr(sink)
            await sink.send(alert)
            await sink.send(sample_alert(Status.RESOLVED))
            (tmp_path / "url").write_text(f"{base}/404?token={SECRET}\n")
            with pytest.raises(Reject) as caught:
                await slack.build("chat", {"url_file": str(tmp_path / "url")}).send(alert)
            assert SECRET not in str(caught.value)

    asyncio.run(main())
    (_, firing), (_, resolved), _ = receiver.requests
    message = json.loads(firing)
    assert (
        message["text"]
        == "[FIRING] lb1: node-a became MASTER for VI_1 (vrid 51) (BACKUP -> MASTER)"
    )
    assert message["channel"] == "#ops"
    (attachment,) = message["attachments"]
    assert attachment["color"] == slack.COLOURS[alert.severity]
    fields = {f["title"]: f["value"] for f in attachment["fields"]}
    assert fields["Host"] == "node-a" and fields["Instance"] == "VI_1"
    assert fields["State"] == "BACKUP -> MASTER" and fields["Priority"] == "150"
    assert alert.annotations["wire"] in attachment["text"]
    assert json.loads(resolved)["attachments"][0]["color"] == slack.RESOLVED_COLOUR
