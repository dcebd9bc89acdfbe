"""A real ka-exporter inside one of the lab's namespaces, read over that namespace's loopback.

Started with `Lab.exec_in`, so the lab stops it by PID whatever its user did; read with curl
through `ip netns exec`, because the namespace's loopback is not this process's.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from lab.config import Instance
from lab.lab import Lab, LabError

EXPORTER = str(Path(sys.executable).with_name("ka-exporter"))
PORT = 9743  # every namespace has a loopback of its own, so the default port is free in each


def key(inst: Instance) -> dict[str, str]:
    """The labels of the VRID's series."""
    family = "ipv6" if inst.flavour.ipv6 else "ipv4"
    return {"interface": inst.interface, "family": family, "vrid": str(inst.vrid)}


@dataclass(frozen=True)
class Scrape:
    samples: tuple[tuple[str, dict[str, str], float], ...]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        return cls(
            tuple(
                (sample.name, dict(sample.labels), sample.value)
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            )
        )

    def find(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        """Samples of `name` whose labels include `labels`."""
        return [(ls, v) for n, ls, v in self.samples if n == name and labels.items() <= ls.items()]

    def value(self, name: str, **labels: str) -> float | None:
        found = self.find(name, **labels)
        if len(found) > 1:
            raise LabError(f"{name}{labels} is ambiguous: {found}")
        return found[0][1] if found else None

    def of(self, name: str, inst: Instance, **labels: str) -> float | None:
        return self.value(name, **key(inst), **labels)

    def masters(self, inst: Instance) -> set[str]:
        return {ls["address"] for ls, v in self.find("vrrp_master_info", **key(inst)) if v == 1}


class NsExporter:
    """ka-exporter watching eth0 of one of the lab's namespaces; `args` are further flags."""

    def __init__(
        self, lab: Lab, who: int | str, port: int = PORT, args: Sequence[str] = ()
    ) -> None:
        self.ns = lab.ns(who)
        self.port = port
        self.args = tuple(args)
        self.log = lab.workdir / f"ka-exporter-{self.ns}-{port}.log"
        argv = [EXPORTER, "--web.listen-address", f"127.0.0.1:{port}", "--interface", "eth0"]
        argv += self.args
        with self.log.open("ab") as out:
            self.proc = lab.exec_in(who, argv, stdout=out, stderr=out)

    def describe(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
        tail = self.log.read_text(errors="replace").splitlines()[-15:]
        return f"exporter in {self.ns} ({state}); log tail:\n" + "\n".join(tail)

    def fetch(self, path: str) -> subprocess.CompletedProcess[str]:
        url = f"http://127.0.0.1:{self.port}{path}"
        argv = ["ip", "netns", "exec", self.ns, "curl", "-sSf", "--max-time", "3", url]
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)

    def get(self, path: str) -> str:
        result = self.fetch(path)
        if result.returncode != 0:
            raise LabError(f"GET {path}: {result.stderr.strip()}\n{self.describe()}")
        return result.stdout

    def scrape(self) -> Scrape:
        return Scrape.parse(self.get("/metrics"))

    def wait_ready(self, timeout: float = 15) -> float:
        """Polls /-/ready and returns the monotonic time it first answered 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(self.describe())
            if self.fetch("/-/ready").returncode == 0:
                return time.monotonic()
            time.sleep(0.02)
        raise LabError(f"not ready within {timeout:g} s: {self.describe()}")

    def stop(self, timeout: float = 10) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)
