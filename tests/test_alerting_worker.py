"""Delivery against a real HTTP receiver: outages, bursts, a worker killed mid-burst, the daemon.

The outage lasts KA_NOTIFY_DOWN_SECONDS (3 s by default to keep `make test` short; run with
KA_NOTIFY_DOWN_SECONDS=30 for the full scenario of the issue).
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from ka_exporter.alerting.alert import Alert, Severity, Source, Status
from ka_exporter.alerting.secret import Redactor
from ka_exporter.alerting.sink import MAX_AGE, MAX_ATTEMPTS, Reject, Retry
from ka_exporter.alerting.sinks import SINK_TYPES
from ka_exporter.alerting.spool import Backoff, Spool
from ka_exporter.alerting.worker import GRACE, Worker
from ka_exporter.notify import cli
from tests.notify_servers import Receiver, free_port, receiver_fixture  # noqa: F401  (a fixture)

DOWN_SECONDS = float(os.environ.get("KA_NOTIFY_DOWN_SECONDS", "3"))


def alert(n: int) -> Alert:
    return Alert(
        "VRRPMasterChanged", Severity.WARNING, Status.FIRING, Source.TEST, 1000.0 + n,
        1300.0 + n, labels={"vrid": str(n)}, annotations={"summary": f"change {n}"},
    )  # fmt: skip


def test_burst_while_the_sink_is_down_is_delivered_once_each(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.down_until = time.time() + DOWN_SECONDS
    spool = Spool.open(tmp_path, Backoff(base=0.1, cap=1.0))
    sink = SINK_TYPES["webhook"]("hook", {"url": receiver.url})
    worker = Worker(spool, {"hook": sink})

    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        for n in range(100):  # one transaction per event, as 100 hook runs would commit them
            spool.enqueue([(alert(n), ["hook"])], time.time())
            worker.poke()
        deadline = time.time() + DOWN_SECONDS + 30
        # the spool records a delivery a moment after the receiver has answered: stop only then
        while spool.stats().depth and time.time() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(scenario())
    assert Counter(receiver.ids) == Counter({alert(n).id: 1 for n in range(100)})
    # in order, but for the one row a failing head lets through as a probe: should the sink come
    # back between the head's failure and the probe, the probe is delivered first
    order = [alert(n).id for n in range(100)]
    assert any([i for i in receiver.ids if i != x] == [i for i in order if i != x] for x in order)
    results = spool.counts("deliveries")
    assert results[("hook", "delivered")] == 100 and results[("hook", "retried")] >= 1
    assert spool.stats().depth == 0


class FakeSink:
    timeout = 5.0
    redact = Redactor()
    max_attempts, max_age = MAX_ATTEMPTS, MAX_AGE

    def __init__(self, name: str, outcomes: list[Exception | None], resend: float | None = None):
        self.name, self.outcomes, self.resend_interval = name, outcomes, resend
        self.sent: list[str] = []

    async def send(self, alert: Alert) -> None:
        outcome = self.outcomes.pop(0) if self.outcomes else None
        self.sent.append(alert.id)
        if outcome is not None:
            raise outcome


def test_reject_dead_letters_and_other_sinks_go_on(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path, Backoff(base=0.01, cap=0.02))
    bad = FakeSink("bad", [Reject("400 nope"), Retry("503", 0.01), Retry("503", 0.01)])
    good = FakeSink("good", [])
    spool.enqueue([(alert(n), ["bad", "good"]) for n in range(3)], time.time())
    asyncio.run(Worker(spool, {"bad": bad, "good": good}).drain(linger=1.0))
    assert good.sent == [alert(n).id for n in range(3)]
    # alert 1 fails, so alert 2 (another VRID) is tried: it fails too, the sink is down, and
    # its order holds: alert 1 first again
    assert bad.sent == [alert(0).id, alert(1).id, alert(2).id, alert(1).id, alert(2).id]
    (dead,) = spool.rows(("dead",))
    assert (dead.sink, dead.reason) == ("bad", "400 nope")
    assert spool.stats().depth == 0


def test_any_exception_of_a_sink_is_a_dead_letter_and_blocks_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A sink that raises what is neither Retry nor Reject (a header it cannot build, a bug)
    would fail the same way on every try: the row is a dead letter with the exception as its
    reason, logged once with its traceback, and the rows behind it go out."""
    spool = Spool.open(tmp_path)
    poison = ValueError("Header values may not contain linefeed or carriage return characters")
    sink = FakeSink("mail", [poison, KeyError("iname")])
    spool.enqueue([(alert(n), ["mail"]) for n in range(4)], time.time())
    asyncio.run(Worker(spool, {"mail": sink}).drain(linger=1.0))
    assert sink.sent == [alert(n).id for n in range(4)]  # each once, in order
    reasons = [(r.alert_id, r.reason) for r in spool.rows(("dead",))]
    assert reasons == [
        (alert(0).id, f"ValueError: {poison}"),
        (alert(1).id, "KeyError: 'iname'"),
    ]
    assert spool.stats().depth == 0
    assert spool.counts("deliveries") == {("mail", "rejected"): 2, ("mail", "delivered"): 2}
    assert "Traceback" in caplog.text and f"alert={alert(0).id} cannot be sent" in caplog.text


class HangingSink(FakeSink):
    """Ignores its own timeout."""

    async def send(self, alert: Alert) -> None:
        self.sent.append(alert.id)
        await asyncio.Event().wait()


def test_a_sink_overrunning_its_timeout_is_cut_and_retried(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    sink = HangingSink("stuck", [])
    sink.timeout = 0.2
    spool.enqueue([(alert(0), ["stuck"])], time.time())
    start = time.time()
    asyncio.run(Worker(spool, {"stuck": sink}).drain())
    assert time.time() - start < 0.2 + GRACE + 0.5
    (row,) = spool.rows()
    assert (row.state, row.attempts, row.reason) == (
        "pending",
        1,
        "not done within its 0.2 s timeout",
    )


def test_a_receiver_slower_than_the_timeout_is_a_logged_retry_with_backoff(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """The sink's `timeout` bounds the attempt: a receiver that answers later is retried (and
    says so in the log and the spool), later, not at once."""
    spool = Spool.open(tmp_path, Backoff(base=1.0, cap=1.0))
    sink = SINK_TYPES["webhook"]("hook", {"url": receiver.url, "timeout": 0.3})
    receiver.delay = 1.0
    spool.enqueue([(alert(0), ["hook"])], time.time())
    start = time.time()
    asyncio.run(Worker(spool, {"hook": sink}).drain())
    assert time.time() - start < 0.9  # cut at the timeout, not when the receiver answers
    (row,) = spool.rows()
    assert row.attempts == 1 and "no answer within 0.3 s" in row.reason
    assert row.due >= start + 0.3  # backoff: due again later, not at once
    assert f"sink=hook alert={alert(0).id} retry in" in caplog.text
    assert "no answer within 0.3 s" in caplog.text


def test_with_no_sink_the_daemon_worker_keeps_running(tmp_path: Path) -> None:
    """A daemon configured only to read the FIFO must not exit (nor be restarted in a loop)."""

    async def scenario() -> bool:
        task = asyncio.create_task(Worker(Spool.open(tmp_path), {}).run())
        await asyncio.sleep(0.3)
        running = not task.done()
        task.cancel()
        return running

    assert asyncio.run(scenario())


def test_firing_alerts_are_resent_until_replaced(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    now = [0.0]
    sink = FakeSink("am", [], resend=60.0)
    fault = Alert("F", Severity.CRITICAL, Status.FIRING, Source.TEST, 0.0, labels={"a": "1"})
    spool.enqueue([(fault, ["am"])], 0.0)
    worker = Worker(spool, {"am": sink}, clock=lambda: now[0])
    asyncio.run(worker.drain())
    now[0] = 61.0
    asyncio.run(worker.drain())
    assert sink.sent == [fault.id, fault.id]
    resolved = Alert(
        "F", Severity.CRITICAL, Status.RESOLVED, Source.TEST, 0.0, 70.0, labels={"a": "1"}
    )
    spool.enqueue([(resolved, ["am"])], 70.0)
    now[0] = 200.0
    asyncio.run(worker.drain())
    assert sink.sent == [fault.id, fault.id, resolved.id]


# --- the daemon, as a process -------------------------------------------------------------------


def write_config(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "ka.toml"
    path.write_text(
        f'cluster = "lb1"\nstate_dir = "{tmp_path / "state"}"\n{extra}\n'
        f'[[sink]]\nname = "hook"\ntype = "webhook"\nurl = "{url}"\n'
    )
    return path


def daemon(config: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "ka_exporter.notify.cli", "daemon", "--config", str(config),
           "--web.listen-address", f"127.0.0.1:{port}", *extra]  # fmt: skip
    return subprocess.Popen(cmd, stderr=subprocess.PIPE)


def test_kill_9_mid_burst_then_restart_delivers_everything(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.delay = 0.02
    config = write_config(tmp_path, receiver.url)
    spool = Spool.open(tmp_path / "state")
    spool.enqueue([(alert(n), ["hook"]) for n in range(100)], time.time())
    port = free_port()
    first = daemon(config, port)
    try:
        receiver.wait_for(30, 20)
        first.send_signal(signal.SIGKILL)
        first.wait(5)
    finally:
        first.kill()
    assert 30 <= len(receiver.unique()) < 100
    assert spool.stats().depth > 0
    second = daemon(config, port)
    try:
        receiver.wait_for(100, 30)
        # the last answer is in; its delivery is recorded a moment later, not before
        deadline = time.monotonic() + 5
        while spool.stats().depth and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(5) == 0
    assert receiver.unique() == {alert(n).id for n in range(100)}
    assert len(receiver.ids) - 100 <= 1  # at most the one in flight at the kill, same id
    assert spool.stats().depth == 0


def test_test_command_reports_the_result(
    tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, receiver.url)
    assert cli.main(["test", "--config", str(config), "--sink", "hook"]) == 0
    assert capsys.readouterr().out == "hook: delivered\n"
    assert len(receiver.unique()) == 1
    receiver.down_until = time.time() + 60
    assert cli.main(["test", "--config", str(config), "--sink", "hook"]) == 1
    assert capsys.readouterr().out.startswith("hook: retried: ")


def test_drain_command_delivers_and_leaves(tmp_path: Path, receiver: Receiver) -> None:
    config = write_config(tmp_path, receiver.url)
    spool = Spool.open(tmp_path / "state")
    spool.enqueue([(alert(n), ["hook"]) for n in range(3)], time.time())
    assert cli.main(["drain", "--config", str(config)]) == 0
    assert receiver.ids == [alert(n).id for n in range(3)]
    assert spool.stats().depth == 0


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_daemon_reads_the_fifo_damps_flaps_and_exports_metrics(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = write_config(tmp_path, receiver.url, "[damping]\nwindow = 1.5\nthreshold = 2\n")
    fifo, port = tmp_path / "notify.fifo", free_port()
    proc = daemon(config, port, "--keepalived.notify-fifo", str(fifo))
    try:
        deadline = time.time() + 10
        while not fifo.exists() and time.time() < deadline:
            time.sleep(0.02)
        for restart in range(2):  # keepalived closes the FIFO when it restarts
            with open(fifo, "w") as writer:
                if restart == 0:
                    writer.write('INSTANCE "VI_1" BACKUP 100\njunk line\n')
                else:
                    for i in range(20):
                        state = "MASTER" if i % 2 == 0 else "BACKUP"
                        writer.write(f'INSTANCE "VI_2" {state} 100\n')
                    writer.write('INSTANCE "VI_1" MASTER 100\nINSTANCE "VI_1" MASTER_PRIORITY 90\n')
        receiver.wait_for(6, 10)  # VI_1 BACKUP, MASTER, priority; VI_2's first two, its digest
        metrics = scrape(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    bodies = [b.decode() for b in receiver.bodies]
    assert len(bodies) == 6
    assert sum('"iname":"VI_2"' in b for b in bodies) == 3
    (digest,) = [b for b in bodies if "KeepalivedFlapping" in b]
    assert "18 state changes held back" in digest
    assert 'keepalived_vrrp_state{iname="VI_1"} 2.0' in metrics
    assert 'keepalived_vrrp_priority{iname="VI_1"} 90.0' in metrics
    assert 'keepalived_vrrp_transitions_total{iname="VI_2"} 20.0' in metrics
    assert 'ka_notify_events_total{source="fifo",type="invalid"} 1.0' in metrics
    assert 'ka_notify_deliveries_total{result="delivered",sink="hook"}' in metrics
    assert "ka_notify_queue_depth" in metrics and "ka_notify_dead_letters 0.0" in metrics
