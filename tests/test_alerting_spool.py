import dataclasses
import http.server
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ka_exporter.alerting.alert import Alert, Severity, Source, Status
from ka_exporter.alerting.spool import Backoff, Spool, SpoolError
from tests.notify_servers import Receiver, receiver_fixture  # noqa: F401  (a fixture)


def alert(n: int, status: Status = Status.FIRING, ends: float | None = None) -> Alert:
    return Alert(
        "VRRPSplitBrain", Severity.CRITICAL, status, Source.TEST, float(n), ends,
        labels={"vrid": str(n)}, annotations={"summary": f"alert {n}"},
    )  # fmt: skip


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool.open(tmp_path / "state", Backoff(base=1.0, cap=8.0))


def test_enqueue_is_idempotent_per_alert_and_sink(spool: Spool) -> None:
    spool.enqueue([(alert(1), ["a", "b"])], 10.0)
    spool.enqueue([(alert(1), ["a", "b"])], 11.0)
    assert spool.stats(12.0).depth == 2
    assert {(r.sink, r.alert_id) for r in spool.rows()} == {
        ("a", alert(1).id), ("b", alert(1).id)
    }  # fmt: skip


def test_wal_and_durable_commit(spool: Spool) -> None:
    assert spool.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with spool.transaction(durable=True):
        assert spool.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_one_sink_in_order_head_of_line(spool: Spool) -> None:
    spool.enqueue([(alert(1), ["a"]), (alert(2), ["a"]), (alert(3), ["b"])], 0.0)
    first = spool.claim("a", 0.0)
    assert first is not None and first.alert == alert(1)
    assert spool.claim("a", 0.0) is None  # leased
    delay = spool.retry(first, 0.0, "503", after=5.0)
    assert delay >= 5.0
    assert spool.claim("a", 1.0) is None  # alert 2 waits behind alert 1
    other = spool.claim("b", 1.0)
    assert other is not None and other.alert == alert(3)
    again = spool.claim("a", delay)
    assert again is not None and again.alert == alert(1) and again.attempts == 1
    spool.delivered(again, delay, None)
    second = spool.claim("a", delay)
    assert second is not None and second.alert == alert(2)


def test_backoff_full_jitter_capped() -> None:
    rng = random.Random(1)
    backoff = Backoff(base=1.0, cap=300.0)
    delays = [backoff.delay(n, None, rng) for n in range(20) for _ in range(50)]
    assert min(delays) >= 0 and max(delays) <= 300.0
    assert max(backoff.delay(1, None, rng) for _ in range(100)) <= 2.0
    assert backoff.delay(0, 120.0, rng) >= 120.0  # Retry-After wins over a shorter jitter


def test_dead_letters_and_stats(spool: Spool) -> None:
    spool.enqueue([(alert(1), ["a"]), (alert(2), ["a"])], 100.0)
    d = spool.claim("a", 100.0)
    assert d is not None
    spool.dead(d, 101.0, "400 Bad Request")
    stats = spool.stats(130.0)
    assert (stats.depth, stats.oldest_age, stats.dead) == (1, 30.0, 1)
    (dead,) = spool.rows(("dead",))
    assert (dead.alert_id, dead.reason) == (alert(1).id, "400 Bad Request")


def test_leases_of_a_dead_worker_are_released(spool: Spool) -> None:
    spool.enqueue([(alert(1), ["a"])], 0.0)
    assert spool.claim("a", 0.0) is not None
    assert spool.claim("a", 1.0) is None
    spool.release_leases()
    assert spool.claim("a", 1.0) is not None


def test_resend_until_replaced(spool: Spool) -> None:
    spool.enqueue([(alert(1), ["am"])], 0.0)
    d = spool.claim("am", 0.0)
    assert d is not None
    spool.delivered(d, 0.0, resend_interval=60.0)
    assert spool.resends_due("am", 59.0) == []
    assert [r.alert for r in spool.resends_due("am", 60.0)] == [alert(1)]
    resolved = dataclasses.replace(alert(1), status=Status.RESOLVED, ends_at=50.0)
    spool.enqueue([(resolved, ["am"])], 50.0)
    assert spool.resends_due("am", 60.0) == []


def test_disk_full_is_an_error_not_a_drop(spool: Spool) -> None:
    spool.conn.execute("PRAGMA max_page_count = 1")  # the database cannot grow any further
    big = Alert("X", Severity.INFO, Status.FIRING, Source.TEST, 0.0, annotations={"d": "x" * 65536})
    with pytest.raises(SpoolError, match="full"):
        spool.enqueue([(big, ["a"])], 0.0)


def test_unwritable_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(SpoolError, match="cannot create spool directory"):
        Spool.open(tmp_path / "file" / "state")


# --- the hook's exit status when the spool cannot take the alert -----------------------------

CONFIG = """\
cluster = "lb1"
state_dir = "{state}"

[[sink]]
name = "hook"
type = "webhook"
url = "{url}"
secret_file = "{secret}"
"""


def write_config(tmp_path: Path, state: Path, url: str = "http://127.0.0.1:9/") -> Path:
    secret = tmp_path / "token"
    secret.write_text("s3cr3t-TOKEN-value\n")
    path = tmp_path / "ka.toml"
    path.write_text(CONFIG.format(state=state, secret=secret, url=url))
    return path


class Rejecting(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(400, "Bad Request")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def rejecting() -> Iterator[str]:
    """A receiver that refuses everything: the hook's worker dead-letters at once and leaves."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Rejecting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def hook(
    config: Path, *prefix: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [*prefix, sys.executable, "-m", "ka_exporter.notify.cli", "--config", str(config),
           "INSTANCE", "VI_1", "MASTER", "100"]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False,
                          env={**os.environ, **(env or {})})  # fmt: skip


needs_unshare = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare for a private mount namespace",
)


def in_private_mounts(script: str) -> list[str]:
    """Mounts made here live in a mount namespace of their own: the host never sees them."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-ec", script, "sh"]


class Syslog:
    """A syslog socket of the test's own, which a hook sees as /dev/log: `setup` gives it a
    /dev of its own (a tmpfs in its private mount namespace) holding null, urandom and log."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ka-log-"))  # short: a socket path is <108
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.dir / "log"))
        self.sock.settimeout(5)
        self.setup = (
            "mount -t tmpfs tmpfs /dev; mknod /dev/null c 1 3; mknod /dev/urandom c 1 9; "
            f"ln -s {self.dir / 'log'} /dev/log; "
        )

    def line(self) -> str:
        return self.sock.recv(4096).decode()

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir)


@pytest.fixture
def syslog() -> Iterator[Syslog]:
    log = Syslog()
    yield log
    log.close()


def drain(config: Path) -> None:
    subprocess.run([sys.executable, "-m", "ka_exporter.notify.cli", "drain", "--config",
                    str(config)], capture_output=True, timeout=60, check=True)  # fmt: skip


@needs_unshare
def test_a_locked_spool_keeps_the_event_within_keepaliveds_patience(
    tmp_path: Path, syslog: Syslog, receiver: Receiver
) -> None:
    """keepalived kills a STOP hook after about 1 s: a spool held by another process costs the
    hook a quarter of a second, then the event goes to state_dir/incoming, on disk. (Measured
    against the same hook on a free spool, so a loaded machine's slow start does not count.)"""
    state = tmp_path / "state"
    Spool.open(state).close()
    config = write_config(tmp_path, state, receiver.url)
    free = tmp_path / "free.toml"  # no sink: nothing left running after it
    free.write_text(f'cluster = "lb1"\nstate_dir = "{tmp_path / "free"}"\n')
    start = time.monotonic()
    hook(free, *in_private_mounts(syslog.setup + 'exec "$@"'))
    baseline = time.monotonic() - start
    locker = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], "
         "isolation_level=None); c.execute('BEGIN IMMEDIATE'); print(flush=True); time.sleep(60)",
         str(state / "spool.db")], stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert locker.stdout is not None and locker.stdout.readline() == b"\n"
        start = time.monotonic()
        result = hook(config, *in_private_mounts(syslog.setup + 'exec "$@"'))
        elapsed = time.monotonic() - start
    finally:
        locker.kill()
        locker.wait()
    assert elapsed - baseline < 0.7, (elapsed, baseline)
    assert result.returncode == 0, result.stderr  # kept on state_dir's disk: as safe
    (line,) = result.stderr.splitlines()
    assert line.startswith("ka-notify: warning: ") and "locked by another process" in line
    assert "INSTANCE VI_1 MASTER 100 kept in " + str(state / "incoming") in line
    logged = syslog.line()
    assert logged.startswith("<28>ka-notify[") and logged.endswith(line.removeprefix("ka-notify"))
    drain(config)  # what the hook's own worker would do once the spool is free
    assert list((state / "incoming").iterdir()) == []
    assert [r.summary for r in Spool.open(state).rows(("delivered",))] == [
        f"instance VI_1 on {os.uname().nodename} is MASTER"
    ]
    assert len(receiver.unique()) == 1


@needs_unshare
def test_a_full_disk_says_so_and_keeps_the_event_in_the_runtime_directory(
    tmp_path: Path, syslog: Syslog, receiver: Receiver
) -> None:
    state, run = tmp_path / "state", tmp_path / "run"
    state.mkdir()
    run.mkdir()
    config = write_config(tmp_path, state, receiver.url)
    fill = f"dd if=/dev/zero of={state}/fill bs=4k 2>/dev/null || true"
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {state}; "
        f'"$@"; {fill}; {syslog.setup}exec "$@"'  # the spool exists; its next commit fails
    )
    result = hook(config, *in_private_mounts(script), env={"KA_NOTIFY_RUNTIME_DIR": str(run)})
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("ka-notify: error: ") and ": disk full; INSTANCE VI_1 MASTER" in line
    assert "rollback" not in line and f"kept in {run / 'incoming'}" in line
    assert syslog.line().startswith("<27>ka-notify[")
    (kept,) = (run / "incoming").iterdir()
    assert kept.stat().st_mode & 0o777 == 0o600
    subprocess.run(
        [sys.executable, "-m", "ka_exporter.notify.cli", "drain", "--config", str(config)],
        env={**os.environ, "KA_NOTIFY_RUNTIME_DIR": str(run)}, timeout=60, check=True,
    )  # fmt: skip
    assert list((run / "incoming").iterdir()) == []
    assert len(receiver.unique()) == 1


@needs_unshare
def test_a_corrupt_spool_is_reported_and_the_event_kept(tmp_path: Path, syslog: Syslog) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "spool.db").write_bytes(b"this is not an SQLite database, " * 128)
    config = write_config(tmp_path, state)
    result = hook(config, *in_private_mounts(syslog.setup + 'exec "$@"'))
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("ka-notify: error: ") and "corrupt" in line
    assert f"kept in {state / 'incoming'}" in line
    assert "corrupt" in syslog.line()


@needs_unshare
@pytest.mark.parametrize("existing", [False, True])
def test_read_only_spool_fails_the_hook(tmp_path: Path, existing: bool) -> None:
    state = tmp_path / "state"
    state.mkdir()
    if existing:
        Spool.open(state).close()
    config = write_config(tmp_path, state)
    result = hook(config, *in_private_mounts(f'mount --bind -o ro {state} {state}; exec "$@"'))
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("ka-notify: error: ") and str(state) in line
    assert "read-only" in line or "not writable" in line


@needs_unshare
def test_full_disk_fails_the_hook(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    config = write_config(tmp_path, state)
    script = (
        f"mount -t tmpfs -o size=64k tmpfs {state}; "
        f'dd if=/dev/zero of={state}/fill bs=4k 2>/dev/null || true; exec "$@"'
    )
    result = hook(config, *in_private_mounts(script))
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("ka-notify: error: ") and "full" in line


def test_hook_commits_and_queue_shows_no_secrets(tmp_path: Path, rejecting: str) -> None:
    state = tmp_path / "state"
    config = write_config(tmp_path, state, rejecting)
    result = hook(config)
    assert result.returncode == 0 and result.stdout == result.stderr == ""
    spool = Spool.open(state)
    (row,) = spool.rows(("pending", "delivered", "dead"))  # committed before the exit
    assert (row.name, row.sink) == ("KeepalivedStateChange", "hook")
    for _ in range(100):  # the spawned worker dead-letters it
        if spool.stats().dead:
            break
        time.sleep(0.05)
    assert spool.stats().dead == 1
    queue = subprocess.run(
        [sys.executable, "-m", "ka_exporter.notify.cli", "queue", "--config", str(config)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert "KeepalivedStateChange" in queue.stdout
    assert "s3cr3t" not in queue.stdout + queue.stderr
    dump = "\n".join(sqlite3.connect(state / "spool.db").iterdump())
    assert "s3cr3t" not in dump


@pytest.mark.parametrize(
    "args", [["VI_1", "UP"], ["--state", "MASTER"], ["--state", "UP", "--instance", "VI_1"]]
)
def test_bad_hook_input_exits_2(tmp_path: Path, args: list[str]) -> None:
    config = write_config(tmp_path, tmp_path / "state")
    cmd = [sys.executable, "-m", "ka_exporter.notify.cli", "--config", str(config), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
