"""ka-exporter against FRRouting's vrrpd: a second VRRP implementation, written independently of
keepalived, so what the exporter reads is not merely what keepalived happens to send.

FRR runs zebra and vrrpd on lab nodes (see `lab.frr`), alone or beside keepalived in one VRID;
the exporter watches from the monitor port, and tshark reads captures of the same adverts as an
oracle that shares no code with our decoder.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from lab import Flavour, Instance, Lab, frr, netns, wait_for
from lab.addressing import host_ipv4, node_host
from lab.exporter import EXPORTER, NsExporter, Scrape, key
from lab.frr import Frr
from tests.lab_fixtures import MakeLab

pytestmark = pytest.mark.lab

POLL = 0.05  # seconds between scrapes while waiting for something to show
MDI_MARGIN = 0.5  # over Master_Down_Interval, for a failover to show (as in the keepalived tests)
CONVERGE = 10.0  # seconds for routers and exporter to settle after a start
# vrrpd's interval is configured in ms, sent in cs: two intervals check the conversion
V4 = Instance(61, Flavour.V3, {1: 200, 2: 100}, advert_int=0.2)
V6 = Instance(62, Flavour.V3_V6, {1: 100, 2: 200}, advert_int=0.3)
TSHARK = shutil.which("tshark")

MakeFrr = Callable[[Lab, int, Sequence[Instance]], Frr]


@pytest.fixture
def frr_host(lab_host: None) -> None:
    """Skips unless FRR's vrrpd and curl (to scrape the exporter) are installed."""
    reason = frr.unavailable()
    if reason is not None:
        pytest.skip(f"FRR unavailable: {reason}")
    if shutil.which("curl") is None:
        pytest.skip("not installed: curl")


@pytest.fixture
def make_frr(frr_host: None, make_lab: MakeLab) -> Iterator[MakeFrr]:
    """`make_frr(lab, node, instances)` returns FRR started on the node. Torn down before the
    lab (this fixture depends on `make_lab`); fails the test if anything of it survived."""
    routers: list[Frr] = []

    def make(lab: Lab, node: int, instances: Sequence[Instance]) -> Frr:
        router = Frr(lab, node, instances)
        routers.append(router)
        return router.start()

    yield make
    problems: list[str] = []
    for router in reversed(routers):
        try:
            router.close()
        except Exception as exc:  # report every router, not just the first failure
            problems.append(f"n{router.node}: {exc}")
        problems += [f"n{router.node} left behind {item}" for item in router.leftovers()]
    assert not problems, "; ".join(problems)


def master_node(inst: Instance) -> int:
    return max(inst.priorities, key=lambda node: inst.priorities[node])


def backup_node(inst: Instance) -> int:
    return min(inst.priorities, key=lambda node: inst.priorities[node])


def keepalived_source(inst: Instance, node: int) -> str:
    return host_ipv4(node_host(node), inst.segment)


def watch(
    exporter: NsExporter,
    done: Callable[[Scrape], bool],
    timeout: float,
    *,
    since: float | None = None,
    check: Callable[[Scrape], None] | None = None,
) -> tuple[float, Scrape]:
    """Scrapes every POLL s until `done`; returns the seconds from `since` (default: now) to the
    end of the scrape that showed it, and that scrape. `check` sees every scrape."""
    start = time.monotonic() if since is None else since
    while True:
        scrape = exporter.scrape()
        now = time.monotonic()
        if check is not None:
            check(scrape)
        if done(scrape):
            return now - start, scrape
        if now - start > timeout:
            raise AssertionError(f"not shown within {timeout:g} s; last scrape: {scrape.samples}")
        time.sleep(POLL)


def no_split_brain(scrape: Scrape) -> None:
    raised = [
        (name, ls["vrid"], v)
        for name in ("vrrp_split_brain", "vrrp_split_brain_events_total")
        for ls, v in scrape.find(name)
        if v
    ]
    assert not raised, f"split-brain: {raised}"


def assert_clean(scrape: Scrape) -> None:
    """Nothing rejected, nothing untracked: the exporter understood every advert it heard."""
    rejected = [(ls, v) for ls, v in scrape.find("vrrp_packets_rejected_total") if v]
    assert not rejected, rejected
    untracked = [(ls, v) for ls, v in scrape.find("vrrp_untracked_advertisements_total") if v]
    assert not untracked, untracked


def assert_sole_master(scrape: Scrape, inst: Instance, address: str, priority: int) -> None:
    """`address` is the VRID's one master, with its priority and interval, and the VRID is
    healthy: no split-brain, no disagreement between its routers."""
    assert scrape.masters(inst) == {address}, inst.name
    assert scrape.of("vrrp_masters", inst) == 1, inst.name
    assert scrape.of("vrrp_router_master", inst, address=address) == 1, inst.name
    assert scrape.of("vrrp_router_priority", inst, address=address) == priority, inst.name
    interval = scrape.of("vrrp_router_advert_interval_seconds", inst, address=address)
    assert interval == inst.advert_int, inst.name
    assert scrape.of("vrrp_split_brain", inst) == 0, inst.name
    assert scrape.of("vrrp_split_brain_events_total", inst) == 0, inst.name
    mismatch = {ls["field"]: v for ls, v in scrape.find("vrrp_config_mismatch", **key(inst))}
    assert mismatch and not any(mismatch.values()), (inst.name, mismatch)
    # the monitor holds no VIP, but knows every VIP from the adverts
    vips = {ls["vip"]: v for ls, v in scrape.find("vrrp_local_vip", **key(inst))}
    assert vips == dict.fromkeys(inst.vip_addresses, 0), inst.name


def members(routers: dict[int, Frr], instances: Sequence[Instance]) -> list[tuple[Instance, int]]:
    return [(i, node) for i in instances for node in sorted(set(routers) & set(i.priorities))]


def frr_views(routers: dict[int, Frr], instances: Sequence[Instance]) -> list[tuple[str, int]]:
    """(state, state transitions so far) of every FRR router in each instance."""
    views = [routers[node].router(inst) for inst, node in members(routers, instances)]
    return [(str(view["status"]), int(view["stats"]["transitions"])) for view in views]


def frr_converged(routers: dict[int, Frr], instances: Sequence[Instance]) -> bool:
    """Every FRR router says Master where it has the highest priority, Backup elsewhere."""
    return all(
        router.state(inst) == ("Master" if node == master_node(inst) else "Backup")
        for inst in instances
        for node, router in routers.items()
        if node in inst.priorities
    )


def settle(routers: dict[int, Frr], instances: Sequence[Instance]) -> None:
    """Waits until `frr_converged` holds and no FRR router has changed state for a whole
    Master_Down_Interval.

    vrrpd says Master before it can send: the macvlan of a new IPv6 master was protodown and
    gets its link-local only once up, so the first advert waits for an Adver_Timer. Meanwhile
    a backup that started first may time out too and send an advert as master before the
    higher priority reaches it; within this window any backup that has not heard the master
    changes state, which its transition count shows even between two polls."""
    window = max(inst.master_down_interval(n) for inst in instances for n in inst.priorities)
    expected = [
        "Master" if node == master_node(inst) else "Backup"
        for inst, node in members(routers, instances)
    ]
    deadline = time.monotonic() + CONVERGE
    since, seen = 0.0, None
    while True:
        now = time.monotonic()
        views = frr_views(routers, instances)
        if views != seen or [state for state, _ in views] != expected:
            since, seen = now, views
        elif now - since >= window:
            return
        if now > deadline:
            raise TimeoutError(f"FRR not settled within {CONVERGE:g} s: {views}")
        time.sleep(POLL)


# -- 1: two FRR routers, one IPv4 and one IPv6 VRID -----------------------------------------


def test_two_frr_routers_one_master_per_vrid_by_source_priority_and_interval(
    make_lab: MakeLab, make_frr: MakeFrr
) -> None:
    """n1 masters the IPv4 VRID, n2 the IPv6 one: the monitor names each master by the source
    FRR sends from, with its priority and interval, and sees nothing wrong with either VRID."""
    lab = make_lab([], nodes=2)
    monitor = NsExporter(lab, "mon")
    monitor.wait_ready()
    routers = {node: make_frr(lab, node, [V4, V6]) for node in lab.nodes}
    settle(routers, [V4, V6])
    expected = {inst.vrid: routers[master_node(inst)].source(inst) for inst in (V4, V6)}
    # v4 from the node's own address on eth0; v6 from the macvlan's link-local, not eth0's
    assert expected[V4.vrid] == host_ipv4(node_host(master_node(V4)))
    eth0 = lab.vips(master_node(V6))
    assert expected[V6.vrid].startswith("fe80:") and expected[V6.vrid] not in eth0

    def shows_masters(s: Scrape) -> bool:
        return all(s.masters(inst) == {expected[inst.vrid]} for inst in (V4, V6))

    watch(monitor, shows_masters, CONVERGE)
    time.sleep(3 * max(V4.advert_int, V6.advert_int))  # a few more adverts of each
    scrape = monitor.scrape()
    for inst in (V4, V6):
        master = master_node(inst)
        assert_sole_master(scrape, inst, expected[inst.vrid], inst.priorities[master])
    assert_clean(scrape)
    assert frr_converged(routers, [V4, V6])  # and FRR still agrees


def test_exporter_on_frr_backup_does_not_count_its_protodown_vip_as_held(
    make_lab: MakeLab, make_frr: MakeFrr
) -> None:
    """FRR keeps the VIPs configured on every router's macvlan and takes a backup's off the
    air with protodown (the macvlan has no carrier), as its documentation says: "the same
    effect as removing these addresses". An exporter on an FRR node should say so: the master
    holds the VIP, the backup does not, and nobody has a duplicate."""
    lab = make_lab([], nodes=2)
    exporters = {node: NsExporter(lab, node) for node in lab.nodes}
    for exporter in exporters.values():
        exporter.wait_ready()
    routers = {node: make_frr(lab, node, [V4, V6]) for node in lab.nodes}
    settle(routers, [V4, V6])
    expected = {inst.vrid: routers[master_node(inst)].source(inst) for inst in (V4, V6)}
    for exporter in exporters.values():
        watch(exporter, lambda s: all(s.masters(i) == {expected[i.vrid]} for i in (V4, V6)), 5)
    scrapes = {node: exporter.scrape() for node, exporter in exporters.items()}
    for inst in (V4, V6):
        for node, scrape in scrapes.items():
            where = f"exporter on n{node}, VRID {inst.vrid}"
            mastering = int(node == master_node(inst))
            assert scrape.of("vrrp_local_master", inst) == mastering, where
            # the address is there on both nodes; only the master's macvlan has a carrier
            assert inst.vip_addresses[0] in netns.addresses(lab.ns(node), frr.macvlan(inst))
            held = {ls["vip"]: v for ls, v in scrape.find("vrrp_local_vip", **key(inst))}
            assert held == dict.fromkeys(inst.vip_addresses, mastering), where
            assert scrape.of("vrrp_duplicate_vip", inst) == 0, where
            assert scrape.of("vrrp_orphan_vip", inst) == 0, where


# -- 2: FRR beside keepalived in one VRID ----------------------------------------------------

KEEPALIVED, FRR = 1, 2  # node numbers


@pytest.mark.parametrize(
    ("master", "sig"),
    # keepalived's own SIGTERM resignation is the keepalived tests' business
    [("frr", signal.SIGTERM), ("frr", signal.SIGKILL), ("keepalived", signal.SIGKILL)],
    ids=["frr-master-sigterm", "frr-master-sigkill", "ka-master-sigkill"],
)
def test_frr_beside_keepalived_fails_over_within_master_down_interval(
    make_lab: MakeLab, make_frr: MakeFrr, master: str, sig: signal.Signals
) -> None:
    """One VRRPv3 IPv4 VRID, keepalived on n1 and FRR on n2: one master, the right one; when the
    master's daemon stops (SIGTERM: priority-0 advert; SIGKILL: silence) the other
    implementation takes over and the exporter shows it within the backup's
    Master_Down_Interval; the restarted master preempts back without a split-brain."""
    high, low = 200, 100
    priorities = {KEEPALIVED: low, FRR: high} if master == "frr" else {KEEPALIVED: high, FRR: low}
    inst = Instance(63, Flavour.V3, priorities, advert_int=0.3)
    lab = make_lab([inst])  # keepalived's config; it is started on n1 only
    monitor = NsExporter(lab, "mon")
    monitor.wait_ready()
    lab.start(KEEPALIVED)
    router = make_frr(lab, FRR, [inst])
    source = {KEEPALIVED: keepalived_source(inst, KEEPALIVED), FRR: router.source(inst)}
    old, new = master_node(inst), backup_node(inst)

    def mastering() -> set[int]:
        """Who is master by the implementations' own account: keepalived holding the VIP on
        eth0 (while it runs), vrrpd saying Master (while it runs)."""
        found = lab.holders(inst.vrid)
        if router.vrrpd_running() and router.state(inst) == "Master":
            found.add(FRR)
        return found

    wait_for(lambda: mastering() == {old}, CONVERGE, what=f"n{old} master")
    watch(monitor, lambda s: s.masters(inst) == {source[old]}, CONVERGE, check=no_split_brain)
    time.sleep(2 * inst.advert_int)
    before = monitor.scrape()
    assert_sole_master(before, inst, source[old], high)
    assert_clean(before)

    stopped = time.monotonic()
    if old == FRR:
        router.stop_vrrpd(sig)
    else:
        lab.kill(KEEPALIVED, sig)
    bound = inst.master_down_interval(new) + MDI_MARGIN
    took, after = watch(
        monitor,
        lambda s: s.masters(inst) == {source[new]},
        bound + 2,
        since=stopped,
        check=no_split_brain,
    )
    assert took <= bound, f"new master shown after {took:.2f} s (bound {bound:.2f} s)"
    assert_sole_master(after, inst, source[new], low)
    transitions = before.of("vrrp_master_transitions_total", inst) or 0
    assert after.of("vrrp_master_transitions_total", inst) == transitions + 1
    resigned = after.of("vrrp_router_resignations_total", inst, address=source[old]) or 0
    assert resigned == (1 if sig == signal.SIGTERM else 0)  # a priority-0 goodbye on SIGTERM only
    assert_clean(after)
    wait_for(lambda: mastering() == {new}, CONVERGE, what=f"n{new} master")

    # the old master comes back and preempts: a normal handover, never a split-brain
    if old == FRR:
        router.start_vrrpd()
    else:
        lab.start(KEEPALIVED)
    watch(
        monitor,
        lambda s: s.masters(inst) == {source[old]},
        inst.master_down_interval(old) + CONVERGE,
        check=no_split_brain,
    )
    time.sleep(2.5 * inst.advert_int)  # past the debounce of any overlap
    final = monitor.scrape()
    assert_sole_master(final, inst, source[old], high)
    assert final.of("vrrp_master_transitions_total", inst) == transitions + 2
    assert_clean(final)
    wait_for(lambda: mastering() == {old}, CONVERGE, what=f"n{old} master again")


# -- 3: a capture of FRR's adverts, read by analyze and by tshark ------------------------------

FIELDS = (
    "frame.time_epoch",
    "eth.src",
    "ip.src",
    "ipv6.src",
    "ip.dst",
    "ipv6.dst",
    "ip.ttl",
    "ipv6.hlim",
    "vrrp.version",
    "vrrp.type",
    "vrrp.virt_rtr_id",
    "vrrp.prio",
    "vrrp.short_adver_int",
    "vrrp.ip_addr",
    "vrrp.ipv6_addr",
    "vrrp.checksum.status",
)
CHECKSUM_GOOD = "1"  # Wireshark's PROTO_CHECKSUM_E_GOOD


def tshark(path: Path, *, checksum_as_in_v2: bool = False) -> list[dict[str, str]]:
    """One dict of FIELDS per frame, as tshark prints them (lists joined with ',').

    `checksum_as_in_v2` verifies the v3 checksum over the message only (RFC 9568's reading for
    IPv4), otherwise with the pseudo-header (RFC 5798's)."""
    assert TSHARK is not None
    as_in_v2 = "TRUE" if checksum_as_in_v2 else "FALSE"
    command = [TSHARK, "-n", "-r", str(path), "-o", f"vrrp.v3_checksum_as_in_v2:{as_in_v2}"]
    command += ["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for field in FIELDS:
        command += ["-e", field]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    return [dict(zip(FIELDS, line.split("\t"), strict=True)) for line in out.stdout.splitlines()]


def analyze(path: Path) -> Any:
    """`ka-exporter analyze --format json` of the capture, run as a user would."""
    command = [EXPORTER, "analyze", str(path), "--format", "json"]
    out = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert out.returncode == 0, f"analyze exited {out.returncode}: {out.stderr[-2000:]}"
    return json.loads(out.stdout)


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (Debian package `tshark`)")
def test_capture_of_frr_adverts_analyzed_as_tshark_reads_it(
    make_lab: MakeLab, make_frr: MakeFrr, tmp_path: Path
) -> None:
    """Both FRR routers, both families, a resignation (vrrpd stopped: a priority-0 advert) and
    the backup's takeover: analyze's routers, counts, priorities, intervals, VIPs and checksum
    variant are what tshark reads frame by frame."""
    lab = make_lab([], nodes=2)
    routers = {node: make_frr(lab, node, [V4, V6]) for node in lab.nodes}
    settle(routers, [V4, V6])
    resigning = routers[master_node(V4)]
    with lab.capture(tmp_path / "frr.pcap") as path:
        time.sleep(4 * V4.advert_int)
        resigning.stop_vrrpd()
        wait_for(lambda: routers[backup_node(V4)].state(V4) == "Master", CONVERGE, what="takeover")
        time.sleep(4 * V4.advert_int)
    rows = tshark(path)
    doc = analyze(path)

    # FRR's adverts as tshark reads them: VRRPv3 from the virtual MAC, TTL 255, to the group
    assert rows and all(row["vrrp.version"] == "3" and row["vrrp.type"] == "1" for row in rows)
    for row in rows:
        v4 = bool(row["ip.src"])
        inst = V4 if v4 else V6
        assert row["eth.src"] == frr.virtual_mac(inst), row
        assert row["ip.dst" if v4 else "ipv6.dst"] == ("224.0.0.18" if v4 else "ff02::12"), row
        assert row["ip.ttl" if v4 else "ipv6.hlim"] == "255", row
        assert row["vrrp.checksum.status"] == CHECKSUM_GOOD, row
    # IPv4 checksum with the pseudo-header (RFC 5798), not over the message only (RFC 9568)
    message_only = tshark(path, checksum_as_in_v2=True)
    assert all(
        (row["vrrp.checksum.status"] == CHECKSUM_GOOD) == (not row["ip.src"])
        for row in message_only
    )

    assert doc["packets"] == len(rows)
    assert doc["rejects"] == {}
    assert doc["untracked_adverts"] == 0
    from_tshark: dict[tuple[str, int, str], list[dict[str, str]]] = {}
    for row in rows:
        family = "ipv4" if row["ip.src"] else "ipv6"
        address = row["ip.src"] or row["ipv6.src"]
        from_tshark.setdefault((family, int(row["vrrp.virt_rtr_id"]), address), []).append(row)
    vrids = doc["vrids"]
    from_analyze = {
        (v["family"], v["vrid"], r["address"]): (v, r) for v in vrids for r in v["routers"]
    }
    assert set(from_analyze) == set(from_tshark)
    for name, (vrid, router) in from_analyze.items():
        frames = from_tshark[name]
        last = frames[-1]
        assert router["adverts"] == len(frames), name
        assert router["priority"] == int(last["vrrp.prio"]), name
        assert router["advert_interval_seconds"] == int(last["vrrp.short_adver_int"]) / 100, name
        vips = last["vrrp.ip_addr" if name[0] == "ipv4" else "vrrp.ipv6_addr"]
        assert router["vips"] == vips.split(","), name
        assert router["version"] == 3 and router["checksum_variant"] == "pseudo_header", name
        assert router["resignations"] == sum(f["vrrp.prio"] == "0" for f in frames), name
        assert router["first_seen"] == pytest.approx(float(frames[0]["frame.time_epoch"]), abs=1e-6)
        assert router["last_seen"] == pytest.approx(float(last["frame.time_epoch"]), abs=1e-6)
        assert vrid["split_brain"] is False and vrid["config_mismatch"] == [], name

    # and the story is the lab's: n1 resigned VRID 61 to n2, n2 mastered VRID 62 throughout
    by_vrid = {(v["family"], v["vrid"]): v for v in vrids}
    v4_new, v6_master = routers[backup_node(V4)].source(V4), routers[master_node(V6)].source(V6)
    assert by_vrid["ipv4", V4.vrid]["masters"] == [v4_new]
    assert by_vrid["ipv4", V4.vrid]["master_transitions"] == 1
    old = from_analyze["ipv4", V4.vrid, resigning.source(V4)][1]
    assert (old["priority"], old["resignations"]) == (0, 1)
    assert by_vrid["ipv6", V6.vrid]["masters"] == [v6_master]
    assert {r["address"] for r in by_vrid["ipv6", V6.vrid]["routers"]} == {v6_master}
