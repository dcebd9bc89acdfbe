from ka_exporter.alerting.alert import Severity, Status
from ka_exporter.alerts import Context, EventAlerts, ownership_alerts
from ka_exporter.model import Event, EventType, Segment, VridKey

KEY = VridKey(Segment("eth0", "blue"), "ipv4", 51)
OTHER = VridKey(Segment("eth1"), "ipv6", 7)
CTX = Context(cluster="lb1", host="node-a", expected_peers=frozenset({"192.0.2.11"}))


def ev(t: float, kind: EventType, *addrs: str, key: VridKey = KEY, **detail: str) -> Event:
    return Event(t, kind, key, addrs, dict(detail))


def test_split_brain_fires_and_resolves_with_the_same_labels() -> None:
    feed = EventAlerts(CTX)
    (start,) = feed.feed(ev(1.0, EventType.SPLIT_BRAIN_START, "192.0.2.11", "192.0.2.12"))
    (end,) = feed.feed(ev(5.0, EventType.SPLIT_BRAIN_END, "192.0.2.11"))
    assert start.name == "VRRPSplitBrain" and start.severity is Severity.CRITICAL
    assert start.labels == {
        "vrid": "51", "family": "ipv4", "interface": "eth0", "netns": "blue",
        "cluster": "lb1", "instance": "node-a",
    }  # fmt: skip
    assert end.status is Status.RESOLVED and end.fingerprint == start.fingerprint
    assert (end.starts_at, end.ends_at) == (1.0, 5.0)


def test_no_master_is_resolved_by_the_next_master_of_the_same_vrid() -> None:
    feed = EventAlerts(CTX)
    (lost,) = feed.feed(ev(1.0, EventType.MASTER_LOST, "192.0.2.11"))
    assert lost.name == "VRRPNoMaster" and lost.status is Status.FIRING
    assert feed.feed(ev(2.0, EventType.MASTER_ELECTED, "192.0.2.12", key=OTHER)) == []
    (resolved,) = feed.feed(ev(3.0, EventType.MASTER_ELECTED, "192.0.2.12"))
    assert resolved.fingerprint == lost.fingerprint and resolved.status is Status.RESOLVED
    assert feed.feed(ev(4.0, EventType.MASTER_ELECTED, "192.0.2.12")) == []


def test_master_changed_is_one_shot_and_says_why() -> None:
    change = ev(10.0, EventType.MASTER_CHANGED, "192.0.2.12", "192.0.2.11", reason="silent")
    change.detail["gap_seconds"] = 3.609
    (alert,) = EventAlerts(CTX).feed(change)
    assert alert.name == "VRRPMasterChanged" and alert.severity is Severity.WARNING
    assert alert.ends_at is not None and alert.ends_at > alert.starts_at
    assert "192.0.2.11 → 192.0.2.12, silent: VIPs unattended 3.61 s" in alert.annotations["summary"]
    assert alert.labels["reason"] == "silent"


def test_config_mismatch_per_field() -> None:
    feed = EventAlerts(CTX)
    (a,) = feed.feed(ev(1.0, EventType.CONFIG_MISMATCH_START, "x", "y", field="interval"))
    (b,) = feed.feed(ev(1.0, EventType.CONFIG_MISMATCH_START, "x", "y", field="vips"))
    assert a.labels["field"] == "interval" and a.fingerprint != b.fingerprint
    (end,) = feed.feed(ev(2.0, EventType.CONFIG_MISMATCH_END, "x", "y", field="vips"))
    assert end.fingerprint == b.fingerprint and end.severity is Severity.WARNING


def test_unknown_router_only_outside_the_allowlist() -> None:
    feed = EventAlerts(CTX)
    assert feed.feed(ev(1.0, EventType.ROUTER_APPEARED, "192.0.2.11")) == []
    (alert,) = feed.feed(ev(1.0, EventType.ROUTER_APPEARED, "192.0.2.66"))
    assert alert.name == "VRRPUnknownRouter" and alert.labels["address"] == "192.0.2.66"
    open_world = EventAlerts(Context("lb1", "node-a"))
    assert open_world.feed(ev(1.0, EventType.ROUTER_APPEARED, "192.0.2.66")) == []


def test_ownership_diff() -> None:
    before = {(KEY, "duplicate")}
    after = {(OTHER, "orphan")}
    fired, resolved = ownership_alerts(before, after, 9.0, CTX)
    assert (fired.name, fired.status) == ("VRRPOrphanVIP", Status.FIRING)
    assert (resolved.name, resolved.status) == ("VRRPDuplicateVIP", Status.RESOLVED)
    assert "netns" not in fired.labels
    assert ownership_alerts(after, after, 10.0, CTX) == []


def test_carp_collision_fires_and_resolves_per_vlan() -> None:
    v100 = VridKey(Segment("eth0", "", "100"), "ipv4", 51)
    feed = EventAlerts(CTX)
    (start,) = feed.feed(ev(1.0, EventType.COLLISION_START, "192.0.2.31", key=v100))
    assert start.name == "VRRPCarpCollision" and start.severity is Severity.CRITICAL
    assert start.labels["vlan"] == "100"
    assert "CARP vhid 51 from 192.0.2.31" in start.annotations["summary"]
    assert "VLAN 100" in start.annotations["summary"]
    assert feed.feed(ev(2.0, EventType.COLLISION_END, key=KEY)) == []  # another segment
    (end,) = feed.feed(ev(3.0, EventType.COLLISION_END, key=v100))
    assert end.status is Status.RESOLVED and end.fingerprint == start.fingerprint


def test_vip_conflict_fires_and_resolves_per_vip() -> None:
    feed = EventAlerts(CTX)
    macs = ("02:00:00:00:00:0b", "02:00:00:00:00:0a")
    (start,) = feed.feed(ev(1.0, EventType.VIP_CONFLICT_START, *macs, vip="192.0.2.51"))
    assert start.name == "VRRPVipConflict" and start.severity is Severity.CRITICAL
    assert start.labels["vip"] == "192.0.2.51"
    assert "two MACs announce 192.0.2.51 on eth0" in start.annotations["summary"]
    assert feed.feed(ev(2.0, EventType.VIP_CONFLICT_END, vip="192.0.2.52")) == []
    (end,) = feed.feed(ev(3.0, EventType.VIP_CONFLICT_END, macs[0], vip="192.0.2.51"))
    assert end.status is Status.RESOLVED and end.fingerprint == start.fingerprint
