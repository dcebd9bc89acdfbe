"""`make demo` as a newcomer runs it: the lab comes up, every exporter and Prometheus (with the
shipped rules) answer on the printed addresses, and Ctrl-C removes everything."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from lab import netns
from lab.demo import FIRST_PORT, PROMETHEUS_PORT
from tests.running import stop

ROOT = Path(__file__).parents[1]
URL = re.compile(r"http://127\.0\.0\.1:(\d+)/")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.load(response) if "/api/" in path else response.read().decode()


@pytest.mark.lab
@pytest.mark.usefixtures("lab_host")
def test_demo_comes_up_and_ctrl_c_removes_it() -> None:
    ports = [PROMETHEUS_PORT, *range(FIRST_PORT, FIRST_PORT + 4)]
    if not all(map(port_free, ports)):
        pytest.skip("a demo (or something else) already uses the demo's ports")
    before = set(netns.names())
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab", "demo"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        printed: list[str] = []
        deadline = time.monotonic() + 90
        while not any("/alerts" in line for line in printed) and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "".join(printed)  # the demo ended before it was up
            printed.append(line)
        shown = {int(port) for line in printed for port in URL.findall(line)}
        assert shown == set(ports), "".join(printed)
        for port in range(FIRST_PORT, FIRST_PORT + 4):
            assert "vrrp_masters" in get(port, "/metrics")
            assert "<title>ka-exporter on " in get(port, "/")
        groups = get(PROMETHEUS_PORT, "/api/v1/rules")["data"]["groups"]
        assert any(rule["name"] == "VRRPSplitBrain" for g in groups for rule in g["rules"])
        deadline = time.monotonic() + 30  # scraped: four exporters up
        while time.monotonic() < deadline:
            up = get(PROMETHEUS_PORT, "/api/v1/query?query=sum(up)")["data"]["result"]
            if up and float(up[0]["value"][1]) == 4:
                break
            time.sleep(1)
        assert up and float(up[0]["value"][1]) == 4, up

        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)[0]
        assert proc.returncode == 0, rest
        assert "removed" in rest, rest
    finally:
        if proc.poll() is None:
            stop(proc)
    assert set(netns.names()) <= before
    assert all(map(port_free, ports))
