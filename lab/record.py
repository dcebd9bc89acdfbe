"""Reference captures from real keepalived, one short story per file, for the decoder tests.

Each scenario gets a fresh two-node lab (node 1 priority 150, node 2 priority 100) and is
captured from the monitor namespace, so the files hold exactly what a passive sniffer on the
segment would see. The timeline of each is printed while it is recorded.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from lab.config import Flavour, Instance, double_master
from lab.lab import Lab, wait_for

Log = Callable[[str], None]

# VRIDs as in the reference captures, so one VRID means one flavour across all files.
FAILOVER_SCENARIOS: dict[str, list[Instance]] = {
    "v2-pass": [Instance(51, Flavour.V2_PASS)],
    "v3": [Instance(52, Flavour.V3, advert_int=0.5)],
    "v3-unicast": [Instance(53, Flavour.V3_UNICAST)],
    "v3-v6": [Instance(54, Flavour.V3_V6)],
    "v2-ah": [Instance(55, Flavour.V2_AH)],
    "double-master": double_master(10, 11),
}
PARTITION = Instance(56, Flavour.V3)
PREEMPT = Instance(57, Flavour.V3)


class _Timeline:
    def __init__(self, name: str, log: Log) -> None:
        self._name = name
        self._log = log
        self._start = time.monotonic()

    def __call__(self, event: str) -> None:
        self._log(f"{self._name:24} +{time.monotonic() - self._start:6.2f} s  {event}")


def _expected(inst: Instance, down: set[int]) -> int:
    return max((n for n in inst.priorities if n not in down), key=lambda n: inst.priorities[n])


def _converge(lab: Lab, instances: Sequence[Instance], down: set[int], event: Log) -> None:
    for inst in instances:
        event(f"VRID {inst.vrid}: n{_wait_master(lab, inst, _expected(inst, down))} master")


def _wait_master(lab: Lab, inst: Instance, master: int) -> int:
    wait_for(
        lambda: lab.master_of(inst.vrid) == master,
        inst.master_down_interval(master) + 3,
        what=f"n{master} master of VRID {inst.vrid}",
    )
    return master


def _hold(instances: Sequence[Instance]) -> None:
    """Let a few adverts of the new state go by before the next event."""
    time.sleep(2 * max(inst.advert_int for inst in instances))


class _Story:
    """A recorded lab: converged on start, each step then waited out and held."""

    def __init__(self, lab: Lab, instances: Sequence[Instance], event: Log) -> None:
        self.lab, self.instances, self.event = lab, instances, event

    def settle(self, down: set[int]) -> None:
        _converge(self.lab, self.instances, down, self.event)
        _hold(self.instances)


@contextmanager
def _recorded(path: Path, instances: Sequence[Instance], log: Log) -> Iterator[_Story]:
    with Lab(instances) as lab, lab.capture(path):
        story = _Story(lab, instances, _Timeline(path.name, log))
        story.event("starting keepalived on n1, n2")
        lab.start_all()
        story.settle(set())
        yield story


def record_failover(path: Path, instances: list[Instance], log: Log) -> None:
    """Convergence, crash of the master (SIGKILL: no goodbye), takeover, graceful stop."""
    with _recorded(path, instances, log) as story:
        story.event("n1 SIGKILL")
        story.lab.kill(1, signal.SIGKILL)
        story.settle({1})
        story.event("n2 SIGTERM (priority-0 adverts)")
        story.lab.kill(2)


def record_partition(path: Path, log: Log) -> None:
    """Split brain by bridge port isolation, both nodes advertise, then healing."""
    with _recorded(path, [PARTITION], log) as story:
        story.event("partition (bridge ports isolated)")
        story.lab.partition()
        wait_for(lambda: story.lab.holders(PARTITION.vrid) == {1, 2}, 8, what="split brain")
        story.event(f"VRID {PARTITION.vrid}: n1 and n2 master (split brain)")
        _hold([PARTITION])
        story.event("heal")
        story.lab.heal()
        story.settle(set())


def record_preempt(path: Path, log: Log) -> None:
    """The higher-priority node stops, comes back and preempts the lower-priority master."""
    with _recorded(path, [PREEMPT], log) as story:
        story.event("n1 SIGTERM (priority-0 adverts)")
        story.lab.kill(1)
        story.settle({1})
        story.event("n1 starts again")
        story.lab.start(1)
        story.settle(set())


def record_all(outdir: Path, log: Log = print) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, instances in FAILOVER_SCENARIOS.items():
        paths.append(outdir / f"lab-{name}.pcap")
        record_failover(paths[-1], instances, log)
    paths.append(outdir / "lab-partition.pcap")
    record_partition(paths[-1], log)
    paths.append(outdir / "lab-preempt.pcap")
    record_preempt(paths[-1], log)
    return paths
