"""The live exporter against real keepalived: the issue's acceptance list, end to end.

Every exporter runs where a user would run it: inside a namespace of the lab (the monitor port,
which hears every node even in a partition, or a node), started with `Lab.exec_in`, so the lab
stops it by PID whatever the test did, and serves on that namespace's own loopback. It is read
with curl through `ip netns exec`, as are Prometheus (inside the monitor namespace too) and the
status page in headless Chromium. Timing bounds are the issue's own: the new master within
Master_Down_Interval + 0.5 s of a crash, split-brain within 2 x Master_Down_Interval of a
partition, gone a few advert intervals after it heals; each measured per VRID, from the moment
the fault was injected to the scrape that showed it.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lab import Flavour, Instance, Lab, double_master, unavailable, wait_for
from lab import prometheus as prom
from lab.addressing import host_ipv4, node_host
from lab.exporter import PORT, NsExporter, Scrape, key
from tests import browser
from tests.lab_fixtures import MakeLab

POLL = 0.05  # seconds between scrapes while waiting for something to show
MDI_MARGIN = 0.5  # the allowance over Master_Down_Interval for a crash to show
HEAL_INTERVALS = 4  # "a few advert intervals" for split-brain to clear after a partition heals
LATE_MARGIN = 0.25  # over one advert interval, for an exporter started late to know the master

# One entry per flavour of the issue; their VRIDs and addresses do not overlap, so one lab can
# hold them all and each fault is seen on every flavour at once.
FLAVOURS: dict[str, list[Instance]] = {
    "v2-pass": [Instance(51, Flavour.V2_PASS)],
    "v2-ah": [Instance(55, Flavour.V2_AH)],
    "v3-0.5s": [Instance(52, Flavour.V3, advert_int=0.5)],
    "v3-v6": [Instance(54, Flavour.V3_V6)],
    "v3-unicast": [Instance(53, Flavour.V3_UNICAST)],
    "double-master": double_master(10, 11),
}
ALL = [inst for group in FLAVOURS.values() for inst in group]
# In a partition the isolated peer cannot answer ARP, so whether the monitor still hears the
# backup's unicast adverts depends on the backup's neighbour cache, not on the exporter.
MULTICAST = [inst for inst in ALL if inst.flavour is not Flavour.V3_UNICAST]


def skip_unless_live(*tools: str) -> None:
    """Skips unless this machine can run a lab and has curl (and `tools`)."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"keepalived lab unavailable: {reason}")
    missing = [tool for tool in ("curl", *tools) if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


@pytest.fixture
def live_host(lab_host: None) -> None:
    skip_unless_live()


# -- instances and addresses -------------------------------------------------------------------


def master_node(inst: Instance) -> int:
    return max(inst.priorities, key=lambda node: inst.priorities[node])


def backup_node(inst: Instance) -> int:
    return min(inst.priorities, key=lambda node: inst.priorities[node])


def source(lab: Lab, inst: Instance, node: int) -> str:
    """The source address of the node's adverts: its IPv4 address, or for IPv6 its link-local."""
    if not inst.flavour.ipv6:
        return host_ipv4(node_host(node), inst.segment)
    (link_local,) = [a for a in lab.vips(node, inst.segment) if a.startswith("fe80:")]
    return link_local


def first_seen(
    exporter: NsExporter,
    conditions: Mapping[int, Callable[[Scrape], bool]],
    since: float,
    timeout: float,
    *,
    every: float = POLL,
    linger: float = 0.0,
    check: Callable[[Scrape], None] | None = None,
) -> tuple[dict[int, float], Scrape]:
    """Scrapes every `every` s until each condition has held once (then `linger` s more), or
    `timeout` s after `since`; returns the seconds from `since` to the end of the first scrape
    that showed each, and the last scrape. `check` sees every scrape."""
    seen: dict[int, float] = {}
    done_at = math.inf
    while True:
        started = time.monotonic()
        scrape = exporter.scrape()
        now = time.monotonic()
        if check is not None:
            check(scrape)
        for name, condition in conditions.items():
            if name not in seen and condition(scrape):
                seen[name] = now - since
        if len(seen) == len(conditions):
            done_at = min(done_at, now)
        if now >= done_at + linger or now - since > timeout:
            return seen, scrape
        time.sleep(max(0.0, started + every - time.monotonic()))


def converge(lab: Lab, instances: Sequence[Instance], exporters: Sequence[NsExporter]) -> None:
    """Waits until the lab's VIPs and every exporter agree on each VRID's designated master."""
    for inst in instances:
        wait_for(
            partial(sole_holder, lab, inst),
            10,
            what=f"n{master_node(inst)} sole VIP holder of VRID {inst.vrid}",
        )
    for exporter in exporters:
        wait_for(
            partial(shows_masters, lab, instances, exporter),
            5,
            what=f"exporter in {exporter.ns} showing every master",
        )


def sole_holder(lab: Lab, inst: Instance) -> bool:
    return lab.master_of(inst.vrid) == master_node(inst)


def shows_masters(lab: Lab, instances: Sequence[Instance], exporter: NsExporter) -> bool:
    scrape = exporter.scrape()
    return all(scrape.masters(inst) == {source(lab, inst, master_node(inst))} for inst in instances)


def assert_within(seen: Mapping[int, float], bounds: Mapping[int, float], what: str) -> None:
    """Every VRID of `bounds` was seen, each no later than its bound (seconds)."""
    late = [
        f"VRID {vrid} "
        + (f"after {seen[vrid]:.2f} s" if vrid in seen else "never")
        + f" (bound {bound:.2f} s)"
        for vrid, bound in sorted(bounds.items())
        if seen.get(vrid, math.inf) > bound
    ]
    assert not late, f"{what}: " + "; ".join(late)


# -- 1, 5, 6: a converged cluster seen from the monitor and from the nodes ------------------


@dataclass
class Cluster:
    lab: Lab
    monitor: NsExporter
    nodes: dict[int, NsExporter] = field(default_factory=dict)


@pytest.fixture(scope="class")
def cluster() -> Iterator[Cluster]:
    """Every flavour in one lab of two nodes, an exporter in the monitor and in each node."""
    skip_unless_live()
    with Lab(ALL) as lab:
        lab.start_all()
        found = Cluster(lab, NsExporter(lab, "mon"), {n: NsExporter(lab, n) for n in lab.nodes})
        exporters = [found.monitor, *found.nodes.values()]
        for exporter in exporters:
            exporter.wait_ready()
        converge(lab, ALL, exporters)
        yield found
    assert not lab.leftovers()


@pytest.mark.lab
class TestConvergedCluster:
    @pytest.mark.parametrize("case", list(FLAVOURS))
    def test_monitor_and_nodes_show_master_priority_interval_and_vips(
        self, cluster: Cluster, case: str
    ) -> None:
        lab = cluster.lab
        monitor = cluster.monitor.scrape()
        nodes = {node: exporter.scrape() for node, exporter in cluster.nodes.items()}
        for inst in FLAVOURS[case]:
            master = master_node(inst)
            address = source(lab, inst, master)
            vips = set(inst.vip_addresses)
            assert lab.master_of(inst.vrid) == master  # what keepalived did: the VIP holder
            assert monitor.masters(inst) == {address}
            assert monitor.of("vrrp_masters", inst) == 1
            assert monitor.of("vrrp_router_master", inst, address=address) == 1
            assert (
                monitor.of("vrrp_router_priority", inst, address=address)
                == (inst.priorities[master])
            )
            interval = monitor.of("vrrp_router_advert_interval_seconds", inst, address=address)
            assert interval == inst.advert_int
            assert monitor.of("vrrp_split_brain", inst) == 0
            assert monitor.of("vrrp_master_transitions_total", inst) == 0  # first master only
            mismatch = {
                ls["field"]: v for ls, v in monitor.find("vrrp_config_mismatch", **key(inst))
            }
            assert mismatch and not any(mismatch.values()), mismatch
            # the monitor holds no VIP: every VIP is listed, none as held
            assert {ls["vip"]: v for ls, v in monitor.find("vrrp_local_vip", **key(inst))} == (
                dict.fromkeys(vips, 0)
            )
            assert monitor.of("vrrp_local_master", inst) == 0
            for node, scrape in nodes.items():
                here = int(node == master)
                where = f"exporter on n{node}, VRID {inst.vrid}"
                assert scrape.masters(inst) == {address}, where
                held = {ls["vip"]: v for ls, v in scrape.find("vrrp_local_vip", **key(inst))}
                assert held == dict.fromkeys(vips, here), where
                assert scrape.of("vrrp_local_master", inst) == here, where
                assert scrape.of("vrrp_duplicate_vip", inst) == 0, where
                assert scrape.of("vrrp_orphan_vip", inst) == 0, where

    def test_unicast_adverts_are_seen_on_both_nodes(self, cluster: Cluster) -> None:
        (inst,) = FLAVOURS["v3-unicast"]
        master, backup = master_node(inst), backup_node(inst)
        address = source(cluster.lab, inst, master)
        adverts = "vrrp_router_advertisements_total"
        before = {
            n: e.scrape().of(adverts, inst, address=address) for n, e in cluster.nodes.items()
        }
        time.sleep(1.5 * inst.advert_int)  # at least one more advert
        for node, exporter in cluster.nodes.items():
            scrape = exporter.scrape()
            where = f"exporter on n{node}"
            assert scrape.masters(inst) == {address}, where
            count = scrape.of(adverts, inst, address=address)
            assert count is not None, where
            assert count > (before[node] or 0), f"{where}: no new adverts from {address}"
        # the master's exporter hears its own outgoing adverts and knows it is the master
        assert cluster.nodes[master].scrape().of("vrrp_local_master", inst) == 1
        assert cluster.nodes[backup].scrape().of("vrrp_local_master", inst) == 0

    def test_exporter_started_late_knows_every_master_within_one_interval(
        self, cluster: Cluster
    ) -> None:
        lab = cluster.lab
        late = NsExporter(lab, "mon", PORT + 1)
        ready = late.wait_ready()
        expected = {inst.vrid: {source(lab, inst, master_node(inst))} for inst in ALL}
        conditions = {
            inst.vrid: lambda s, inst=inst: s.masters(inst) == expected[inst.vrid] for inst in ALL
        }
        seen, _ = first_seen(late, conditions, ready, timeout=5, every=0)
        bounds = {inst.vrid: inst.advert_int + LATE_MARGIN for inst in ALL}
        assert_within(seen, bounds, "master known too late after ready")
        started = time.monotonic()
        assert late.stop() == 0
        assert time.monotonic() - started < 2, "SIGTERM took too long"


# -- 2, 3: the master crashes, or stops cleanly -----------------------------------------------


def start_cluster(make_lab: MakeLab, instances: Sequence[Instance]) -> tuple[Lab, NsExporter]:
    lab = make_lab(instances)
    lab.start_all()
    monitor = NsExporter(lab, "mon")
    monitor.wait_ready()
    converge(lab, instances, [monitor])
    return lab, monitor


@pytest.mark.lab
@pytest.mark.usefixtures("live_host")
def test_sigkill_of_the_master_shows_new_master_within_master_down_interval(
    make_lab: MakeLab,
) -> None:
    lab, monitor = start_cluster(make_lab, ALL)
    moving = [inst for inst in ALL if master_node(inst) == 1]
    before = monitor.scrape()
    transitions = {inst.vrid: before.of("vrrp_master_transitions_total", inst) for inst in ALL}
    new = {inst.vrid: {source(lab, inst, 2)} for inst in ALL}
    conditions = {
        inst.vrid: lambda s, inst=inst: s.masters(inst) == new[inst.vrid] for inst in moving
    }
    # n2 is the backup of every VRID n1 masters; its Master_Down_Interval is the bound
    bounds = {
        inst.vrid: inst.master_down_interval(backup_node(inst)) + MDI_MARGIN for inst in moving
    }

    killed = time.monotonic()
    lab.kill(1, signal.SIGKILL)
    seen, after = first_seen(monitor, conditions, killed, timeout=max(bounds.values()) + 2)

    assert_within(seen, bounds, "new master shown too late after SIGKILL")
    for inst in ALL:
        assert after.masters(inst) == new[inst.vrid], inst.name
        assert after.of("vrrp_masters", inst) == 1, inst.name
        old = transitions[inst.vrid] or 0
        assert after.of("vrrp_master_transitions_total", inst) == (
            old + 1 if inst in moving else old
        ), inst.name
        assert after.of("vrrp_split_brain_events_total", inst) == 0, inst.name  # a crash is not


@pytest.mark.lab
@pytest.mark.usefixtures("live_host")
def test_sigterm_of_the_master_resigns_and_restart_preempts_without_split_brain(
    make_lab: MakeLab,
) -> None:
    lab, monitor = start_cluster(make_lab, ALL)
    moving = [inst for inst in ALL if master_node(inst) == 1]
    old = {inst.vrid: source(lab, inst, 1) for inst in moving}
    new = {inst.vrid: source(lab, inst, 2) for inst in moving}

    def resigned_and_taken_over(s: Scrape, inst: Instance) -> bool:
        resigned = s.of("vrrp_router_resignations_total", inst, address=old[inst.vrid])
        return (resigned or 0) >= 1 and s.masters(inst) == {new[inst.vrid]}

    conditions = {
        inst.vrid: lambda s, inst=inst: resigned_and_taken_over(s, inst) for inst in moving
    }
    bounds = {
        inst.vrid: inst.master_down_interval(backup_node(inst)) + MDI_MARGIN for inst in moving
    }
    killed_wall, killed = time.time(), time.monotonic()
    lab.kill(1, signal.SIGTERM)  # returns once keepalived has exited
    seen, after = first_seen(monitor, conditions, killed, timeout=max(bounds.values()) + 2)
    assert_within(seen, bounds, "resignation/takeover shown too late")
    for inst in moving:
        # On the wire, by the exporter's capture timestamps: the old master's last advert is its
        # priority-0 one, and the backup's first advert followed it by the skew time (0.3-0.6 s
        # here), not by Master_Down_Interval as after a silent master: the resignation handed over.
        resigned_at = after.of(
            "vrrp_router_last_advert_timestamp_seconds", inst, address=old[inst.vrid]
        )
        taken_over_at = after.of("vrrp_last_transition_timestamp_seconds", inst)
        assert resigned_at is not None and taken_over_at is not None, inst.name
        mdi = inst.master_down_interval(backup_node(inst))
        assert killed_wall <= resigned_at < taken_over_at, inst.name
        gap = taken_over_at - resigned_at
        assert gap < mdi, f"{inst.name}: takeover {gap:.2f} s after the resignation, MDI {mdi:.2f}"
        assert taken_over_at - killed_wall < mdi, f"{inst.name}: takeover not before MDI"
        assert after.of("vrrp_router_priority", inst, address=old[inst.vrid]) == 0, inst.name
        assert after.of("vrrp_master_transitions_total", inst) == 1, inst.name

    # A normal preemption: the higher-priority node comes back and takes over. The old and the
    # new master overlap by at most an advert, which must never count as split-brain.
    samples: list[Scrape] = []

    def no_split_brain(s: Scrape) -> None:
        samples.append(s)
        raised = [
            (name, ls["vrid"], v)
            for name in ("vrrp_split_brain", "vrrp_split_brain_events_total")
            for ls, v in s.find(name)
            if v
        ]
        assert not raised, f"split-brain during a normal preemption: {raised}"

    back = {inst.vrid: lambda s, inst=inst: s.masters(inst) == {old[inst.vrid]} for inst in moving}
    no_split_brain(monitor.scrape())
    restarted = time.monotonic()
    lab.start(1)
    slowest = max(inst.advert_int for inst in moving)
    seen, after = first_seen(
        monitor,
        back,
        restarted,
        timeout=max(inst.master_down_interval(1) for inst in moving) + 5,
        linger=2.5 * slowest,  # past the debounce (2 intervals) of the last possible overlap
        check=no_split_brain,
    )
    assert set(seen) == set(back), f"n1 did not take back every VRID: {seen}"
    assert len(samples) >= 20, f"only {len(samples)} samples through the preemption"
    for inst in moving:
        assert lab.master_of(inst.vrid) == 1, inst.name
        assert after.of("vrrp_master_transitions_total", inst) == 2, inst.name


# -- 4, 7, 8: partition, seen by the exporter, Prometheus and a browser -----------------------


class StatusTable(HTMLParser):
    """The rows of the status page: row classes, cell texts, and badges (classes, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[set[str], list[str], list[tuple[set[str], str]]]] = []
        self._cell: list[str] | None = None
        self._spans: list[tuple[set[str], list[str]] | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = set((dict(attrs).get("class") or "").split())
        if tag == "tr":
            self.rows.append((classes, [], []))
        elif tag == "td" and self.rows:
            self._cell = []
        elif tag == "span":
            self._spans.append((classes, []) if "badge" in classes else None)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1][1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "span" and self._spans:
            badge = self._spans.pop()
            if badge is not None and self.rows:
                self.rows[-1][2].append((badge[0], "".join(badge[1]).strip()))

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        for span in self._spans:
            if span is not None:
                span[1].append(data)


def split_brain_rows(dom: str) -> set[int]:
    """VRIDs with a row marked bad that carries a SPLIT-BRAIN badge marked bad.

    The row class was "bad" and is now "row-bad" (so that row colour stays off the text);
    either counts, as in tests/test_status.py."""
    parser = StatusTable()
    parser.feed(dom)
    return {
        int(cells[2])
        for classes, cells, badges in parser.rows
        if classes & {"bad", "row-bad"}
        and len(cells) > 2
        and cells[2].isdigit()
        and any("bad" in badge and text == "SPLIT-BRAIN" for badge, text in badges)
    }


def chromium(lab: Lab, args: Sequence[str], profile: Path, out: Path, timeout: float = 60) -> int:
    """Headless Chromium in the monitor namespace, as PID 1 of a PID namespace of its own.

    Chromium's helpers (zygotes, a crash handler in a session of its own) would otherwise be
    orphaned to the lab's subreaper and linger; the namespace's init takes all of them with it
    when it exits or is killed, and `--kill-child` kills the init if `unshare` dies (the lab's
    teardown stops `unshare`, the one PID it tracks)."""
    argv = [
        *("unshare", "--pid", "--fork", "--kill-child"),
        "chromium",
        *browser.FLAGS,
        f"--user-data-dir={profile}",
        *args,
    ]
    with out.open("wb") as stdout, out.with_suffix(".stderr").open("wb") as stderr:
        proc = lab.exec_in("mon", argv, stdout=stdout, stderr=stderr)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        # SIGKILL to the namespace's init (unshare's one child) ends the namespace; unshare then
        # reaps it and exits. Killing unshare first would orphan the init to the lab's subreaper.
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        for child in children.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGKILL)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        pytest.fail(f"chromium {' '.join(args)} still running after {timeout:g} s; killed")


@pytest.mark.lab
@pytest.mark.usefixtures("live_host")
def test_partition_is_split_brain_for_exporter_prometheus_and_browser(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    skip_unless_live("prometheus", "chromium", "unshare")
    lab = make_lab(MULTICAST)
    lab.start_all()
    monitor = NsExporter(lab, "mon")
    targets = {"ka-exporter": [f"127.0.0.1:{PORT}"]}
    with prom.Prometheus(targets, port=9090, ns=lab.ns("mon")) as prometheus:
        monitor.wait_ready()
        converge(lab, MULTICAST, [monitor])
        vrids = {inst.vrid for inst in MULTICAST}
        assert not [ls for ls, v in monitor.scrape().find("vrrp_split_brain") if v]

        split = {
            inst.vrid: lambda s, inst=inst: s.of("vrrp_split_brain", inst) == 1
            for inst in MULTICAST
        }
        bounds = {inst.vrid: 2 * inst.master_down_interval(backup_node(inst)) for inst in MULTICAST}
        partitioned = time.monotonic()
        lab.partition()
        seen, after = first_seen(monitor, split, partitioned, timeout=max(bounds.values()) + 2)
        assert_within(seen, bounds, "split-brain shown too late")
        for inst in MULTICAST:
            assert lab.holders(inst.vrid) == {1, 2}, inst.name  # it really is split
            assert after.of("vrrp_masters", inst) == 2, inst.name
            assert after.of("vrrp_split_brain_events_total", inst) == 1, inst.name

        # 7: Prometheus, scraping the monitor's exporter, has the split-brain of every VRID
        def in_prometheus() -> bool:
            found = prometheus.query("vrrp_split_brain == 1")
            return {int(r["metric"]["vrid"]) for r in found} >= vrids

        wait_for(in_prometheus, 15, what="every VRID's split-brain in Prometheus")
        assert prometheus.targets_up()
        result = prometheus.query("max(vrrp_split_brain) == 1")
        assert len(result) == 1 and result[0]["value"][1] == "1", result

        # 8: the status page, rendered by a real browser, has a bad SPLIT-BRAIN row per VRID
        url = f"http://127.0.0.1:{PORT}/"
        dom = tmp_path / "status.html"
        code = chromium(lab, ["--dump-dom", url], tmp_path / "profile-dom", dom)
        assert code == 0, dom.with_suffix(".stderr").read_text(errors="replace")[-2000:]
        assert split_brain_rows(dom.read_text()) >= vrids, dom.read_text()
        png = tmp_path / "status.png"
        args = [f"--screenshot={png}", "--window-size=1400,700", url]
        code = chromium(lab, args, tmp_path / "profile-png", tmp_path / "screenshot.log")
        assert code == 0, (tmp_path / "screenshot.stderr").read_text(errors="replace")[-2000:]
        image = png.read_bytes()
        assert image[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", image[16:24]) == (1400, 700)
        assert len(image) > 10_000, f"a {len(image)}-byte screenshot is blank"

        # 4: the split-brain ends a few advert intervals after the partition heals
        healed_conditions = {
            inst.vrid: lambda s, inst=inst: s.of("vrrp_split_brain", inst) == 0
            for inst in MULTICAST
        }
        heal_bounds = {inst.vrid: HEAL_INTERVALS * inst.advert_int for inst in MULTICAST}
        healed = time.monotonic()
        lab.heal()
        seen, _ = first_seen(
            monitor, healed_conditions, healed, timeout=max(heal_bounds.values()) + 2
        )
        assert_within(seen, heal_bounds, "split-brain still shown after heal")
