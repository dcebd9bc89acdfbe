"""The SMTP sink against aiosmtpd with STARTTLS or implicit TLS and required AUTH."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from ka_exporter.notify.alert import Alert
from ka_exporter.notify.sink import Reject, Retry
from ka_exporter.notify.sinks import smtp
from ka_exporter.notify.sinks.payload import rfc3339
from tests.notify_servers import Pki, make_pki, sample_alert, smtp_server

USER, PASSWORD = "alerts", "correct-horse-battery"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def password_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    yield path


def sink(port: int, pki: Pki | None, password_file: Path, **options: object) -> smtp.SmtpSink:
    return smtp.build(
        "mail",
        {
            "host": "127.0.0.1",
            "port": port,
            "username": USER,
            "password_file": str(password_file),
            "from": "keepalived <ka@example.org>",
            "to": ["ops@example.org", "oncall@example.net"],
            **({} if pki is None else {"ca_file": str(pki.ca)}),
            "timeout": 5,
            **options,
        },
    )


def check_delivered(alert: Alert, recipients: list[str], message: EmailMessage) -> None:
    assert sorted(recipients) == ["oncall@example.net", "ops@example.org"]
    assert message["From"] == "keepalived <ka@example.org>"
    assert message["To"] == "ops@example.org, oncall@example.net"
    assert message["Subject"] == "[keepalived] [FIRING] node-a became MASTER for VI_1 (vrid 51)"
    assert message["Message-ID"] == f"<{alert.id}@example.org>"
    assert message["X-Alert-Fingerprint"] == alert.fingerprint
    assert message["Date"]
    assert message.get_content_type() == "multipart/alternative"
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and html is not None
    bodies = {"text/plain": plain.get_content(), "text/html": html.get_content()}
    facts = ["node-a", "VI_1", "BACKUP -> MASTER", "150", rfc3339(alert.starts_at),
             alert.annotations["wire"]]  # fmt: skip
    assert all(fact in bodies["text/plain"] for fact in facts), bodies["text/plain"]
    html_facts = [fact.replace(">", "&gt;") for fact in facts]
    assert all(fact in bodies["text/html"] for fact in html_facts), bodies["text/html"]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # it is implicit TLS
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_mail_delivered_over_tls_with_auth(pki: Pki, password_file: Path, implicit: bool) -> None:
    alert = sample_alert()
    with smtp_server(pki, implicit=implicit, user=USER, password=PASSWORD) as (port, mailbox):
        tls = "implicit" if implicit else "starttls"
        asyncio.run(sink(port, pki, password_file, tls=tls).send(alert))
    ((recipients, message),) = mailbox.messages
    check_delivered(alert, recipients, message)


def test_wrong_password_is_reject_without_password(pki: Pki, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    with (
        smtp_server(pki, implicit=False, user=USER, password=PASSWORD) as (port, mailbox),
        pytest.raises(Reject, match=f"login as '{USER}' refused: 535") as caught,
    ):
        asyncio.run(sink(port, pki, wrong).send(sample_alert()))
    assert "not-the-password" not in str(caught.value)
    assert "not-the-password" not in repr(sink(1, pki, wrong))
    assert "not-the-password" not in repr(caught.value)
    assert mailbox.messages == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_untrusted_certificate_is_retry_and_not_delivered(
    pki: Pki, password_file: Path, implicit: bool
) -> None:
    """Without ca_file the system CAs do not know the test CA: nothing is sent, not even AUTH.

    Retry rather than Reject: an untrusted certificate is usually a botched renewal on the
    server, and the alert should still arrive once it is fixed."""
    tls = "implicit" if implicit else "starttls"
    with (
        smtp_server(pki, implicit=implicit, user=USER, password=PASSWORD) as (port, mailbox),
        pytest.raises(Retry, match="TLS certificate not trusted") as caught,
    ):
        asyncio.run(sink(port, None, password_file, tls=tls).send(sample_alert()))
    assert PASSWORD not in str(caught.value)
    assert mailbox.messages == []
