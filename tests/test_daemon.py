"""The exporter process as users run it: flags, startup errors, live capture, signals."""

from __future__ import annotations

import calendar
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import netns
from tests import frames, segments
from tests.conftest import send

EXPORTER = str(Path(sys.executable).with_name("ka-exporter"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [EXPORTER, *args]
    if user:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", *argv]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ka-exporter: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--web.listen-address", "9743"), ("not host:port",)),
        (("--web.telemetry-path", "metrics"), ("must be a path",)),
        (("--vrrp.split-brain-debounce", "-1"), ("must be greater than 0",)),
        (("--log.level", "loud"), ("invalid choice",)),
        (("--no-such-flag",), ("unrecognized arguments",)),
        (("--netns", "ka-no-such-ns"), ("unknown network namespace 'ka-no-such-ns'",)),
    ],
)
def test_bad_flags(args: tuple[str, ...], fragments: tuple[str, ...]) -> None:
    one_line_error(run(*args), *fragments)


def test_bad_environment_value() -> None:
    env = {**os.environ, "KA_EXPORTER_VRRP_MAX_ROUTERS": "lots"}
    result = subprocess.run([EXPORTER], capture_output=True, text=True, env=env, check=False)
    one_line_error(result, "KA_EXPORTER_VRRP_MAX_ROUTERS='lots'")


def test_unknown_interface(wire: tuple[str, str]) -> None:
    one_line_error(run("--netns", wire[0], "--interface", f"{wire[0]}/eth9"), "unknown interface")


def test_port_in_use(wire: tuple[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("--netns", wire[0], "--interface", f"{wire[0]}/*",
                     "--web.listen-address", f"127.0.0.1:{port}")  # fmt: skip
    one_line_error(result, f"cannot listen on 127.0.0.1:{port}: Address already in use")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_missing_capability_is_named() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    one_line_error(
        run("--web.listen-address", f"127.0.0.1:{free_port()}", user="65534"), "CAP_NET_RAW"
    )


class Exporter:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        argv = [EXPORTER, "--web.listen-address", f"127.0.0.1:{self.port}", *args]
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)

    def get(self, path: str) -> tuple[int, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return r.status, r.read().decode()

    def wait_ready(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            try:
                if self.get("/-/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("exporter not ready")

    def metric(self, line: str) -> bool:
        return line in self.get("/metrics")[1].splitlines()

    def stop(self) -> tuple[int, float]:
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=10)
        return code, time.monotonic() - start


@pytest.fixture
def exporter(wire: tuple[str, str]) -> Iterator[Exporter]:
    _, b = wire
    exp = Exporter("--netns", b, "--interface", f"{b}/eth0")
    try:
        exp.wait_ready()
        yield exp
    finally:
        if exp.proc.poll() is None:
            exp.proc.kill()
            exp.proc.wait()


def poll(predicate: object, timeout: float, interval: float = 0.01) -> float:
    """Seconds until predicate() is true; fails after `timeout`."""
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(interval)
    return time.monotonic() - start


def labels(ns: str, vrid: int, **extra: str) -> str:
    pairs = {"family": "ipv4", "interface": "eth0", "netns": ns, "vrid": str(vrid), **extra}
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items())) + "}"


def test_live_adverts_and_vip_ownership(wire: tuple[str, str], exporter: Exporter) -> None:
    a, b = wire
    advert = bytes(frames.advert(3, vrid=7, priority=150, addrlist=["192.0.2.77"]))
    send(a, [advert])
    master = f"vrrp_masters{labels(b, 7)} 1.0"
    poll(lambda: exporter.metric(master), 2)
    vip = labels(b, 7, vip="192.0.2.77")
    assert exporter.metric(f"vrrp_local_vip{vip} 0.0")
    added = int(time.time())
    netns.run(["ip", "-n", b, "addr", "add", "192.0.2.77/24", "dev", "eth0"])
    # the bound for an address change to show is 100 ms; scrape time is part of it
    elapsed = poll(lambda: exporter.metric(f"vrrp_local_vip{vip} 1.0"), 1.0)
    assert elapsed < 0.1 + 0.2, f"address change took {elapsed:.3f} s to show"
    assert exporter.metric(f"vrrp_duplicate_vip{labels(b, 7)} 1.0")  # someone else is master
    # the page dates it from when the address came, to the second
    found = re.search(
        r"DUPLICATE VIP on VRID 7 \(.*?\) since <span title=\"([^\"]+)\"", exporter.get("/")[1]
    )
    assert found, exporter.get("/")[1]
    since = calendar.timegm(time.strptime(found[1], "%Y-%m-%d %H:%M:%S UTC"))
    assert added <= since <= added + 2
    code, took = exporter.stop()
    assert code == 0
    assert took < 1.0


def test_interface_recreated_capture_resumes(wire: tuple[str, str], exporter: Exporter) -> None:
    a, b = wire
    up = f'ka_exporter_capture_up{{interface="eth0",netns="{b}"}} 1.0'
    assert exporter.metric(up)
    netns.run(["ip", "-n", a, "link", "del", "eth0"])  # takes the peer in b with it
    poll(lambda: not exporter.metric(up), 2)
    netns.run(["ip", "link", "add", "eth0", "netns", a, "type", "veth",
               "peer", "name", "eth0", "netns", b])  # fmt: skip
    for ns in (a, b):
        netns.run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    poll(lambda: exporter.metric(up), 2)
    send(a, [bytes(frames.advert(3, vrid=9, priority=120))])
    poll(lambda: exporter.metric(f"vrrp_masters{labels(b, 9)} 1.0"), 2)


def test_trunk_vlans_carp_and_a_collision_live(wire: tuple[str, str], exporter: Exporter) -> None:
    """One VRID on two VLANs of a trunk, QinQ, and CARP beside: one master per VLAN, no
    split-brain, no mismatch, no reject, and the CARP vhid equal to VRID 51 flagged."""
    a, b = wire
    send(a, [frame for _, frame in segments.trunk(seconds=3)])
    vlan100 = labels(b, 51, vlan="100")
    poll(lambda: exporter.metric(f"vrrp_masters{vlan100} 1.0"), 2)
    text = exporter.get("/metrics")[1]
    for vlan, vrid in (("100", 51), ("200", 51), ("300.52", 52)):
        assert f"vrrp_masters{labels(b, vrid, vlan=vlan)} 1.0" in text
        assert f"vrrp_split_brain{labels(b, vrid, vlan=vlan)} 0.0" in text
        assert f"vrrp_config_mismatch{labels(b, vrid, vlan=vlan, field='vips')} 0.0" in text
    assert f"vrrp_carp_collision{vlan100} 1.0" in text
    carp = f'{{family="ipv4",interface="eth0",netns="{b}",vhid="51",vlan="100"}}'
    assert f"carp_masters{carp} 1.0" in text
    assert "vrrp_packets_rejected_total{" not in text
    page = exporter.get("/")[1]
    assert "CARP COLLISION" in page and '<table id="carp">' in page


def test_link_down_holds_the_vrid_and_link_up_resumes(
    wire: tuple[str, str], exporter: Exporter
) -> None:
    """Down, the VRID keeps its master (no false "no master"), the page and ka_exporter_link_up
    say why; up again, adverts are heard as before."""
    a, b = wire
    advert = bytes(frames.advert(3, vrid=8, priority=150, adv=20))  # every 0.2 s
    master = f"vrrp_masters{labels(b, 8)} 1.0"
    link = f'ka_exporter_link_up{{interface="eth0",netns="{b}"}}'
    for _ in range(5):
        send(a, [advert])
        time.sleep(0.2)
    assert exporter.metric(master)
    netns.run(["ip", "-n", b, "link", "set", "eth0", "down"])
    poll(lambda: exporter.metric(f"{link} 0.0"), 2)
    time.sleep(2.0)  # over 3 master-down intervals of silence
    assert exporter.metric(master)
    assert re.search(r"Link down: eth0 since \d\d:\d\d:\d\d;", exporter.get("/")[1])
    netns.run(["ip", "-n", b, "link", "set", "eth0", "up"])
    poll(lambda: exporter.metric(f"{link} 1.0"), 3)
    for _ in range(5):
        send(a, [advert])
        time.sleep(0.2)
    assert exporter.metric(master)
    assert exporter.metric(f"vrrp_master_transitions_total{labels(b, 8)} 0.0")
