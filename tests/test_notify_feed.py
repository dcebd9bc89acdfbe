from pathlib import Path

import pytest

from ka_exporter.alerting.alert import Source
from ka_exporter.alerting.config import Config, Damping, SinkConfig
from ka_exporter.alerting.spool import Spool
from ka_exporter.alerting.worker import Worker
from ka_exporter.notify import intake
from ka_exporter.notify.fifo import FifoError, ensure_fifo
from ka_exporter.notify.intake import Emitted
from ka_exporter.notify.keepalived import Notification
from ka_exporter.notify.metrics import NotifyMetrics
from ka_exporter.notify.service import Feed

CONFIG = Config(
    cluster="lb1",
    damping=Damping(window=60.0, threshold=1),
    sinks=(SinkConfig("hook", "webhook", {}),),
)


def at(when: float) -> Emitted:
    """An event emitted at `when`, ranked by it."""
    return Emitted(when, "boot", int(when * 1e9))


def summaries(spool: Spool) -> list[str]:
    return [f"{r.status} {r.summary}" for r in spool.rows(("pending",))]


def test_flaps_are_held_back_across_processes_but_leaving_fault_is_not(tmp_path: Path) -> None:
    for n, state in enumerate(("MASTER", "BACKUP", "MASTER", "FAULT", "BACKUP", "MASTER")):
        spool = Spool.open(tmp_path)  # every hook run is a process of its own
        note = Notification("INSTANCE", "VI_1", state, 100)
        intake.record(spool, CONFIG, note, Source.NOTIFY, at(1000.0 + n), host="a")
        spool.close()
    spool = Spool.open(tmp_path)
    assert summaries(spool) == [
        "firing instance VI_1 on a is MASTER",
        "firing instance VI_1 on a is FAULT",
        "firing instance VI_1 on a is BACKUP",
        "resolved instance VI_1 on a left FAULT",
    ]
    assert intake.flush(spool, CONFIG, 1059.0, Source.NOTIFY, host="a") == ([], 1060.0)
    (digest,), due = intake.flush(spool, CONFIG, 1060.0, Source.NOTIFY, host="a")
    assert due is None and digest.name == "KeepalivedFlapping"
    assert digest.annotations["description"] == (
        "3 state changes held back in 60s, first BACKUP, last MASTER"
    )
    assert summaries(spool)[-1] == "firing instance VI_1 on a flapped: 3 more changes"


def test_fifo_feed_records_and_counts_junk(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    metrics = NotifyMetrics(spool)
    feed = Feed(CONFIG, spool, metrics, Worker(spool, {}))
    feed.line("\x00garbage\n")
    feed.line('INSTANCE "VI_1" FAULT 100\n')
    assert spool.counts("events") == {("fifo", "invalid"): 1, ("fifo", "fault"): 1}
    assert metrics.registry.get_sample_value("keepalived_vrrp_state", {"iname": "VI_1"}) == 3
    labels = {"source": "fifo", "type": "invalid"}
    assert metrics.registry.get_sample_value("ka_notify_events_total", labels) == 1
    (row,) = spool.rows()
    assert row.name == "KeepalivedStateChange" and "FAULT" in row.summary


def test_fifo_path_must_be_a_fifo(tmp_path: Path) -> None:
    ensure_fifo(tmp_path / "new.fifo")
    assert (tmp_path / "new.fifo").is_fifo()
    ensure_fifo(tmp_path / "new.fifo")  # an existing FIFO is fine
    (tmp_path / "file").write_text("")
    with pytest.raises(FifoError, match="not a FIFO"):
        ensure_fifo(tmp_path / "file")


def test_keepalived_metrics_from_every_process(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    notes = [
        Notification("INSTANCE", "VI_1", "BACKUP", 100),
        Notification("INSTANCE", "VI_1", "MASTER", 100),
        Notification("INSTANCE", "VI_1", "MASTER_PRIORITY", 140),
        Notification("INSTANCE", "VI_2", "MASTER", None),  # notify_master: no priority
        Notification("INSTANCE", "VI_3", "BACKUP", 90),
        Notification("INSTANCE", "VI_3", "STOP", 90),
        Notification("GROUP", "G", "MASTER", 0),
    ]
    for n, note in enumerate(notes):
        intake.record(spool, CONFIG, note, Source.NOTIFY, at(float(n)), host="a")
    sample = NotifyMetrics(spool).registry.get_sample_value
    assert sample("keepalived_vrrp_state", {"iname": "VI_1"}) == 2
    assert sample("keepalived_vrrp_priority", {"iname": "VI_1"}) == 140
    assert sample("keepalived_vrrp_transitions_total", {"iname": "VI_1"}) == 2
    assert sample("keepalived_vrrp_state", {"iname": "VI_2"}) == 2
    assert sample("keepalived_vrrp_priority", {"iname": "VI_2"}) is None
    assert sample("keepalived_vrrp_state", {"iname": "VI_3"}) is None  # stopped
    assert sample("keepalived_vrrp_state", {"iname": "G"}) is None  # groups are not instances
    assert sample("ka_notify_events_total", {"source": "notify", "type": "master"}) == 3
