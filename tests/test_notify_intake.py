"""What the hook and the FIFO take in: only what keepalived can send, keepalived's arguments as
data, events in the order keepalived emitted them, and spool content that cannot be read set
aside rather than crashed on. Real hook processes, a real spool and a real HTTP receiver."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ka_exporter.alerting.alert import Source
from ka_exporter.alerting.config import Config, Damping, SinkConfig
from ka_exporter.alerting.sinks import SINK_TYPES
from ka_exporter.alerting.spool import Instance, Spool
from ka_exporter.alerting.worker import Worker
from ka_exporter.notify import intake
from ka_exporter.notify.intake import Emitted
from ka_exporter.notify.keepalived import Notification
from ka_exporter.notify.metrics import NotifyMetrics
from ka_exporter.notify.service import Feed
from tests.notify_servers import Receiver, receiver_fixture  # noqa: F401  (a fixture)

HOOK = [sys.executable, "-m", "ka_exporter.notify.cli"]
NO_DAMPING = "[damping]\nwindow = 60\nthreshold = 1000\n"  # damping has its own tests


def write_config(tmp_path: Path, url: str = "") -> Path:
    sink = f'[[sink]]\nname = "hook"\ntype = "webhook"\nurl = "{url}"\n' if url else ""
    path = tmp_path / "ka.toml"
    path.write_text(f'cluster = "lb1"\nstate_dir = "{tmp_path / "state"}"\n{NO_DAMPING}{sink}')
    return path


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HOOK, "--config", str(config), *args],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def states(spool: Spool) -> dict[str, str]:
    return {name: state for _, name, state, _ in spool.instances()}


BAD_NAMES = ["VI\r1", "VI\n1", "VI\u20281", "VI\u20291", "VI\x85", "VI\x1b[31m", "VI\u202e1", ""]


@pytest.mark.parametrize("name", BAD_NAMES, ids=ascii)
def test_hook_refuses_a_name_keepalived_cannot_send(tmp_path: Path, name: str) -> None:
    result = run(write_config(tmp_path), "INSTANCE", name, "MASTER", "100")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("ka-notify: error: ") and "name" in line
    assert not (tmp_path / "state").exists()  # never spooled


@pytest.mark.parametrize("name", BAD_NAMES, ids=ascii)
def test_fifo_refuses_a_name_keepalived_cannot_send(tmp_path: Path, name: str) -> None:
    spool = Spool.open(tmp_path)
    feed = Feed(CONFIG, spool, NotifyMetrics(spool), Worker(spool, {}))
    feed.line(f'INSTANCE "{name}" MASTER 100\n')
    assert spool.counts("events") == {("fifo", "invalid"): 1}
    assert spool.rows() == [] and spool.instances() == []


@pytest.mark.parametrize("name", ["-h", "--help", "--version", "--config=/nonexistent", "-"])
def test_keepaliveds_arguments_are_data_not_options(tmp_path: Path, name: str) -> None:
    config = write_config(tmp_path)
    result = run(config, "INSTANCE", name, "MASTER", "100")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert states(Spool.open(tmp_path / "state")) == {name: "MASTER"}


def test_options_before_keepaliveds_arguments_still_count(tmp_path: Path) -> None:
    result = run(tmp_path / "missing.toml", "--config", str(write_config(tmp_path)),
                 "INSTANCE", "-h", "FAULT", "100")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert states(Spool.open(tmp_path / "state")) == {"-h": "FAULT"}


# --- order ------------------------------------------------------------------------------------

CONFIG = Config(
    cluster="lb1",
    damping=Damping(window=60.0, threshold=1000),
    sinks=(SinkConfig("hook", "webhook", {}),),
)


def test_an_older_event_is_counted_not_made_current(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    older, newer = Emitted(100.0, "b1", 5), Emitted(100.0, "b1", 6)
    intake.record(spool, CONFIG, Notification("INSTANCE", "VI_1", "MASTER", 100), Source.NOTIFY,
                  newer, host="a")  # fmt: skip
    late = intake.record(spool, CONFIG, Notification("INSTANCE", "VI_1", "BACKUP", 100),
                         Source.NOTIFY, older, host="a")  # fmt: skip
    assert late == [] and states(spool) == {"VI_1": "MASTER"}
    assert spool.counts("events") == {("notify", "master"): 1, ("notify", "stale"): 1}
    sample = NotifyMetrics(spool).registry.get_sample_value
    assert sample("keepalived_vrrp_state", {"iname": "VI_1"}) == 2
    # after a reboot the order starts again: the wall clock decides between boots
    intake.record(spool, CONFIG, Notification("INSTANCE", "VI_1", "BACKUP", 100), Source.NOTIFY,
                  Emitted(200.0, "b2", 1), host="a")  # fmt: skip
    assert states(spool) == {"VI_1": "BACKUP"}


def test_emitted_ranks_within_and_across_boots() -> None:
    last = Instance("MASTER", 0.0, None, "b1", 10, 50.0)
    assert Emitted(0.0, "b1", 11).after(last) and not Emitted(99.0, "b1", 10).after(last)
    assert Emitted(50.0, "b2", 0).after(last) and not Emitted(49.0, "b2", 99).after(last)


def test_fifo_lines_rank_in_read_order(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    feed = Feed(CONFIG, spool, NotifyMetrics(spool), Worker(spool, {}))
    for state in ("BACKUP", "MASTER", "BACKUP", "MASTER"):
        feed.line(f'INSTANCE "VI_1" {state} 100\n')
    assert states(spool) == {"VI_1": "MASTER"}
    assert [r.summary.rsplit(" ", 1)[1] for r in spool.rows()] == [
        "BACKUP", "MASTER", "BACKUP", "MASTER"
    ]  # fmt: skip


def test_a_burst_of_concurrent_hooks_ends_on_the_newest_state(
    tmp_path: Path, receiver: Receiver
) -> None:
    """keepalived forks BACKUP then MASTER for every instance; every BACKUP hook is the slow
    one (its process was forked first, then waits), so it commits after the MASTER. Hooks that
    find the spool busy keep their event in incoming/, recorded later in its own place."""
    config = write_config(tmp_path, receiver.url)
    names = [f"VI_{n}" for n in range(12)]
    procs = []
    for name in names:
        slow = ["sh", "-c", 'sleep 0.5; exec "$@"', "sh"]
        procs.append(subprocess.Popen([*slow, *HOOK, "--config", str(config),
                                       "INSTANCE", name, "BACKUP", "100"]))  # fmt: skip
        procs.append(subprocess.Popen([*HOOK, "--config", str(config),
                                       "INSTANCE", name, "MASTER", "100"]))  # fmt: skip
    assert [p.wait(30) for p in procs] == [0] * len(procs)
    incoming = tmp_path / "state" / "incoming"
    deadline = time.time() + 30
    while (incoming.exists() and any(incoming.iterdir())) and time.time() < deadline:
        time.sleep(0.05)
    spool = Spool.open(tmp_path / "state")
    assert states(spool) == dict.fromkeys(names, "MASTER")
    sample = NotifyMetrics(spool).registry.get_sample_value
    assert {sample("keepalived_vrrp_state", {"iname": n}) for n in names} == {2}
    receiver.wait_for(len(names) + spool.counts("events").get(("notify", "backup"), 0), 30)
    last: dict[str, str] = {}
    for body in receiver.bodies:
        (alert,) = json.loads(body)["alerts"]
        labels = alert["labels"]
        assert last.get(labels["iname"]) != "MASTER", f"{labels['state']} after MASTER"
        last[labels["iname"]] = labels["state"]
    assert last == dict.fromkeys(names, "MASTER")
    counts = spool.counts("events")
    assert counts[("notify", "master")] == len(names)
    assert counts.get(("notify", "backup"), 0) + counts[("notify", "stale")] == len(names)


# --- spool content that cannot be read ---------------------------------------------------------


@pytest.fixture
def spool_with_a_bad_row(tmp_path: Path) -> Iterator[Path]:
    """Three alerts for one sink, the first one's stored body damaged."""
    spool = Spool.open(tmp_path / "state")
    for n, state in enumerate(("BACKUP", "MASTER", "FAULT")):
        note = Notification("INSTANCE", "VI_1", state, 100)
        intake.record(spool, CONFIG, note, Source.NOTIFY, Emitted(1.0 + n, "b", n), host="a")
    spool.close()
    db = sqlite3.connect(tmp_path / "state" / "spool.db")
    with db:
        db.execute("UPDATE alerts SET body = '{not json' WHERE rowid = 1")
    db.close()
    yield tmp_path / "state"


def test_a_malformed_row_is_set_aside_and_the_rest_delivered(
    spool_with_a_bad_row: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool.open(spool_with_a_bad_row)
    sink = SINK_TYPES["webhook"]("hook", {"url": receiver.url})
    asyncio.run(Worker(spool, {"hook": sink}).drain())
    assert len(receiver.unique()) == 2
    (dead,) = spool.rows(("dead",))
    assert dead.reason.startswith("malformed alert in the spool")
    (report,) = [r for r in caplog.records if "set aside" in r.getMessage()]
    assert "\n" not in report.getMessage()


def test_queue_lists_a_malformed_row(spool_with_a_bad_row: Path, tmp_path: Path) -> None:
    config = tmp_path / "ka.toml"
    config.write_text(f'cluster = "lb1"\nstate_dir = "{spool_with_a_bad_row}"\n')
    result = subprocess.run([*HOOK, "queue", "--config", str(config)],
                            capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "malformed alert in the spool" in result.stdout
    assert result.stdout.count("KeepalivedStateChange") == 2


def test_a_malformed_damper_state_is_set_aside(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert run(config, "INSTANCE", "VI_1", "BACKUP", "100").returncode == 0
    db = sqlite3.connect(tmp_path / "state" / "spool.db")
    with db:
        db.execute("UPDATE kv SET value = '{\"x\": 1}' WHERE name = 'damper'")
    db.close()
    result = run(config, "INSTANCE", "VI_1", "MASTER", "100")
    assert result.returncode == 0
    (line,) = result.stderr.splitlines()
    assert line.startswith("ka-notify: error: malformed flap damping state")
    spool = Spool.open(tmp_path / "state")
    assert states(spool) == {"VI_1": "MASTER"}
    assert spool.get_value("damper.malformed") == '{"x": 1}'
    assert run(config, "INSTANCE", "VI_1", "FAULT", "100").stderr == ""  # reported once


# --- wording ----------------------------------------------------------------------------------


def test_errors_are_one_line_with_the_programs_prefix(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.toml")
    for argv, prefix in (
        (["--config", missing, "INSTANCE", "VI_1", "MASTER", "100"], "ka-notify: error: "),
        (["queue", "--config", missing], "ka-notify queue: error: "),
    ):
        result = subprocess.run(
            [*HOOK, *argv], capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 2
        (line,) = result.stderr.splitlines()
        assert line == f"{prefix}{missing}: cannot read: No such file or directory"


def test_a_port_in_use_is_named_not_numbered(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*HOOK, "daemon", "--config", str(write_config(tmp_path)),
             "--web.listen-address", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line == f"ka-notify daemon: error: cannot listen on 127.0.0.1:{port}: " + (
        "Address already in use"
    )


def test_a_fifo_line_the_spool_cannot_take_is_kept_and_recorded_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = dataclasses.replace(CONFIG, state_dir=tmp_path)
    spool = Spool.open(tmp_path, lock_wait=0.1)
    feed = Feed(config, spool, NotifyMetrics(spool), Worker(spool, {}))
    script = (
        "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
        "c.execute('BEGIN IMMEDIATE'); print(flush=True); time.sleep(60)"
    )
    locker = subprocess.Popen([sys.executable, "-c", script, str(spool.path)],
                              stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert locker.stdout is not None and locker.stdout.readline() == b"\n"
        feed.line('INSTANCE "VI_1" FAULT 100\n')
    finally:
        locker.kill()
        locker.wait()
    (report,) = [r.getMessage() for r in caplog.records]
    assert "locked by another process; INSTANCE VI_1 FAULT 100 kept in " in report
    assert intake.ingest(spool, config) == 1
    assert states(spool) == {"VI_1": "FAULT"} and list((tmp_path / "incoming").iterdir()) == []
