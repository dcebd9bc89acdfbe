"""`analyze` on the reference captures: the model's events must tell what happened in the lab
(vrrp.md §0 and the timeline in §4.3), and the JSON/table output must keep its documented shape."""

from __future__ import annotations

import io
import ipaddress
import json
import re
import struct
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap

from ka_exporter.analyze import Analysis, replay, to_html, to_json, to_table, use_colour
from ka_exporter.model import Event, EventType
from ka_exporter.page import wall
from ka_exporter.status import Names
from tests import segments
from tests.browser import browse
from tests.frames import advert, pcap_bytes, scapy_fields
from tests.pcapng import epb, idb, shb

DATA = Path(__file__).parent / "data"
GOLDEN = Path(__file__).parent / "golden"
CAPTURES = ("vrrp-all", "vrrp-prio-change", "vrrp-strict-vmac-fault")

NODE1 = {"ipv4": "192.0.2.11", "ipv6": "fe80::f8f6:94ff:fe7b:2112"}
NODE2 = {"ipv4": "192.0.2.12", "ipv6": "fe80::c4dc:51ff:fec8:42a8"}
ALL_VRIDS = {51: "ipv4", 52: "ipv4", 53: "ipv4", 54: "ipv6", 55: "ipv4"}
# Skew_Time of the prio-100 backup after a priority-0 advert, with some slack (vrrp.md §1.3)
TAKEOVER = {51: 0.7, 52: 0.35, 53: 0.7, 54: 0.7, 55: 0.7}


def replay_bytes(data: bytes) -> Analysis:
    return replay(io.BytesIO(data))


@pytest.fixture(scope="module")
def analyses() -> dict[str, Analysis]:
    return {name: replay_bytes((DATA / f"{name}.pcap").read_bytes()) for name in CAPTURES}


def offset(a: Analysis, e: Event) -> float:
    return e.time - a.start


def vrid_events(a: Analysis, vrid: int, *kinds: EventType) -> list[Event]:
    return [e for e in a.events if e.key.vrid == vrid and (not kinds or e.type in kinds)]


def pcap_prefix(path: Path, seconds: float) -> bytes:
    """The records of a little-endian pcap file up to `seconds` after its first packet."""
    data = path.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1"
    pos, first = 24, None
    while pos < len(data):
        sec, usec, caplen, _ = struct.unpack_from("<IIII", data, pos)
        t = sec + usec / 1e6
        first = t if first is None else first
        if t - first > seconds:
            break
        pos += 16 + caplen
    return data[:pos]


# --- vrrp-all.pcap: five instances, split brain, heal, graceful stops ------------------------


def test_vrrp_all_sees_every_instance_and_rejects_nothing(analyses: dict[str, Analysis]) -> None:
    a = analyses["vrrp-all"]
    assert (a.packets, a.rejects, a.untracked) == (751, {}, 0)
    assert {v.key.vrid: v.key.family for v in a.vrids} == ALL_VRIDS
    for v in a.vrids:
        family = v.key.family
        assert {r.address for r in v.routers} == {NODE1[family], NODE2[family]}
        # the capture ends right after node 2's priority-0 advert
        assert (v.masters, v.split_brain, v.split_brain_events) == ((), False, 1)
    assert EventType.MASTER_LOST not in {e.type for e in a.events}


@pytest.mark.parametrize("vrid", sorted(ALL_VRIDS))
def test_vrrp_all_one_split_brain_episode_per_vrid(
    analyses: dict[str, Analysis], vrid: int
) -> None:
    a = analyses["vrrp-all"]
    family = ALL_VRIDS[vrid]
    (start,) = vrid_events(a, vrid, EventType.SPLIT_BRAIN_START)
    (end,) = vrid_events(a, vrid, EventType.SPLIT_BRAIN_END)
    assert 84 < offset(a, start) < offset(a, end) < 100
    # ports isolated at 84.92 s; the backup starts advertising after its master-down interval
    since = float(start.detail["since"]) - a.start
    assert 84.92 < since < offset(a, start)
    assert set(start.addresses) == {NODE1[family], NODE2[family]}
    assert len(end.addresses) == 1


@pytest.mark.parametrize("vrid", sorted(ALL_VRIDS))
def test_vrrp_all_graceful_stops(analyses: dict[str, Analysis], vrid: int) -> None:
    a = analyses["vrrp-all"]
    family = ALL_VRIDS[vrid]
    n1, n2 = NODE1[family], NODE2[family]
    resigned = vrid_events(a, vrid, EventType.MASTER_RESIGNED)
    assert [e.addresses for e in resigned] == [(n1,), (n2,)]
    assert offset(a, resigned[0]) == pytest.approx(102.74, abs=0.01)
    assert offset(a, resigned[1]) == pytest.approx(117.36, abs=0.01)
    after = [e for e in vrid_events(a, vrid, EventType.MASTER_CHANGED) if e.time > resigned[0].time]
    (takeover,) = after
    assert takeover.addresses == (n2, n1)
    assert 0 < takeover.time - resigned[0].time < TAKEOVER[vrid]
    (router1,) = [
        r for r in next(v for v in a.vrids if v.key.vrid == vrid).routers if r.address == n1
    ]
    assert (router1.priority, router1.resignations) == (0, 1)


# --- vrrp-prio-change.pcap -------------------------------------------------------------------


def test_prio_change_reports_both_changes_then_the_resignation(
    analyses: dict[str, Analysis],
) -> None:
    a = analyses["vrrp-prio-change"]
    story = [
        (e.type, e.detail)
        for e in a.events
        if e.type in (EventType.PRIORITY_CHANGED, EventType.MASTER_RESIGNED)
    ]
    assert story == [
        (EventType.PRIORITY_CHANGED, {"old": 200, "new": 140}),
        (EventType.PRIORITY_CHANGED, {"old": 140, "new": 200}),
        (EventType.MASTER_RESIGNED, {}),
    ]
    (v,) = a.vrids
    assert (v.key.vrid, v.transitions, v.split_brain_events) == (71, 0, 0)
    assert [(r.address, r.priority, r.adverts, r.resignations) for r in v.routers] == [
        ("192.0.2.11", 0, 10, 1)
    ]


# --- vrrp-strict-vmac-fault.pcap -------------------------------------------------------------


def test_fault_resignations_and_failover_and_back(analyses: dict[str, Analysis]) -> None:
    a = analyses["vrrp-strict-vmac-fault"]
    n1, n2 = NODE1["ipv4"], NODE2["ipv4"]
    (v,) = a.vrids
    routers = {r.address: r for r in v.routers}
    assert routers[n1].resignations == 3  # two back to back on FAULT, one on stop
    resigned = [e for e in a.events if e.type == EventType.MASTER_RESIGNED]
    assert [e.addresses for e in resigned] == [(n1,), (n1,)]  # one per episode
    assert resigned[1].time - resigned[0].time > 5
    masters = [
        e.addresses
        for e in a.events
        if e.type in (EventType.MASTER_ELECTED, EventType.MASTER_CHANGED)
    ]
    assert masters == [(n1,), (n2, n1), (n1, n2)]
    takeover = next(e for e in a.events if e.type == EventType.MASTER_CHANGED)
    assert 0 < takeover.time - resigned[0].time < 0.7  # Skew_Time of prio 100 @1 s: 0.61 s
    assert EventType.SPLIT_BRAIN_START not in {e.type for e in a.events}
    assert (v.split_brain_events, v.transitions) == (0, 2)
    assert a.rejects == {}  # its 25 frames besides VRRP are gratuitous ARPs: announcements
    announced = [e for e in a.events if e.type == EventType.VIP_ANNOUNCED]
    assert [(e.addresses, e.detail["vip"]) for e in announced] == [
        (("00:00:5e:00:01:3d",), "192.0.2.61")  # use_vmac: the virtual MAC announces
    ] * 2
    assert all(0 <= float(e.detail["after_seconds"]) < 0.01 for e in announced)
    assert EventType.VIP_CONFLICT_START not in {e.type for e in a.events}


# --- JSON ------------------------------------------------------------------------------------

VRID_KEYS = {
    "carp_collision",
    "interface",
    "family",
    "vrid",
    "masters",
    "split_brain",
    "split_brain_events",
    "master_transitions",
    "config_mismatch",
    "routers",
    "timeline",
}
ROUTER_KEYS = {
    "address",
    "priority",
    "adverts",
    "advert_interval_seconds",
    "version",
    "auth_type",
    "auth_fingerprint",
    "ah",
    "checksum_variant",
    "vips",
    "resignations",
    "first_seen",
    "last_seen",
}
EVENT_KEYS = {"time", "offset", "moment", "type", "interface", "family", "vrid", "addresses"}
SPAN_KEYS = {"kind", "start", "end", "addresses"}
DETAIL_KEYS = {
    "master_changed": {"reason", "gap_seconds", "old_priority", "new_priority"},
    "master_elected": {"reason"},
    "master_lost": {"reason"},
    "split_brain_start": {"since"},
    "priority_changed": {"old", "new"},
    "config_mismatch_start": {"field"},
    "config_mismatch_end": {"field"},
    "vip_announced": {"vip", "after_seconds"},
}


@pytest.mark.parametrize("name", CAPTURES)
def test_json_has_the_documented_keys(analyses: dict[str, Analysis], name: str) -> None:
    doc = json.loads(to_json(analyses[name]))
    top = {"packets", "start", "end", "vrids", "events", "rejects", "untracked_adverts", "carp"}
    top.add("vip_claims")
    assert set(doc) == top
    assert all(isinstance(n, int) for n in doc["rejects"].values())
    assert doc["vrids"] and doc["events"]
    for v in doc["vrids"]:
        assert set(v) == VRID_KEYS
        assert v["family"] in ("ipv4", "ipv6") and 1 <= v["vrid"] <= 255
        for s in v["timeline"]:
            assert SPAN_KEYS <= set(s) <= SPAN_KEYS | {"reason"}
            assert s["kind"] in ("master", "none", "split")
        ends = [s["end"] for s in v["timeline"]]
        assert None not in ends[:-1]  # only the last span may still last
        for r in v["routers"]:
            assert set(r) == ROUTER_KEYS
            assert r["version"] in (2, 3) and r["advert_interval_seconds"] > 0
            assert isinstance(r["vips"], list) and r["vips"]
    for e in doc["events"]:
        optional = DETAIL_KEYS.get(e["type"], set()) | {"returning", "gap_seconds", "old_priority"}
        assert EVENT_KEYS <= set(e) <= EVENT_KEYS | optional
        assert DETAIL_KEYS.get(e["type"], set()) <= set(e)
        assert e["offset"] == pytest.approx(e["time"] - doc["start"], abs=1e-6)
    times = [e["time"] for e in doc["events"]]
    assert times == sorted(times)
    moments = [e["moment"] for e in doc["events"]]
    assert moments[0] == 0 and all(b - a in (0, 1) for a, b in pairwise(moments))


def test_json_auth_of_each_instance(analyses: dict[str, Analysis]) -> None:
    doc = json.loads(to_json(analyses["vrrp-all"]))
    auth = {
        v["vrid"]: {
            (r["auth_type"], r["ah"], r["checksum_variant"], r["version"]) for r in v["routers"]
        }
        for v in doc["vrids"]
    }
    assert auth == {
        51: {(1, False, "message", 2)},
        52: {(0, False, "pseudo_header", 3)},
        53: {(0, False, "pseudo_header", 3)},
        54: {(0, False, "pseudo_header", 3)},
        55: {(2, True, "message", 2)},
    }
    prints = {r["auth_fingerprint"] for v in doc["vrids"] for r in v["routers"]}
    # one PASS password on both nodes: one print; no password anywhere in the output
    assert len(prints - {None}) == 1
    assert "secret12" not in to_json(analyses["vrrp-all"])


def normalised(doc: dict[str, Any]) -> dict[str, Any]:
    """auth_fingerprint is keyed per process: keep only which routers share a print."""
    names: dict[str, str] = {}
    for v in doc["vrids"]:
        for r in v["routers"]:
            if r["auth_fingerprint"] is not None:
                fingerprint = r["auth_fingerprint"]
                r["auth_fingerprint"] = names.setdefault(fingerprint, f"<print {len(names) + 1}>")
    return doc


@pytest.mark.parametrize("name", CAPTURES)
def test_json_matches_golden(
    analyses: dict[str, Analysis], name: str, request: pytest.FixtureRequest
) -> None:
    doc = normalised(json.loads(to_json(analyses[name])))
    golden = GOLDEN / f"{name}.json"
    if request.config.getoption("update_golden"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(json.dumps(doc, indent=2) + "\n")
    assert golden.exists(), f"{golden} missing: run pytest --update-golden"
    assert doc == json.loads(golden.read_text()), f"differs from {golden} (--update-golden)"


# --- table -----------------------------------------------------------------------------------


def head_state(at: str, family: str) -> str:
    n1, n2 = NODE1[family], NODE2[family]
    return {
        "node 1 master": f"master {n1}",
        "split brain": f"SPLIT-BRAIN {' + '.join(sorted((n1, n2)))}",
        "node 2 master": f"master {n2}",
        "end": "no master",
    }[at]


@pytest.mark.parametrize(
    ("seconds", "at"),
    [(60.0, "node 1 master"), (91.0, "split brain"), (110.0, "node 2 master"), (200.0, "end")],
)
def test_table_names_each_vrid_its_masters_and_episodes(seconds: float, at: str) -> None:
    a = replay_bytes(pcap_prefix(DATA / "vrrp-all.pcap", seconds))
    table = to_table(a, name="vrrp-all.pcap")
    assert table.startswith(f"vrrp-all.pcap: {a.packets} packets, 0 rejected")
    for vrid, family in ALL_VRIDS.items():
        (head,) = [
            line for line in table.splitlines() if f"{family} VRID {vrid} on capture" in line
        ]
        assert head_state(at, family) in head
        episodes = 0 if at == "node 1 master" else 1
        assert f"{episodes} split-brain episodes" in head
    assert "\x1b[" not in table
    assert "\ntimeline\n" in table


def test_table_colours_only_when_asked(analyses: dict[str, Analysis]) -> None:
    a = analyses["vrrp-all"]
    assert "\x1b[" not in to_table(a)
    coloured = to_table(a, colour=True)
    assert "\x1b[31m" in coloured  # split-brain start in red
    assert coloured.count("\x1b[") % 2 == 0  # every colour is reset


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_follows_the_terminal_and_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour(Terminal())
    assert not use_colour(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(Terminal())


# --- trunks and CARP ----------------------------------------------------------------------------


def test_trunk_capture_keeps_vlans_apart_and_names_carp() -> None:
    """A mirror-port capture of a trunk: VRID 51 on two VLANs, QinQ, CARP beside."""
    doc = json.loads(to_json(replay_bytes(pcap_bytes(segments.trunk(), 1))))
    vrids = {(v.get("vlan"), v["vrid"]): v for v in doc["vrids"]}
    assert set(vrids) == {("100", 51), ("200", 51), ("300.52", 52)}
    assert vrids["100", 51]["masters"] == ["192.0.2.11"]
    assert vrids["200", 51]["masters"] == ["198.51.100.11"]
    assert not any(v["split_brain"] or v["config_mismatch"] for v in doc["vrids"])
    assert [v["carp_collision"] for v in doc["vrids"]].count(True) == 1
    assert vrids["100", 51]["carp_collision"]
    assert doc["rejects"] == {}
    carp = {(c["vlan"], c["vhid"]): c for c in doc["carp"]}
    assert set(carp) == {("100", 51), ("100", 60)}
    assert carp["100", 51]["masters"] == ["192.0.2.31"]
    (speaker,) = carp["100", 51]["speakers"]
    assert (speaker["advbase"], speaker["advskew"], speaker["adverts"]) == (1, 10, 10)
    (collision,) = [e for e in doc["events"] if "collision" in e["type"]]
    assert (collision["type"], collision["vrid"], collision["vlan"]) == (
        "collision_start",
        51,
        "100",
    )
    assert collision["addresses"] == ["192.0.2.31"]


def test_trunk_table_says_vlan_and_carp() -> None:
    table = to_table(replay_bytes(pcap_bytes(segments.trunk(), 1)))
    assert "ipv4 VRID 51 on capture VLAN 100  master 192.0.2.11" in table
    assert "ipv4 VRID 51 on capture VLAN 200  master 198.51.100.11" in table
    assert "CARP vhid 51 on the same segment" in table
    assert "ipv4 CARP vhid 60 on capture VLAN 100  master 192.0.2.32" in table


def test_pcapng_interfaces_are_segments_named_or_numbered() -> None:
    """Two interfaces of one pcapng file hear VRID 51 from two masters: two segments, whether
    the file names its interfaces or not."""
    a = bytes(advert(3, vrid=51, priority=200, src="192.0.2.11"))
    b = bytes(advert(3, vrid=51, priority=150, src="192.0.2.12"))
    for names in (("eth0", "eth1"), (None, None)):
        data = shb("<") + idb("<", 1, name=names[0]) + idb("<", 1, name=names[1])
        for i in range(5):
            data += epb("<", 0, (1000 + i) * 10**6, a) + epb("<", 1, (1000 + i) * 10**6, b)
        doc = json.loads(to_json(replay_bytes(data)))
        assert sorted((v["interface"], v["masters"][0]) for v in doc["vrids"]) == [
            (names[0] or "capture", "192.0.2.11"),
            (names[1] or "capture1", "192.0.2.12"),
        ]
        assert not any(v["split_brain"] for v in doc["vrids"])


# --- reasons and failover gaps on real keepalived captures -------------------------------------

VMAC_61 = "00:00:5e:00:01:3d"


def garp_frame(mac: str, vip: str) -> bytes:
    arp = ARP(op=1, hwsrc=mac, psrc=vip, hwdst="ff:ff:ff:ff:ff:ff", pdst=vip)
    return bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / arp)


REASONS = {
    "vrrp-all": ["split_brain_end", "preempted", *["resigned"] * 5],  # partition, heal, stops
    "vrrp-strict-vmac-fault": ["resigned", "preempted"],  # FAULT, then back from it
    "lab-preempt": ["resigned", "preempted"],  # SIGTERM, restart with the higher priority
    "lab-double-master": ["silent"],  # SIGKILL of node 1
    "lab-v3": ["silent"],
    "lab-v3-v6": ["silent"],
}


@pytest.mark.parametrize("name", REASONS)
def test_every_master_change_has_its_reason_and_a_gap_the_capture_agrees_with(name: str) -> None:
    """The gap is the old master's last advert to the new one's first, read independently by
    scapy from the same file: for a resignation the backup's skew time, for a crash its
    master-down interval, for a preemption or a split-brain's end nothing unattended."""
    with (DATA / f"{name}.pcap").open("rb") as f:
        analysis = replay(f)
    changed = [e for e in analysis.events if e.type is EventType.MASTER_CHANGED]
    assert [e.detail["reason"] for e in changed] == REASONS[name]
    heard = [
        (float(p.time), scapy_fields(bytes(p)))
        for p in rdpcap(str(DATA / f"{name}.pcap"))
        if (p.haslayer(IP) and p[IP].proto in (51, 112)) or (p.haslayer(IPv6) and p[IPv6].nh == 112)
    ]
    for e in changed:
        new, old = (ipaddress.ip_address(a) for a in e.addresses)
        mine = [(t, f) for t, f in heard if (f["vrid"], f["family"]) == (e.key.vrid, e.key.family)]
        last_old = max(t for t, f in mine if f["src"] == old and t <= e.time)
        expected = 0.0
        if e.detail["reason"] in ("silent", "resigned"):
            expected = min(t for t, f in mine if f["src"] == new and t > last_old) - last_old
        assert e.detail["gap_seconds"] == pytest.approx(expected, abs=2e-6), e


# --- times, arrows, moments, the HTML report ---------------------------------------------------


def timeline(table: str) -> list[str]:
    return table[table.index("\ntimeline\n") :].splitlines()[2:]


def test_table_times_are_wall_clock_unless_relative(analyses: dict[str, Analysis]) -> None:
    a = analyses["vrrp-prio-change"]
    first = a.events[0]
    assert timeline(to_table(a))[0].startswith(f"  {wall(first.time, ms=True)}  ipv4 VRID 71")
    relative = timeline(to_table(a, relative=True))
    assert relative[0].startswith("       +0.000s  ipv4 VRID 71")
    (resigned,) = [line for line in relative if "master_resigned" in line]
    assert resigned.startswith(f"  {a.events[-1].time - a.start:>+11.3f}s")


def test_table_master_changes_read_old_to_new_with_reason_and_gap(
    analyses: dict[str, Analysis],
) -> None:
    a = analyses["vrrp-strict-vmac-fault"]
    names = Names({"192.0.2.11": "lb-a"})
    lines = [line for line in timeline(to_table(a, names=names)) if "master_changed" in line]
    assert len(lines) == 2
    fault, back = lines
    assert "lb-a (192.0.2.11) → 192.0.2.12  resigned, gap 0." in fault
    assert fault.endswith("s, priority 0 → 100")
    assert "192.0.2.12 → lb-a (192.0.2.11)  preempted, no gap, priority 100 → 200" in back


def test_table_groups_what_happened_at_once_across_vrids(analyses: dict[str, Analysis]) -> None:
    """vrrp-all: node 1 stops, and all five VRIDs resign in the same millisecond: one block."""
    lines = timeline(to_table(analyses["vrrp-all"], relative=True))
    blocks = [i for i, line in enumerate(lines) if " events " in line and " on VRIDs " in line]
    stop = next(i for i in blocks if "5 events at once on VRIDs 51 52 53 54 55" in lines[i])
    members = lines[stop + 1 : stop + 6]
    assert all(line.startswith("         +0 ms  ") for line in members)
    assert [line.split()[5] for line in members] == ["master_resigned"] * 5
    assert "VRID 52" in lines[stop + 6] and "router_appeared" in lines[stop + 6]  # 0.3 s later
    assert not lines[stop + 6].endswith(" ms")


def report(name: str, **kwargs: object) -> str:
    with (DATA / f"{name}.pcap").open("rb") as f:
        return to_html(replay(f), f"{name}.pcap", **kwargs)  # type: ignore[arg-type]


def test_html_report_is_self_contained_and_escaped() -> None:
    page = report("vrrp-all", names=Names({"192.0.2.11": "<b>lb-a</b>"}))
    assert page.startswith("<!doctype html>")
    for external in ("<script", "<link", " src=", "url(http", "@import", 'href="http'):
        assert external not in page
    assert "<b>lb-a</b>" not in page and "&lt;b&gt;lb-a&lt;/b&gt; (192.0.2.11)" in page
    assert page.count('<svg class="strip"') == 5
    assert "secret12" not in page


def test_html_report_in_chromium(tmp_path: Path) -> None:
    """The report as a browser builds it: a strip per VRID over the whole capture (the
    partition's split-brain, node 1's stop and its gap), and every event, grouped."""
    names = Names({"192.0.2.11": "lb-a", "192.0.2.12": "lb-b"})
    dom = browse(report("vrrp-all", names=names), tmp_path, "report-vrrp-all")
    strips = re.findall(r'<svg class="strip" role="img" aria-label="([^"]*)"(.*?)</svg>', dom)
    assert len(strips) == 5
    for label, body in strips:
        kinds = re.findall(r'<rect class="span (\w+)"', body)
        assert kinds[:2] == ["master", "split"] and kinds[-2:] == ["master", "none"]
        assert "no master (resigned)" in label
    changed = re.findall(r'<tr data-type="master_changed">(.*?)</tr>', dom, re.DOTALL)
    assert len(changed) == 7 and all("→" in row for row in changed)
    assert any(
        "lb-a (192.0.2.11) → lb-b (192.0.2.12)" in r and "resigned, gap" in r for r in changed
    )
    assert '<tbody class="moment" data-size="5">' in dom  # the five resignations at once
    crash = browse(report("lab-double-master", names=names), tmp_path, "report-double-master")
    assert "silent, gap 3.6" in crash


def test_a_ucarp_capture_names_carp_and_the_collision() -> None:
    """Real ucarp beside keepalived: vhid 63 on keepalived's VRID 63, vhid 64 on its own."""
    with (DATA / "lab-ucarp.pcap").open("rb") as f:
        doc = json.loads(to_json(replay(f)))
    assert doc["rejects"] == {}
    carp = {c["vhid"]: c for c in doc["carp"]}
    assert set(carp) == {63, 64}
    assert {s["address"] for c in carp.values() for s in c["speakers"]} == {
        "192.0.2.12",
        "192.0.2.13",
    }
    assert carp[64]["speakers"][0]["advskew"] == 40
    assert [(e["type"], e["vrid"]) for e in doc["events"] if "collision" in e["type"]] == [
        ("collision_start", 63)
    ]
    assert {v["vrid"] for v in doc["vrids"]} == {63}


def test_vip_claims_of_a_capture_say_who_announced_each_vip() -> None:
    """keepalived with use_vmac: the virtual MAC announces VIP 192.0.2.61 at each takeover."""
    with (DATA / "vrrp-strict-vmac-fault.pcap").open("rb") as f:
        doc = json.loads(to_json(replay(f)))
    (claim,) = doc["vip_claims"]
    assert (claim["vip"], claim["vrid"], claim["last_mac"]) == ("192.0.2.61", 61, VMAC_61)
    assert (claim["conflict"], claim["conflicts"]) == (False, 0)
    assert [(m["mac"], m["count"]) for m in claim["macs"]] == [(VMAC_61, 25)]


def test_a_vip_two_macs_announce_in_turns_is_a_conflict_in_analyze() -> None:
    """A capture where only announcements are heard (unicast VRRP): the conflict from L2 alone."""
    a_mac, b_mac = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
    records = [
        (1000.0 + t, garp_frame(mac, "192.0.2.51"))
        for t, mac in ((0, a_mac), (0.3, b_mac), (5, a_mac), (5.3, b_mac))
    ]
    analysis = replay_bytes(pcap_bytes(records, 1))
    doc = json.loads(to_json(analysis))
    (claim,) = doc["vip_claims"]
    assert (claim["vrid"], claim["conflicts"]) == (None, 1)
    (start,) = [e for e in doc["events"] if e["type"] == "vip_conflict_start"]
    assert (start["vip"], start["addresses"], start["offset"]) == ("192.0.2.51", [a_mac, b_mac], 5)
    assert "192.0.2.51 on capture  1 conflicts" in to_table(analysis)
