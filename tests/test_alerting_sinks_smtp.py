"""The SMTP sink against aiosmtpd with STARTTLS or implicit TLS and required AUTH."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from email.message import EmailMessage
from pathlib import Path

import pytest

from ka_exporter.alerting.alert import Alert, Source
from ka_exporter.alerting.config import Config, SinkConfig
from ka_exporter.alerting.routing import sinks_for
from ka_exporter.alerting.sink import Reject, Retry, Sink
from ka_exporter.alerting.sinks import smtp, webhook
from ka_exporter.alerting.sinks.payload import rfc3339
from ka_exporter.alerting.spool import Backoff, Spool
from ka_exporter.alerting.worker import Worker
from ka_exporter.notify import keepalived
from tests.notify_servers import Pki, Receiver, make_pki, sample_alert, smtp_server

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
    assert subject(message) == (
        "[keepalived] [FIRING] lb1: node-a became MASTER for VI_1 (vrid 51) (BACKUP -> MASTER)"
    )
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


def keepalived_alerts(
    state: str, previous: str | None = None, name: str = "VI_1", cluster: str = "lb1"
) -> list[Alert]:
    """What the hook and the FIFO make of a state keepalived reports."""
    before = None if previous is None else keepalived.Previous(previous, time.time() - 60)
    note = keepalived.Notification("INSTANCE", name, state, 150)
    return keepalived.to_alerts(
        note, host="node-a", cluster=cluster, now=time.time(), source=Source.FIFO, previous=before
    )


def deliver_all(spool: Spool, sinks: Mapping[str, Sink]) -> None:
    asyncio.run(Worker(spool, sinks).drain(linger=2.0))


def subject(message: EmailMessage) -> str:
    """Unfolded: Python's email folds a subject that fits a line of its own before it, and
    the parser keeps that fold's space."""
    return str(message["Subject"]).strip()


@pytest.mark.parametrize("name", ["VI_1\r\nBcc: victim@example.com", "VI_1\u2028injected"])
def test_a_name_no_header_can_hold_is_delivered_and_holds_nothing_back(
    pki: Pki, password_file: Path, tmp_path: Path, name: str
) -> None:
    """CR, LF or U+2028 in an instance name made building the Subject raise ValueError, which
    was retried for ever while every later alert to the sink waited behind it. The subject
    now holds the name on one line, and nothing waits."""
    spool = Spool.open(tmp_path / "state")
    poison = keepalived_alerts("FAULT", name=name)
    later = [*keepalived_alerts("MASTER", "BACKUP"), *keepalived_alerts("BACKUP", "MASTER")]
    spool.enqueue([(a, ["mail"]) for a in [*poison, *later]], time.time())
    with smtp_server(pki, implicit=False, user=USER, password=PASSWORD) as (port, mailbox):
        deliver_all(spool, {"mail": sink(port, pki, password_file)})
    subjects = [subject(message) for _, message in mailbox.messages]
    flat = " ".join(name.split())
    assert subjects == [
        f"[keepalived] [FIRING] lb1: instance {flat} on node-a is FAULT",  # no previous state
        "[keepalived] lb1: instance VI_1 on node-a is MASTER (BACKUP -> MASTER)",
        "[keepalived] lb1: instance VI_1 on node-a is BACKUP (MASTER -> BACKUP)",
    ]
    assert all("Bcc" not in message for _, message in mailbox.messages)
    assert all(sorted(r) == ["oncall@example.net", "ops@example.org"] for r, _ in mailbox.messages)
    assert spool.stats().depth == 0 and spool.stats().dead == 0


def test_the_timeout_bounds_the_whole_attempt(
    pki: Pki, password_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """aiosmtplib's timeout is per command: a server slow at each step (each answer within
    it) took as long as it liked. The sink's `timeout` is the bound of the whole attempt;
    past it the attempt is a retry, logged, with backoff; once the server is quick it is
    delivered, once."""
    spool = Spool.open(tmp_path / "state", Backoff(base=0.2, cap=0.2))
    (alert,) = keepalived_alerts("FAULT")
    spool.enqueue([(alert, ["mail"])], time.time())
    with smtp_server(pki, implicit=False, user=USER, password=PASSWORD) as (port, mailbox):
        mailbox.delay = 0.5  # EHLO, EHLO after STARTTLS, DATA: 1.5 s in all
        mail = sink(port, pki, password_file, timeout=0.6)
        start = time.time()
        asyncio.run(Worker(spool, {"mail": mail}).drain())
        took = time.time() - start
        (row,) = spool.rows()
        assert took < 1.2 and row.attempts == 1 and mailbox.messages == []
        assert row.reason == f"SMTP server 127.0.0.1:{port}: no answer within 0.6 s"
        assert f"sink=mail alert={alert.id} retry in" in caplog.text
        mailbox.delay = 0.0
        time.sleep(max(0.0, row.due - time.time()))
        asyncio.run(Worker(spool, {"mail": mail}).drain())
    assert [m["Message-ID"] for _, m in mailbox.messages] == [f"<{alert.id}@example.org>"]
    assert spool.stats().depth == 0


KEEPALIVED_CONF = """\
vrrp_sync_group G1 {
    group {
        VI_1
    }
}
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        192.0.2.101/24 dev eth0
        198.51.100.10/32   # the service
    }
    virtual_ipaddress_excluded {
        2001:db8::101/64
    }
}
"""


def test_mail_names_the_vips_cluster_and_state_and_fires_only_for_problems(
    pki: Pki, password_file: Path, tmp_path: Path
) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_text(KEEPALIVED_CONF)
    spool = Spool.open(tmp_path / "state")
    changes = [
        *keepalived_alerts("MASTER", "BACKUP"),  # routine
        *keepalived_alerts("FAULT", "MASTER"),  # a problem
    ]
    spool.enqueue([(a, ["mail"]) for a in changes], time.time())
    with smtp_server(pki, implicit=False, user=USER, password=PASSWORD) as (port, mailbox):
        deliver_all(spool, {"mail": sink(port, pki, password_file, keepalived_config=str(conf))})
    (_, routine), (_, fault) = mailbox.messages
    assert subject(routine) == (
        "[keepalived] lb1: instance VI_1 on node-a is MASTER (BACKUP -> MASTER)"
    )
    assert subject(fault) == (
        "[keepalived] [FIRING] lb1: instance VI_1 on node-a is FAULT (MASTER -> FAULT)"
    )
    for message in (routine, fault):
        plain, html = message.get_body(("plain",)), message.get_body(("html",))
        assert plain is not None and html is not None
        vips = "192.0.2.101/24, 198.51.100.10/32, 2001:db8::101/64"
        assert f"VIPs:     {vips}" in plain.get_content(), plain.get_content()
        assert f"<th align='left'>VIPs</th><td>{vips}</td>" in html.get_content()


def test_leaving_fault_is_one_mail_and_every_alert_to_machines(
    pki: Pki, password_file: Path, tmp_path: Path
) -> None:
    """Leaving FAULT gives two alerts: the FAULT resolved, and the new state. A mail each was
    two mails for one change; mail gets the resolution (which says FAULT -> BACKUP), a
    webhook both."""
    receiver = Receiver()
    spool = Spool.open(tmp_path / "state")
    with smtp_server(pki, implicit=False, user=USER, password=PASSWORD) as (port, mailbox):
        sinks: dict[str, Sink] = {
            "mail": sink(port, pki, password_file),
            "hook": webhook.build("hook", {"url": receiver.url}),
        }
        config = Config(
            "lb1", sinks=(SinkConfig("mail", "smtp", {}), SinkConfig("hook", "webhook", {}))
        )
        for state, previous in (("FAULT", "BACKUP"), ("BACKUP", "FAULT")):
            alerts = keepalived_alerts(state, previous)
            spool.enqueue([(a, sinks_for(a, config)) for a in alerts], time.time())
        deliver_all(spool, sinks)
    receiver.close()
    subjects = [subject(message) for _, message in mailbox.messages]
    assert subjects == [
        "[keepalived] [FIRING] lb1: instance VI_1 on node-a is FAULT (BACKUP -> FAULT)",
        "[keepalived] [RESOLVED] lb1: instance VI_1 on node-a left FAULT",
    ]
    assert len(receiver.ids) == 3
