"""`make demo` as a newcomer runs it: the lab comes up, every exporter, ka-notify and Prometheus
(with the shipped rules) answer on the printed addresses, the printed commands do what they say
while the console follows them (the ticker, the mails), and Ctrl-C removes everything."""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from lab import netns
from lab.demo import FIRST_PORT, NOTIFY_FIRST_PORT, PROMETHEUS_PORT
from tests.running import stop

ROOT = Path(__file__).parents[1]
URL = re.compile(r"http://127\.0\.0\.1:(\d+)/")
ALERTS = re.compile(r"^\s+alerts\s+http://127\.0\.0\.1:(\d+)(/\S+)\s")
SMTP = re.compile(r"smtp://127\.0\.0\.1:(\d+)")
EXPORTERS = range(FIRST_PORT, FIRST_PORT + 4)  # the monitor and three nodes
NOTIFY = range(NOTIFY_FIRST_PORT, NOTIFY_FIRST_PORT + 3)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.load(response) if "/api/" in path else response.read().decode()


class Console:
    """The demo's output, read in a thread, so the test can wait for a line while it acts."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._new.put(line)
        self._new.put(None)

    def wait(self, pattern: str, timeout: float, since: int = 0) -> re.Match[str]:
        """The first line from index `since` on matching `pattern`, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[since:]:
                if match := re.search(pattern, line):
                    return match
            since = len(self.lines)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r}:\n" + "".join(self.lines))
            try:
                line = self._new.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the demo ended before {pattern!r}:\n" + "".join(self.lines))
            self.lines.append(line)

    def rest(self, timeout: float) -> str:
        """Everything printed, once the demo has ended (or `timeout` passed)."""
        self._thread.join(timeout)
        while True:
            try:
                line = self._new.get_nowait()
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        return "".join(self.lines)


def command(console: Console, label: str) -> str:
    """A command the demo printed, e.g. for `stop n1:`."""
    return console.wait(rf"^\s+{re.escape(label)}\s+(.+?)\s*$", 0)[1]


@pytest.mark.lab
@pytest.mark.usefixtures("lab_host")
def test_demo_comes_up_tells_the_story_and_ctrl_c_removes_it() -> None:
    ports = [PROMETHEUS_PORT, *EXPORTERS, *NOTIFY]
    if not all(map(port_free, ports)):
        pytest.skip("a demo (or something else) already uses the demo's ports")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab", "demo"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    restarted: subprocess.Popen[bytes] | None = None
    try:
        console = Console(proc)
        prefix = console.wait(r"^lab (ka[0-9a-f]{4}) is up", 90)[1]
        alerts = console.wait(ALERTS.pattern, 60)
        shown = {int(port) for line in console.lines for port in URL.findall(line)}
        assert shown == set(ports), "".join(console.lines)
        smtp_port = int(console.wait(SMTP.pattern, 0)[1])

        # the alerts page printed is one this Prometheus serves (Debian's: /classic/alerts)
        assert int(alerts[1]) == PROMETHEUS_PORT
        assert "VRRPSplitBrain" in get(PROMETHEUS_PORT, alerts[2])
        for port in EXPORTERS:
            assert "vrrp_masters" in get(port, "/metrics")
            assert "<title>ka-exporter on " in get(port, "/")
        for port in (FIRST_PORT + 1, FIRST_PORT + 2):  # nodes ask each other
            assert "vrrp_peer_up{" in get(port, "/metrics")
        for port in NOTIFY:
            assert "ka_notify_queue_depth" in get(port, "/metrics")
        groups = get(PROMETHEUS_PORT, "/api/v1/rules")["data"]["groups"]
        assert any(rule["name"] == "VRRPSplitBrain" for g in groups for rule in g["rules"])
        deadline = time.monotonic() + 30  # scraped: four exporters and three ka-notify, labelled
        query = "/api/v1/query?query=count(up{cluster%3D%22demo%22}%3D%3D1)"
        while time.monotonic() < deadline:
            up = get(PROMETHEUS_PORT, query)["data"]["result"]
            if up and float(up[0]["value"][1]) == 7:
                break
            time.sleep(1)
        assert up and float(up[0]["value"][1]) == 7, up

        # keepalived's own word reaches the mailbox: n1 becomes master of VRID 10
        console.wait(r"mail: \[n1\] demo: instance V3_10 on .* is MASTER", 30)
        console.wait(r"VRID 10: n1 ", 30)

        # the printed stop: n2 takes over, the ticker and the mails say so
        mark = len(console.lines)
        subprocess.run(command(console, "stop n1:"), shell=True, check=True)
        console.wait(r"n1: keepalived not running", 10, since=mark)
        console.wait(r"VRID 10: n2 ", 15, since=mark)
        n2_master = r"mail: \[n2\] demo: instance V3_10 on .* is MASTER \(BACKUP -> MASTER\)"
        console.wait(n2_master, 20, since=mark)

        # the printed start, as someone in another shell runs it: the ticker follows n1 back
        mark = len(console.lines)
        start = command(console, "start n1:").removesuffix("&").strip()
        restarted = subprocess.Popen(start, shell=True, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        console.wait(r"n1: keepalived running, pid \d+", 15, since=mark)
        console.wait(r"VRID 10: n1 ", 20, since=mark)

        # the printed partition: n1 and n2 hear only themselves, their exporters compare claims
        mark = len(console.lines)
        partition = command(console, "split brain:").split("   (")[0]
        subprocess.run(partition, shell=True, check=True)
        console.wait(r"VRID 10: n1\+n2 \(split brain\)", 15, since=mark)
        peer = re.compile(r'^vrrp_peer_split_brain\{[^}]*vrid="10"[^}]*\} 1', re.M)
        deadline = time.monotonic() + 15
        while not peer.search(get(FIRST_PORT + 1, "/metrics")):
            assert time.monotonic() < deadline, "node 1 never saw the split brain across hosts"
            time.sleep(0.5)
        split = r"mail: \[n1\] \[FIRING\] demo: split brain on VRID 10 \S+ across hosts"
        console.wait(split, 20, since=mark)

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, console.rest(5)
        rest = console.rest(5)
        assert "removed" in rest, rest
    finally:
        if proc.poll() is None:
            stop(proc)
        if restarted is not None:
            try:  # the lab kills what runs in its namespaces; this reaps our shell
                restarted.wait(timeout=10)
            except subprocess.TimeoutExpired:
                stop(restarted)
    assert not [ns for ns in netns.names() if ns.startswith(f"{prefix}-")]  # other labs may run
    assert all(map(port_free, [*ports, smtp_port]))
