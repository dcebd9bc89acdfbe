"""The shipped layout with real, distinct users: the daemon as ka-notify.service runs it (a
DynamicUser that owns StateDirectory and RuntimeDirectory, under the unit's UMask) and the
hook as keepalived runs it (script_user root), in either start order.

systemd cannot run here, so the test does what it would: the unit's own settings make the
directories (owned by an unprivileged uid from systemd's dynamic range, the default mode 0755)
and setpriv runs the daemon as that uid with no supplementary groups.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lab.running import free_port
from tests.notify_servers import Receiver, receiver_fixture  # noqa: F401  (a fixture)

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "systemd" / "ka-notify.service"
DYNAMIC_UID = 61234  # in systemd's DynamicUser range (61184-65519)
CLI = [sys.executable, "-m", "ka_exporter.notify.cli"]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)


def unit() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(UNIT.read_text())
    return parser["Service"]


@pytest.fixture
def layout() -> Iterator[Path]:
    """/var/lib/<StateDirectory> and /run/<RuntimeDirectory> as systemd makes them for the
    unit, under a directory every user can reach (pytest's tmp_path is root's alone)."""
    service = unit()
    assert service["DynamicUser"] == "yes"
    root = Path(tempfile.mkdtemp(prefix="ka-own-"))
    root.chmod(0o755)
    try:
        for directory, mode in ((root / "lib" / service["StateDirectory"], 0o755),
                                (root / "run" / service["RuntimeDirectory"],
                                 int(service["RuntimeDirectoryMode"], 8))):  # fmt: skip
            directory.mkdir(parents=True)
            directory.chmod(mode)
            os.chown(directory, DYNAMIC_UID, DYNAMIC_UID)
        yield root
    finally:
        shutil.rmtree(root)


def files(directory: Path) -> dict[str, tuple[int, int, int]]:
    """Owner, group and mode of everything under `directory`."""
    return {
        str(p.relative_to(directory)): (p.stat().st_uid, p.stat().st_gid, p.stat().st_mode & 0o777)
        for p in directory.rglob("*")
    }


def reachable_python() -> str:
    """Shell lines that make this Python reachable by another user in a private mount
    namespace: a directory on its path closed to others (root's home) is replaced there by a
    0755 tmpfs holding only the way on. Nothing changes outside that namespace."""
    path = Path(os.path.realpath(sys.executable))
    closed = next((p for p in reversed(path.parents) if not p.stat().st_mode & 0o001), None)
    if closed is None:
        return ""
    inner = path.relative_to(closed).parts[0]
    keep = f"/tmp/ka-own-keep-{os.getpid()}"
    return (f"mkdir -p {keep}; mount --bind {closed / inner} {keep}; "
            f"mount -t tmpfs -o mode=0755 tmpfs {closed}; mkdir {closed / inner}; "
            f"mount --move {keep} {closed / inner}; rmdir {keep} 2>/dev/null || :; ")  # fmt: skip


def as_the_daemon(argv: list[str]) -> list[str]:
    """`argv` as ka-notify.service runs it: its dynamic uid and gid, no other group, its UMask."""
    script = (
        f"{reachable_python()}exec setpriv --reuid={DYNAMIC_UID} --regid={DYNAMIC_UID} "
        f'--clear-groups sh -c \'umask {unit()["UMask"]}; exec "$@"\' sh "$@"'
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-ec", script, "sh", *argv]


@contextmanager
def busy(db: Path) -> Iterator[None]:
    """Another writer holds the spool (as root) while the block runs."""
    script = (
        "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
        "c.execute('BEGIN IMMEDIATE'); print(flush=True); time.sleep(60)"
    )
    locker = subprocess.Popen([sys.executable, "-c", script, str(db)], stdout=subprocess.PIPE)
    try:
        assert locker.stdout is not None and locker.stdout.readline() == b"\n"
        yield
    finally:
        locker.kill()
        locker.wait()


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            return str(r.read().decode())
    except OSError:
        return ""


@pytest.mark.parametrize("hook_first", [True, False], ids=["hook-first", "daemon-first"])
def test_root_hook_and_dynamic_user_daemon_share_the_spool(
    layout: Path, receiver: Receiver, hook_first: bool
) -> None:
    service = unit()
    state = layout / "lib" / service["StateDirectory"]
    fifo = layout / "run" / service["RuntimeDirectory"] / "notify.fifo"
    config = layout / "ka.toml"
    config.write_text(
        f'cluster = "lb1"\nstate_dir = "{state}"\n[damping]\nthreshold = 10\n'
        f'[[sink]]\nname = "hook"\ntype = "webhook"\nurl = "{receiver.url}"\n'
    )
    config.chmod(0o644)
    env = {**os.environ, "KA_NOTIFY_RUNTIME_DIR": str(fifo.parent)}

    def hook(state_name: str, name: str = "VI_1") -> None:
        result = subprocess.run(
            [*CLI, "--config", str(config), "INSTANCE", name, state_name, "100"],
            capture_output=True, text=True, timeout=30, check=False, env=env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

    if hook_first:  # keepalived started first: the root hook creates the spool
        hook("BACKUP")
        receiver.wait_for(1, 30)
    port = free_port()
    log = layout / "daemon.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            as_the_daemon([*CLI, "daemon", "--config", str(config), "--keepalived.notify-fifo",
                           str(fifo), "--web.listen-address", f"127.0.0.1:{port}"]),
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.time() + 15
        while not scrape(port) and daemon.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert scrape(port), log.read_text()
        if not hook_first:
            hook("BACKUP")
        hook("MASTER")  # the daemon holds the drain lock and delivers it
        with fifo.open("w") as writer:  # keepalived writes the FIFO as root
            writer.write('INSTANCE "VI_2" MASTER 100\n')
        receiver.wait_for(3, 30)
        assert len(receiver.unique()) == 3, log.read_text()
        with busy(state / "spool.db"):  # the root hook keeps its event in incoming/
            hook("FAULT", "VI_3")
        receiver.wait_for(4, 30)  # the daemon, as its own user, records and delivers it
        assert len(receiver.unique()) == 4, log.read_text()
        assert 'keepalived_vrrp_state{iname="VI_1"} 2.0' in scrape(port)
    finally:
        daemon.terminate()
        daemon.wait(10)
    owned = files(state)
    assert {"spool.db", "drain.lock", "incoming"} <= set(owned), owned
    for name, (uid, gid, mode) in owned.items():
        assert (uid, gid) == (DYNAMIC_UID, DYNAMIC_UID), (name, uid, gid)
        assert mode & 0o077 == 0, (name, oct(mode))  # even in the unit's 0755 StateDirectory
    assert "Traceback" not in log.read_text()
