"""Why the master changed, told by the wire in a real keepalived lab: each fault the lab can
cause (SIGTERM, SIGKILL, a tracked priority drop, a partition and its heal) gives its reason,
and each gap agrees with the capture's own timestamps, read independently by scapy."""

from __future__ import annotations

import ipaddress
import signal
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP
from scapy.utils import rdpcap

from ka_exporter.analyze import replay
from ka_exporter.model import EventType
from lab import Flavour, Instance, Lab, wait_for
from tests.frames import scapy_fields
from tests.lab_fixtures import MakeLab

VRID = 58
pytestmark = pytest.mark.lab


def converge(lab: Lab, master: int) -> None:
    inst = lab.instance(VRID)
    wait_for(
        lambda: lab.master_of(VRID) == master,
        inst.master_down_interval(master) + 2,
        what=f"n{master} sole master of VRID {VRID}",
    )


def test_every_fault_gives_its_reason_and_a_gap_the_capture_agrees_with(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    lab = make_lab([Instance(VRID, Flavour.V3, advert_int=0.5)])  # n1 150, n2 100
    pcap = tmp_path / "faults.pcap"
    with lab.capture(pcap):
        lab.start_all()
        converge(lab, 1)
        lab.kill(1, signal.SIGTERM)  # resigned: n2 after its skew time
        converge(lab, 2)
        lab.restart(1)  # preempted: n1, priority 150, takes back
        converge(lab, 1)
        lab.kill(1, signal.SIGKILL)  # silent: n2 after its master-down interval
        converge(lab, 2)
        lab.restart(1)
        converge(lab, 1)
        lab.set_priority_offset(1, True)  # 150 - 60 = 90 < 100: n2 preempts
        converge(lab, 2)
        lab.set_priority_offset(1, False)  # back to 150: n1 preempts
        converge(lab, 1)
        lab.partition()  # both master: split-brain; healed, the higher priority stays
        wait_for(lambda: lab.holders(VRID) == {1, 2}, 4, what="split brain")
        time.sleep(4 * lab.instance(VRID).advert_int)  # past the split-brain debounce
        lab.heal()
        converge(lab, 1)
        time.sleep(4 * lab.instance(VRID).advert_int)  # n2's last advert ages out of acting
    with pcap.open("rb") as f:
        analysis = replay(f)
    changes = [e for e in analysis.events if e.type is EventType.MASTER_CHANGED]
    assert [e.detail["reason"] for e in changes] == [
        "resigned",
        "preempted",
        "silent",
        "preempted",
        "priority_dropped",
        "preempted",
    ], [(e.addresses, e.detail) for e in changes]
    # n1 stayed master through the split: its end is no change of master
    kinds = [e.type for e in analysis.events]
    assert kinds.count(EventType.SPLIT_BRAIN_START) == kinds.count(EventType.SPLIT_BRAIN_END) == 1
    heard = [
        (float(p.time), scapy_fields(bytes(p)))
        for p in rdpcap(str(pcap))
        if p.haslayer(IP) and p[IP].proto == 112
    ]
    interval = lab.instance(VRID).advert_int
    for e in changes:
        new, old = (ipaddress.ip_address(a) for a in e.addresses)
        last_old = max(t for t, f in heard if f["src"] == old and t <= e.time)
        first_new = min(t for t, f in heard if f["src"] == new and t > last_old)
        gap = float(e.detail["gap_seconds"])
        if e.detail["reason"] in ("resigned", "silent"):
            assert gap == pytest.approx(first_new - last_old, abs=2e-6)
        else:
            assert gap == 0.0
    resigned, silent = changes[0], changes[2]
    # RFC 5798: a backup of priority 100 waits its skew time after a resignation, its
    # master-down interval after silence; within a scheduling margin
    skew = (256 - 100) / 256 * interval
    assert skew - 0.05 <= float(resigned.detail["gap_seconds"]) <= skew + 0.25
    down = 3 * interval + skew
    assert down - 0.05 <= float(silent.detail["gap_seconds"]) <= down + 0.25
