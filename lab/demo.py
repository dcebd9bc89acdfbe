"""`make demo`: the lab, an exporter watching each of its namespaces, and Prometheus on top.

The exporters run in the root namespace and watch the lab's namespaces with `--netns`, so the
metrics, status pages and Prometheus are on this host's loopback, where a browser (or an ssh
tunnel) reaches them; no lab traffic leaves the lab's namespaces.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from lab.lab import Lab, wait_for
from lab.prometheus import Prometheus

FIRST_PORT = 9743
RULES = Path(__file__).parents[1] / "deploy" / "prometheus" / "rules.yml"
PROMETHEUS_PORT = 9090


def _exporter() -> str:
    return shutil.which("ka-exporter") or str(Path(sys.executable).with_name("ka-exporter"))


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def watching(lab: Lab) -> Iterator[list[str]]:
    """Starts the exporters and Prometheus; yields the lines that tell where they are."""
    watched = [("monitor", lab.ns("mon"))] + [(f"node {i}", lab.ns(i)) for i in lab.nodes]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports = {}
        for offset, (name, ns) in enumerate(watched):
            port = FIRST_PORT + offset
            log = (lab.workdir / f"exporter-{ns}.log").open("wb")
            argv = [_exporter(), "--web.listen-address", f"127.0.0.1:{port}",
                    "--netns", ns, "--interface", f"{ns}/eth0"]  # fmt: skip
            procs.append(subprocess.Popen(argv, stdout=log, stderr=log))
            ports[name] = port
        for port in ports.values():
            wait_for(functools.partial(_ready, port), 20, what=f"exporter on port {port}")
        targets = {"ka-exporter": [f"127.0.0.1:{p}" for p in ports.values()]}
        with Prometheus(targets, port=PROMETHEUS_PORT, interval="2s", rule_files=[RULES]):
            lines = [f"  {name:9} http://127.0.0.1:{port}/   (metrics: /metrics)"
                     for name, port in ports.items()]  # fmt: skip
            lines.append(f"  prometheus http://127.0.0.1:{PROMETHEUS_PORT}/   "
                         "try: vrrp_masters, max by (vrid) (vrrp_split_brain)")  # fmt: skip
            lines.append(f"  alerts     http://127.0.0.1:{PROMETHEUS_PORT}/alerts   "
                         "(the rules of deploy/prometheus/rules.yml)")  # fmt: skip
            yield lines
    finally:
        for proc in procs:
            proc.terminate()
        deadline = time.monotonic() + 5
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
