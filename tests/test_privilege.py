"""Least privilege, read from the kernel: the real exporter in a namespace of the test's own,
as root and as nobody with only CAP_NET_RAW, and the ka-notify hook with no capability at all."""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pyroute2 import netns as p2netns

from ka_exporter.alerting.spool import Spool
from ka_exporter.privilege import CAP_NET_RAW, CAP_SYS_ADMIN
from lab import netns, wait_for
from tests import frames
from tests.conftest import send
from tests.notify_servers import make_pki
from tests.running import stop
from tests.test_webconfig import tls_yaml, users_yaml

BIN = Path(sys.executable).parent
NOBODY = "65534"
pytestmark = pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")


def get(
    ns: str,
    port: int,
    path: str,
    tls: ssl.SSLContext | None = None,
    auth: tuple[str, str] | None = None,
) -> tuple[int, str]:
    """GET on 127.0.0.1 inside `ns`, through a socket opened there (over TLS if `tls`)."""
    sock = p2netns.create_socket(ns, family=socket.AF_INET, socket_type=socket.SOCK_STREAM)
    sock.settimeout(5)
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    try:
        sock.connect(("127.0.0.1", port))
        conn.sock = tls.wrap_socket(sock, server_hostname="127.0.0.1") if tls else sock
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()
        sock.close()


def status_of(pid: int) -> list[dict[str, int]]:
    """Capability sets and NoNewPrivs of every thread (capabilities are per thread)."""
    tasks = []
    for task in os.listdir(f"/proc/{pid}/task"):
        fields = dict(
            line.split(":\t", 1)
            for line in Path(f"/proc/{pid}/task/{task}/status").read_text().splitlines()
        )
        tasks.append(
            {k: int(fields[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
            | {"NoNewPrivs": int(fields["NoNewPrivs"])}
        )
    return tasks


@contextmanager
def exporter(
    ns: str,
    port: int,
    *args: str,
    user: bool = False,
    tls: ssl.SSLContext | None = None,
    auth: tuple[str, str] | None = None,
) -> Iterator[int]:
    """The exporter inside `ns` (as nobody with ambient CAP_NET_RAW if `user`), ready; its PID."""
    argv = [str(BIN / "ka-exporter"), "--web.listen-address", f"127.0.0.1:{port}", *args]
    if user:
        argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                "--inh-caps=-all,+net_raw", "--ambient-caps=+net_raw",
                "--bounding-set=-all,+net_raw", *argv]  # fmt: skip
    proc = subprocess.Popen(netns.exec_argv(ns, argv), stderr=subprocess.PIPE, text=True)
    try:

        def ready() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                return get(ns, port, "/-/ready", tls, auth)[0] == 200
            except OSError:
                return False

        wait_for(ready, 15, what="exporter ready")
        yield proc.pid
    finally:
        stop(proc)


def has_only(task: dict[str, int], *caps: int) -> bool:
    """Exactly `caps` effective and permitted, nothing to pass on, no way to gain more."""
    mask = sum(1 << c for c in caps)
    expected = {"CapEff": mask, "CapPrm": mask, "CapInh": 0, "CapAmb": 0, "NoNewPrivs": 1}
    return {k: task[k] for k in expected} == expected


def captures(a: str, b: str, port: int, vrid: int) -> bool:
    """An advert sent from `a` shows as a master at the exporter in `b`."""
    send(a, [bytes(frames.advert(3, vrid=vrid, priority=150))])
    text = get(b, port, "/metrics")[1]
    return any(
        line.startswith("vrrp_masters{") and f'vrid="{vrid}"' in line and line.endswith(" 1.0")
        for line in text.splitlines()
    )


@pytest.mark.parametrize("user", [False, True], ids=["root", "nobody"])
def test_exporter_keeps_only_net_raw(wire: tuple[str, str], user: bool) -> None:
    a, b = wire
    with exporter(b, 9743, "--interface", "eth0", user=user) as pid:
        for task in status_of(pid):
            assert has_only(task, CAP_NET_RAW), task
            if not user:  # nobody's bounding set was already NET_RAW; root's is cut to it
                assert task["CapBnd"] == 1 << CAP_NET_RAW
        wait_for(lambda: captures(a, b, 9743, 7), 5, interval=0.2, what="advert captured")


def test_with_netns_sys_admin_stays_for_interfaces_that_come_later(wire: tuple[str, str]) -> None:
    a, b = wire
    up = f'ka_exporter_capture_up{{interface="late0",netns="{b}"}} 1.0'
    with exporter(a, 9743, "--netns", b, "--interface", f"{b}/*") as pid:
        for task in status_of(pid):
            assert has_only(task, CAP_NET_RAW, CAP_SYS_ADMIN), task
            assert task["CapBnd"] == 1 << CAP_NET_RAW | 1 << CAP_SYS_ADMIN
        netns.run(["ip", "-n", b, "link", "add", "late0", "type", "veth", "peer", "late1"])
        netns.run(["ip", "-n", b, "link", "set", "late0", "up"])
        wait_for(lambda: up in get(a, 9743, "/metrics")[1].splitlines(), 5, what="late0")


def test_web_config_reread_after_the_capabilities_are_gone(
    wire: tuple[str, str], tmp_path: Path
) -> None:
    """Root without CAP_DAC_OVERRIDE still reads root's own files: a rotated certificate and
    a new password are taken."""
    _, b = wire
    pki = make_pki(tmp_path)
    config = tmp_path / "web.yml"
    config.write_text(tls_yaml(pki) + users_yaml(prometheus="first"))
    tls = ssl.create_default_context(cafile=pki.ca)
    args = ("--interface", "eth0", "--web.config.file", str(config))
    with exporter(b, 9743, *args, tls=tls, auth=("prometheus", "first")) as pid:
        assert all(has_only(task, CAP_NET_RAW) for task in status_of(pid))
        assert get(b, 9743, "/metrics", tls)[0] == 401
        (tmp_path / "rotated").mkdir()
        rotated = make_pki(tmp_path / "rotated")
        os.replace(rotated.key, pki.key)
        os.replace(rotated.cert, pki.cert)
        config.write_text(tls_yaml(pki) + users_yaml(prometheus="second"))
        new = ssl.create_default_context(cafile=rotated.ca)

        def taken() -> bool:
            try:
                return get(b, 9743, "/metrics", new, ("prometheus", "second"))[0] == 200
            except ssl.SSLCertVerificationError:  # the old certificate, still
                return False

        wait_for(taken, 10, what="new certificate and password")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="ka-priv-"))
    try:
        path.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        yield path
    finally:
        shutil.rmtree(path)


def test_notify_hook_needs_no_capability(shared_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run as another user")
    state = shared_dir / "state"
    state.mkdir()
    os.chown(state, int(NOBODY), int(NOBODY))
    config = shared_dir / "ka.toml"
    config.write_text(f'cluster = "c"\nstate_dir = "{state}"\n')
    hook = (
        "import sys; from pathlib import Path; from ka_exporter.notify.cli import main; "
        "print(*[l for l in Path('/proc/self/status').read_text().split('\\n') if "
        "l.startswith(('CapEff', 'CapPrm'))]); "
        f"sys.exit(main(['--config', '{config}', 'INSTANCE', 'VI_1', 'MASTER', '100']))"
    )
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-c", hook]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["CapPrm:", "0" * 16, "CapEff:", "0" * 16]
    spool = Spool.open(state)
    try:
        assert ("INSTANCE", "VI_1", "MASTER", 100) in spool.instances()
    finally:
        spool.close()
