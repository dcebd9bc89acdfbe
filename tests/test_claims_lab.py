"""Who answers for each VIP, from the wire alone: real keepalived nodes with `unicast_peer`, and
ka-exporter on a third namespace that hears their announcements but none of their adverts.

A neutral host on a switched segment does not hear unicast VRRP; the lab's monitor port floods
like a hub, so VRRP (and AH) is dropped on the bridge toward it. What it still hears is what every
keepalived master sends to the whole segment: gratuitous ARP (IPv4) and unsolicited neighbour
advertisements (IPv6) at takeover, `garp_master_delay` later, and every `garp_master_refresh`.
A firewall eating VRRP between the nodes makes both masters; both keep announcing, and the
observer flags the VIP conflict from those announcements. A capture of the same run, replayed by
`ka-exporter analyze`, shows the same conflict, and tshark, which shares no code with our decoder,
reads the same announcements from it.

Timings are short so the file runs in about a minute: adverts every 0.5 s, the second burst 1 s
after takeover, a refresh every second, and a claim window of 4 s.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ka_exporter.metrics import METRICS
from lab import CAPTURE_FILTER, Flavour, Instance, Lab, netns, unavailable
from lab.exporter import EXPORTER, NsExporter, Scrape
from tests.lab_fixtures import MakeLab

pytestmark = pytest.mark.lab

TSHARK = shutil.which("tshark")
WINDOW = 4.0  # --vrrp.claim-window
REFRESH = 1  # garp_master_refresh: while master, one announcement a second
ANNOUNCE_FILTER = f"arp or icmp6 or {CAPTURE_FILTER}"
# keepalived's own announcements, as tshark names them (solicited NAs go to the asker alone)
TSHARK_CLAIMS = (
    "arp.isgratuitous or (icmpv6.type == 136 and icmpv6.nd.na.flag.o == 1 and ipv6.dst == ff02::1)"
)
# the claim metrics, asserted wherever the exporter has them
CLAIM_METRICS = {"vrrp_vip_conflict", "vrrp_vip_claims", "vrrp_vip_claimant"} <= METRICS.keys()


def announcing(inst: Instance) -> Instance:
    """The instance with short announcement timings: a second burst after 1 s, a refresh every
    second (without a refresh, a master announces only at takeover, so a split brain that
    starts later looks like an ordinary takeover to anyone listening)."""
    return Instance(
        inst.vrid,
        inst.flavour,
        inst.priorities,
        advert_int=0.5,
        vips=inst.vips,
        garp_master_delay=1,
        garp_master_refresh=REFRESH,
        use_vmac=inst.use_vmac,
        unicast=inst.unicast,
    )


V4 = announcing(Instance(51, Flavour.V3_UNICAST))
V6 = announcing(Instance(61, Flavour.V3_V6, unicast=True))


# --- helpers ---------------------------------------------------------------------------------


def hide_vrrp_from_monitor(lab: Lab, segment: int = 0) -> None:
    """Drop VRRP and AH on the bridge toward the monitor port: it hears what a host on a switched
    segment hears of a unicast cluster, its announcements and none of its adverts."""
    port = f"mon-{segment}"
    rules = (
        "table bridge ka_observer { chain forward { type filter hook forward priority filter; "
        f'policy accept; oifname "{port}" ip protocol {{ 51, 112 }} drop; '
        f'oifname "{port}" ip6 nexthdr 112 drop; }}; }}\n'
    )
    netns.run(netns.exec_argv(lab.ns("br"), ["nft", "-f", "-"]), input=rules)


def mac_of(lab: Lab, who: int | str, ifname: str = "eth0") -> str:
    out = lab.run_in(who, ["ip", "-j", "link", "show", "dev", ifname]).stdout
    return str(json.loads(out)[0]["address"])


def until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> float | None:
    """Polls; the time the predicate first held, or None if it did not within `timeout`."""
    deadline = time.time() + timeout
    while True:
        if predicate():
            return time.time()
        if time.time() >= deadline:
            return None
        time.sleep(interval)


@dataclass(frozen=True)
class Event:
    """One event line of the live exporter's log (logfmt on stderr)."""

    logged: float  # wall time of the log line
    type: str
    fields: dict[str, str]

    @property
    def addresses(self) -> set[str]:
        value = self.fields.get("addresses", "")
        return set(value.split(",")) if value else set()


def events(log: Path) -> list[Event]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if " event=" not in line:
            continue
        stamp, _, rest = line.partition(" level=")
        try:
            when = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S"))
            when += int(stamp[20:23]) / 1000
        except ValueError:
            continue
        pairs = dict(token.split("=", 1) for token in rest.split() if "=" in token)
        found.append(Event(when, pairs["event"], pairs))
    return found


def of_type(found: list[Event], kind: str, start: float = 0.0, end: float = float("inf")) -> list:
    return [e for e in found if e.type == kind and start <= e.logged <= end]


def scrape_or_error(exporter: NsExporter) -> Scrape | str:
    try:
        return exporter.scrape()
    except Exception as exc:  # kept for the tests that read it
        return f"scrape failed: {exc}"


def vip_samples(scrape: Scrape | str, name: str, vip: str) -> list[tuple[dict[str, str], float]]:
    assert isinstance(scrape, Scrape), scrape
    return scrape.find(name, vip=vip)


def conflict_value(scrape: Scrape | str, vip: str) -> float:
    """vrrp_vip_conflict of the VIP; a VIP with no series is in no conflict."""
    samples = vip_samples(scrape, "vrrp_vip_conflict", vip)
    assert len(samples) <= 1, samples
    return samples[0][1] if samples else 0.0


def claimed_by(scrape: Scrape | str, vip: str) -> set[str]:
    """The MACs vrrp_vip_claims_total counts announcements of the VIP from."""
    return {ls["mac"] for ls, v in vip_samples(scrape, "vrrp_vip_claims_total", vip) if v > 0}


def claimant(scrape: Scrape | str, vip: str) -> set[str]:
    return {ls["mac"] for ls, v in vip_samples(scrape, "vrrp_vip_claimant_info", vip) if v == 1}


def analyze(pcap: Path, args: tuple[str, ...]) -> dict[str, Any]:
    argv = [EXPORTER, "analyze", str(pcap), "--format", "json", *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def tshark_claims(pcap: Path, vip: str) -> list[tuple[float, str, dict[str, str]]]:
    """(time, MAC, fields) of every announcement of `vip` in the capture, as tshark reads it:
    ARP's sender hardware address; the NA's target link-layer address option."""
    assert TSHARK is not None
    names = (
        "frame.time_epoch",
        "arp.opcode",
        "arp.src.hw_mac",
        "arp.src.proto_ipv4",
        "icmpv6.nd.na.target_address",
        "icmpv6.opt.linkaddr",
        "icmpv6.nd.na.flag.r",
        "icmpv6.nd.na.flag.s",
        "icmpv6.nd.na.flag.o",
        "ipv6.dst",
        "eth.src",
        "eth.dst",
    )
    argv = [TSHARK, "-r", str(pcap), "-Y", TSHARK_CLAIMS, "-T", "fields"]
    for name in names:
        argv += ["-e", name]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    claims = []
    for line in out.splitlines():
        row = dict(zip(names, line.split("\t"), strict=True))
        address = row["arp.src.proto_ipv4"] or row["icmpv6.nd.na.target_address"]
        mac = row["arp.src.hw_mac"] or row["icmpv6.opt.linkaddr"] or row["eth.src"]
        if address == vip:
            claims.append((float(row["frame.time_epoch"]), mac, row))
    return claims


def first_return(claims: list[tuple[float, str, Any]], window: float) -> float | None:
    """When a conflict starts by the rule the exporter states (claims.py): a MAC announcing
    again within `window` of the last claimant's claim, while its own previous claim was within
    `window` before that one: two MACs announcing in turns."""
    last: dict[str, float] = {}
    previous = ""
    for t, mac, _ in claims:
        if previous and mac != previous and mac in last:
            rival = last[previous]
            if t - rival <= window and rival - last[mac] <= window:
                return t
        last[mac] = t
        previous = mac
    return None


def bursts(times: list[float], gap: float = 0.3) -> list[list[float]]:
    """Announcement times grouped into bursts: runs less than `gap` apart."""
    grouped: list[list[float]] = []
    for t in times:
        if grouped and t - grouped[-1][-1] < gap:
            grouped[-1].append(t)
        else:
            grouped.append([t])
    return grouped


def vip_claims_entry(doc: dict[str, Any], vip: str) -> dict[str, Any] | None:
    matching = [c for c in doc.get("vip_claims", ()) if c["vip"] == vip]
    assert len(matching) <= 1, matching
    return matching[0] if matching else None


# --- a unicast split brain, watched from a third namespace -----------------------------------


@dataclass
class Run:
    """What one run of the split-brain scenario left behind, for the tests to judge."""

    inst: Instance
    args: tuple[str, ...]
    pcap: Path
    macs: dict[int, str] = field(default_factory=dict)
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)  # wall times
    scrapes: dict[str, Scrape | str] = field(default_factory=dict)
    masters: dict[str, object] = field(default_factory=dict)  # who held the VIP, per phase
    both_masters: float | None = None  # when the firewall had made both masters
    events: list[Event] = field(default_factory=list)
    log: str = ""
    doc: dict[str, Any] = field(default_factory=dict)  # analyze --format json of the capture

    @property
    def vip(self) -> str:
        return self.inst.vip_addresses[0]

    @property
    def family(self) -> str:
        return "ipv6" if self.inst.flavour.ipv6 else "ipv4"

    def during(self, phase: str, kind: str) -> list[Event]:
        start, end = self.phases[phase]
        return [
            e for e in of_type(self.events, kind, start, end) if e.fields.get("vip") == self.vip
        ]

    def conflict_events(self, kind: str = "vip_conflict_start") -> list[Event]:
        return [e for e in of_type(self.events, kind) if e.fields.get("vip") == self.vip]

    def why(self) -> str:
        return f"phases {self.phases}, masters {self.masters}, macs {self.macs}\n{self.log}"


def split_brain_run(inst: Instance, args: tuple[str, ...], pcap: Path) -> Run:
    """normal (n1 master) -> VRRP dropped on both nodes (both masters) -> healed -> n1 stopped
    (n2 takes over): the exporter in the monitor namespace, a capture beside it."""
    run = Run(inst, args, pcap)
    vrid = inst.vrid

    def phase(name: str, start: float, exporter: NsExporter) -> None:
        run.phases[name] = (start, time.time())
        run.scrapes[name] = scrape_or_error(exporter)
        run.masters[name] = sorted(lab.holders(vrid))

    lab = Lab([inst])
    try:
        lab.open()
        hide_vrrp_from_monitor(lab)
        run.macs = {n: mac_of(lab, n) for n in lab.nodes}
        with lab.capture(pcap, capture_filter=ANNOUNCE_FILTER):
            exporter = NsExporter(lab, "mon", args=args)
            exporter.wait_ready()
            start = time.time()
            lab.start_all()
            until(lambda: lab.master_of(vrid) == 1, 8)
            time.sleep(3 * REFRESH + 0.5)  # a few refreshes: the one MAC announcing
            phase("normal", start, exporter)

            start = time.time()
            lab.firewall_drop_vrrp(1)
            lab.firewall_drop_vrrp(2)
            run.both_masters = until(lambda: lab.holders(vrid) == {1, 2}, 6)

            def flagged() -> bool:
                return bool(of_type(events(exporter.log), "vip_conflict_start", start))

            until(flagged, 8)
            time.sleep(2 * REFRESH + 0.5)  # both announcing in turns: the new master's bursts too
            phase("split", start, exporter)

            start = time.time()
            lab.firewall_allow(1)
            lab.firewall_allow(2)
            until(lambda: lab.master_of(vrid) == 1, 6)

            def ended() -> bool:
                return bool(of_type(events(exporter.log), "vip_conflict_end", start))

            until(ended, WINDOW + 6)
            # n2's claims older than a window by more than a refresh of n1's: what follows is
            # a failover, not the tail of the conflict
            time.sleep(REFRESH + 1)
            phase("heal", start, exporter)

            start = time.time()
            lab.kill(1)
            until(lambda: lab.master_of(vrid) == 2, 6)
            time.sleep(2 * REFRESH + 1.5)  # both bursts and a refresh of the new master
            phase("failover", start, exporter)
            exporter.stop()
        run.events = events(exporter.log)
        run.log = exporter.describe()
    finally:
        lab.close()
    assert not lab.leftovers(), lab.leftovers()
    run.doc = analyze(pcap, args)
    return run


def _skip_unless_lab_host() -> None:
    reason = unavailable() or (None if shutil.which("curl") else "not installed: curl")
    if reason is not None:
        pytest.skip(f"keepalived lab unavailable: {reason}")


@pytest.fixture(scope="module", params=["ipv4", "ipv6"])
def split(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """IPv4: no --vrrp.vip, so any address two MACs announce is watched. IPv6: the VIP given
    with --vrrp.vip, as an operator of a unicast cluster would."""
    _skip_unless_lab_host()
    inst = V4 if request.param == "ipv4" else V6
    args: tuple[str, ...] = ("--vrrp.claim-window", f"{WINDOW:g}")
    if request.param == "ipv6":
        args += ("--vrrp.vip", inst.vip_addresses[0])
    pcap = tmp_path_factory.mktemp("claims") / f"split-{request.param}.pcap"
    return split_brain_run(inst, args, pcap)


def test_observer_hears_announcements_but_no_vrrp(split: Run) -> None:
    """The point of the setup: whatever the exporter finds, it finds from L2 alone."""
    heard = [e for e in split.events if e.type in ("router_appeared", "master_elected")]
    assert not heard, split.why()
    assert split.doc["vrids"] == [], "the capture holds VRRP adverts"
    assert split.doc["packets"] > 0
    for e in split.conflict_events() + split.conflict_events("vip_conflict_end"):
        assert e.fields["vrid"] == "0", e  # no VRID advertises the VIP where it is heard


def test_normal_cluster_one_mac_per_vip_no_conflict(split: Run) -> None:
    assert split.masters["normal"] == [1], split.why()
    assert not split.during("normal", "vip_conflict_start"), split.why()
    if not CLAIM_METRICS:
        return
    scrape = split.scrapes["normal"]
    assert conflict_value(scrape, split.vip) == 0
    assert claimed_by(scrape, split.vip) <= {split.macs[1]}, split.why()
    if "--vrrp.vip" in split.args:  # a watched VIP is shown with a single claimant too
        assert claimant(scrape, split.vip) == {split.macs[1]}, split.why()
        assert claimed_by(scrape, split.vip) == {split.macs[1]}


def test_vrrp_dropped_between_nodes_both_announce_conflict_flagged(split: Run) -> None:
    assert split.both_masters is not None, f"never two masters: {split.why()}"
    assert split.masters["split"] == [1, 2], split.why()
    started = split.during("split", "vip_conflict_start")
    assert len(started) == 1, split.why()
    event = started[0]
    assert event.addresses == {split.macs[1], split.macs[2]}, event
    assert event.fields["family"] == split.family
    assert event.fields["interface"] == "eth0"
    # the old master's next refresh after the new one's takeover burst
    assert event.logged - split.both_masters <= REFRESH + 2.5, split.why()
    if CLAIM_METRICS:
        scrape = split.scrapes["split"]
        assert conflict_value(scrape, split.vip) == 1, split.why()
        assert claimed_by(scrape, split.vip) == {split.macs[1], split.macs[2]}
        assert len(claimant(scrape, split.vip)) == 1
        assert claimant(scrape, split.vip) <= {split.macs[1], split.macs[2]}


def test_heal_ends_the_conflict(split: Run) -> None:
    assert split.masters["heal"] == [1], split.why()
    ended = split.during("heal", "vip_conflict_end")
    assert len(ended) == 1, split.why()
    assert ended[0].addresses == {split.macs[1], split.macs[2]}
    # n2 stops announcing at the latest when the firewall goes; the conflict ends a window on
    heal = split.phases["heal"][0]
    assert ended[0].logged - heal <= WINDOW + 2.5, split.why()
    if CLAIM_METRICS:
        scrape = split.scrapes["heal"]
        assert conflict_value(scrape, split.vip) == 0, split.why()
        assert claimant(scrape, split.vip) == {split.macs[1]}
        conflicts = vip_samples(scrape, "vrrp_vip_conflicts_total", split.vip)
        assert [v for _, v in conflicts] == [1], conflicts


def test_failover_after_stopping_the_master_is_no_conflict(split: Run) -> None:
    """The backup's announcements replace the stopped master's: a takeover, not a conflict."""
    assert split.masters["failover"] == [2], split.why()
    assert not split.during("failover", "vip_conflict_start"), split.why()
    assert len(split.conflict_events()) == 1, split.why()  # the split brain's only
    if CLAIM_METRICS:
        scrape = split.scrapes["failover"]
        assert conflict_value(scrape, split.vip) == 0, split.why()
        assert claimant(scrape, split.vip) == {split.macs[2]}, split.why()
        conflicts = vip_samples(scrape, "vrrp_vip_conflicts_total", split.vip)
        assert [v for _, v in conflicts] == [1], conflicts


def replayed(doc: dict[str, Any], kind: str, vip: str) -> list[dict[str, Any]]:
    return [e for e in doc["events"] if e["type"] == kind and e.get("vip") == vip]


def test_capture_of_the_split_brain_replayed_shows_the_same_conflict(split: Run) -> None:
    live = split.conflict_events()
    found = replayed(split.doc, "vip_conflict_start", split.vip)
    assert len(found) == len(live) == 1, (found, split.why())
    assert set(found[0]["addresses"]) == live[0].addresses
    assert found[0]["family"] == split.family
    assert found[0]["vrid"] == 0  # (a pcap names no interface: analyze calls it "capture")
    # the live line is logged when the claim is processed
    assert -0.1 <= live[0].logged - found[0]["time"] <= 1.0, (found[0], live[0])
    assert len(replayed(split.doc, "vip_conflict_end", split.vip)) == 1
    if "vip_claims" in split.doc:
        entry = vip_claims_entry(split.doc, split.vip)
        assert entry is not None, split.doc["vip_claims"]
        assert entry["family"] == split.family
        assert not entry["vrid"]  # no VRID advertises it where it is heard
        assert entry["last_mac"] == split.macs[2]  # the new master after n1 stopped
        assert entry["conflicts"] == 1
        assert {m["mac"] for m in entry["macs"]} == {split.macs[1], split.macs[2]}


def test_capture_replayed_conflict_ends_when_the_live_one_did(split: Run) -> None:
    (live,) = split.conflict_events("vip_conflict_end")
    (found,) = replayed(split.doc, "vip_conflict_end", split.vip)
    assert set(found["addresses"]) == live.addresses
    assert -0.1 <= live.logged - found["time"] <= 1.0, (found, live)
    assert found["time"] < split.phases["failover"][0]
    if TSHARK is not None:  # a window after n2's last announcement of the split brain
        claims = tshark_claims(split.pcap, split.vip)
        failover = split.phases["failover"][0]
        rival_last = max(t for t, mac, _ in claims if mac == split.macs[2] and t < failover)
        assert found["time"] == pytest.approx(rival_last + WINDOW, abs=1e-3)
    if "vip_claims" in split.doc:
        entry = vip_claims_entry(split.doc, split.vip)
        assert entry is not None
        assert entry["conflict"] is False


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
def test_capture_announcements_as_tshark_reads_them(split: Run) -> None:
    """tshark reads the same announcements: their MACs, the conflict's first turn, and the
    per-MAC counts of analyze's vip_claims."""
    claims = tshark_claims(split.pcap, split.vip)
    assert {mac for _, mac, _ in claims} == {split.macs[1], split.macs[2]}
    if split.family == "ipv6":
        # keepalived's unsolicited NA: override set, not solicited, not a router, to all-nodes
        for _, _, row in claims:
            assert (row["icmpv6.nd.na.flag.o"], row["icmpv6.nd.na.flag.s"]) == ("1", "0"), row
            assert row["icmpv6.nd.na.flag.r"] == "0"
            assert row["ipv6.dst"] == "ff02::1"
    else:
        # keepalived's gratuitous ARP: requests, broadcast. A reply whose sender is the VIP
        # (the other master's kernel answering a request for the VIP it holds) goes to the
        # asker alone, during the split brain only.
        begin, healed = split.phases["split"][0], split.phases["heal"][1]
        for t, _, row in claims:
            if row["arp.opcode"] == "1":
                assert row["eth.dst"] == "ff:ff:ff:ff:ff:ff", row
            else:
                assert row["arp.opcode"] == "2", row
                assert row["eth.dst"] in {split.macs[1], split.macs[2]}, row
                assert begin <= t <= healed, row
    # what keepalived sends at takeover: garp_master_repeat (5) at once, as many again
    # garp_master_delay (1 s) later (with the refresh falling due then too), then one a refresh
    split_start, heal = split.phases["split"][0], split.phases["heal"][0]
    taken = bursts([t for t, mac, _ in claims if mac == split.macs[2] and split_start < t < heal])
    assert [len(b) for b in taken[:2]] in ([5, 5], [5, 6]), taken
    assert taken[1][0] - taken[0][0] == pytest.approx(1.0, abs=0.3)
    assert all(len(b) == 1 for b in taken[2:]), taken
    start = replayed(split.doc, "vip_conflict_start", split.vip)
    assert start, split.doc["events"]
    turn = first_return(claims, WINDOW)
    assert turn is not None
    assert start[0]["time"] == pytest.approx(turn, abs=1e-5)
    entry = vip_claims_entry(split.doc, split.vip)
    if entry is None:
        return
    for mac in (split.macs[1], split.macs[2]):
        times = [t for t, m, _ in claims if m == mac]
        (mine,) = [m for m in entry["macs"] if m["mac"] == mac]
        assert mine["count"] == len(times), (mac, mine)
        assert mine["first"] == pytest.approx(times[0], abs=1e-5)
        assert mine["last"] == pytest.approx(times[-1], abs=1e-5)


# --- use_vmac: the virtual MAC answers -------------------------------------------------------


@pytest.fixture
def claims_host(lab_host: None) -> None:
    if shutil.which("curl") is None:
        pytest.skip("keepalived lab unavailable: not installed: curl")


def test_use_vmac_announces_from_the_virtual_mac(make_lab: MakeLab, claims_host: None) -> None:
    """keepalived's use_vmac puts the VIPs on a macvlan with the VRID's virtual MAC and announces
    from it (00:00:5e:00:01:VRID, IPv6 00:00:5e:00:02:VRID): both nodes alike, so the takeover's
    announcement carries the same MAC as the old master's and no conflict shows. Multicast
    VRRP here, heard by the observer: a takeover joins the new master's announcement."""
    v4 = announcing(Instance(81, Flavour.V3, use_vmac=True))
    v6 = announcing(Instance(82, Flavour.V3_V6, use_vmac=True))
    lab = make_lab([v4, v6])
    args = ("--vrrp.claim-window", f"{WINDOW:g}")
    with lab.capture(lab.workdir / "vmac.pcap", capture_filter=ANNOUNCE_FILTER) as pcap:
        exporter = NsExporter(lab, "mon", args=args)
        exporter.wait_ready()
        lab.start_all()
        interfaces = {inst.vrid: f"vrrp.{inst.vrid}" for inst in (v4, v6)}
        for inst in (v4, v6):
            assert until(lambda inst=inst: "master_elected" in _types(exporter, inst.vrid), 8), (
                exporter.describe()
            )
            assert mac_of(lab, 1, interfaces[inst.vrid]) == inst.vmac
        eth0 = {mac_of(lab, n) for n in lab.nodes}
        time.sleep(REFRESH + 0.5)
        before = scrape_or_error(exporter)
        start = time.time()
        lab.kill(1)
        for inst in (v4, v6):
            assert until(lambda inst=inst: _announced(exporter, inst.vrid, start), 8), (
                exporter.describe()
            )
        time.sleep(REFRESH + 0.5)
        after = scrape_or_error(exporter)
    doc = analyze(pcap, args)
    found = events(exporter.log)
    for inst in (v4, v6):
        vip = inst.vip_addresses[0]
        announced = [
            e for e in of_type(found, "vip_announced", start) if e.fields["vrid"] == str(inst.vrid)
        ]
        assert announced, exporter.describe()
        assert announced[0].addresses == {inst.vmac}, announced[0]
        assert announced[0].fields["vip"] == vip
        assert float(announced[0].fields["after_seconds"]) < 1.0
        assert not [e for e in of_type(found, "vip_conflict_start") if e.fields["vip"] == vip]
        replayed_announced = replayed(doc, "vip_announced", vip)
        assert replayed_announced, doc["events"]
        assert {tuple(e["addresses"]) for e in replayed_announced} == {(inst.vmac,)}
        assert not replayed(doc, "vip_conflict_start", vip)
        if "vip_claims" in doc:
            entry = vip_claims_entry(doc, vip)
            assert entry is not None, doc["vip_claims"]
            assert entry["vrid"] == inst.vrid  # the VRID advertising it, heard here
            assert entry["last_mac"] == inst.vmac
            assert [m["mac"] for m in entry["macs"]] == [inst.vmac]
            assert entry["conflicts"] == 0
        if CLAIM_METRICS:
            for scrape in (before, after):
                assert claimant(scrape, vip) == {inst.vmac}, scrape
                assert claimed_by(scrape, vip) == {inst.vmac}
                assert not claimed_by(scrape, vip) & eth0
                assert conflict_value(scrape, vip) == 0


def _types(exporter: NsExporter, vrid: int) -> list[str]:
    return [e.type for e in events(exporter.log) if e.fields.get("vrid") == str(vrid)]


def _announced(exporter: NsExporter, vrid: int, start: float) -> bool:
    return any(
        e.fields.get("vrid") == str(vrid)
        for e in of_type(events(exporter.log), "vip_announced", start)
    )


# --- a restart of the master: failover and failback within the window ------------------------


def test_master_restart_failover_and_failback_is_no_conflict(
    make_lab: MakeLab, claims_host: None
) -> None:
    """`systemctl restart keepalived` on the master: the backup takes over on the priority-0
    advert and announces; the restarted master preempts a few seconds later and announces.
    Two takeovers, each announced, never two masters: no conflict. The observer hears the
    multicast adverts, so it knows both were takeovers."""
    inst = announcing(Instance(91, Flavour.V3))
    window = 6.0  # well above the ~3.5 s the backup is master for
    lab = make_lab([inst])
    exporter = NsExporter(lab, "mon", args=("--vrrp.claim-window", f"{window:g}"))
    exporter.wait_ready()
    lab.start_all()
    assert until(lambda: lab.master_of(inst.vrid) == 1, 8)
    time.sleep(REFRESH + 0.5)
    start = time.time()
    lab.kill(1, signal.SIGTERM)
    assert until(lambda: lab.master_of(inst.vrid) == 2, 6)
    lab.start(1)
    assert until(lambda: lab.master_of(inst.vrid) == 1, 8)
    back = time.time()
    time.sleep(REFRESH + 1)
    found = events(exporter.log)
    changed = of_type(found, "master_changed", start)
    assert len(changed) == 2, exporter.describe()  # the failover and the failback, heard
    assert back - start < window
    conflicts = of_type(found, "vip_conflict_start")
    assert not conflicts, f"{conflicts}\n{exporter.describe()}"
