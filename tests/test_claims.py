"""Who answers for each VIP, from announcements alone: conflicts, takeovers, missing GARPs."""

from __future__ import annotations

from ka_exporter.decode import Claim
from ka_exporter.model import EventType, Model, ModelConfig, Segment
from tests.test_model import advert, every, feed

ETH0 = Segment("eth0")
VIP = "192.0.2.51"
A_MAC, B_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def announce(model: Model, *bursts: tuple[str, float], vip: str = VIP) -> None:
    """keepalived's bursts, (MAC, time) in time order: five announcements each."""
    for mac, t in bursts:
        for i in range(5):
            model.observe_claim(ETH0, Claim(t + i * 0.001, "ipv4", vip, mac))


def kinds(model: Model) -> list[tuple[str, float]]:
    return [
        (e.type.value, round(e.time, 3))
        for e in model.pop_events()
        if e.type.value.startswith(("vip_", "announce"))
    ]


def test_a_takeover_replaces_the_old_claim_and_is_no_conflict() -> None:
    model = Model()
    announce(model, (A_MAC, 0), (A_MAC, 5), (B_MAC, 9), (B_MAC, 14))  # A failed at 6, B took over
    model.advance(100)
    assert kinds(model) == []
    (view,) = model.claims_snapshot(100)
    assert (view.last_mac, view.conflicts) == (B_MAC, 0)
    assert {c.mac: c.count for c in view.macs} == {A_MAC: 10, B_MAC: 10}


def test_two_macs_announcing_in_turns_is_a_conflict_until_one_stays_alone() -> None:
    """Both nodes master from the start (VRRP blocked between them): bursts 5 s apart each."""
    model = Model()
    announce(model, (A_MAC, 0), (B_MAC, 0.3), (A_MAC, 5), (B_MAC, 5.3))
    assert kinds(model) == [("vip_conflict_start", 5.0)]
    model.advance(15.0)
    assert model.claims_snapshot(15.0)[0].conflict_since == 5.0
    model.advance(15.01)  # ten seconds after A's last claim, only B has spoken since
    assert kinds(model) == [("vip_conflict_end", 15.004)]
    events = model.pop_events()
    assert not events


def test_a_conflict_event_names_the_vip_the_macs_and_the_vrid() -> None:
    model = Model()
    feed(model, every("192.0.2.11", 0, 3, vrid=51, vips=(VIP,)))
    model.pop_events()
    announce(model, (A_MAC, 1), (B_MAC, 1.2), (A_MAC, 1.5))
    (start,) = [e for e in model.pop_events() if e.type is EventType.VIP_CONFLICT_START]
    assert (start.key.vrid, start.detail["vip"], start.addresses) == (51, VIP, (A_MAC, B_MAC))


def test_only_known_vips_conflict_once_vips_are_known() -> None:
    """Two hosts fighting over an ordinary address are not VRRP's business when the VIPs are
    known (advertised here, or configured); with none known, any address is watched."""
    model = Model(ModelConfig(vips=frozenset({"192.0.2.99"})))
    announce(model, (A_MAC, 0), (B_MAC, 0.5), (A_MAC, 1), vip="192.0.2.7")
    announce(model, (A_MAC, 2), (B_MAC, 2.5), (A_MAC, 3), vip="192.0.2.99")
    assert kinds(model) == [("vip_conflict_start", 3.0)]


def test_the_new_master_announcing_its_vips_goes_into_the_failover_record() -> None:
    model = Model()
    announce(model, (A_MAC, 0))  # announcements are heard on this segment
    feed(model, [*every("192.0.2.11", 0, 5, prio=150, vips=(VIP,)), advert(5.0, "192.0.2.11", 0)])
    feed(model, every("192.0.2.12", 5.6, 8, vips=(VIP,)))
    announce(model, (B_MAC, 5.62))
    model.advance(30)
    first, announced = [e for e in model.pop_events() if e.type is EventType.VIP_ANNOUNCED]
    assert first.addresses == (A_MAC,) and announced.addresses == (B_MAC,)
    assert announced.detail == {"vip": VIP, "after_seconds": 0.02}


def test_a_takeover_nobody_announces_is_flagged() -> None:
    model = Model()
    announce(model, (A_MAC, 0))
    feed(model, [*every("192.0.2.11", 0, 5, prio=150, vips=(VIP,)), advert(5.0, "192.0.2.11", 0)])
    feed(model, every("192.0.2.12", 5.6, 20, vips=(VIP,)))
    model.advance(20)
    missing = [e for e in model.pop_events() if e.type is EventType.ANNOUNCE_MISSING]
    assert [(e.time, e.detail["vips"]) for e in missing] == [(15.6, VIP)]


def test_no_announcement_check_where_none_is_ever_heard() -> None:
    """A capture of VRRP alone (tcpdump 'ip proto 112') says nothing of ARP."""
    model = Model()
    feed(model, [*every("192.0.2.11", 0, 5, prio=150, vips=(VIP,)), advert(5.0, "192.0.2.11", 0)])
    feed(model, every("192.0.2.12", 5.6, 20, vips=(VIP,)))
    model.advance(20)
    assert not [e for e in model.pop_events() if e.type is EventType.ANNOUNCE_MISSING]


def test_a_storm_of_spoofed_announcements_is_bounded() -> None:
    model = Model(ModelConfig(max_claims=50))
    for i in range(20_000):
        mac = f"02:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}:00:01"
        model.observe_claim(ETH0, Claim(i * 0.001, "ipv4", f"198.51.100.{i % 200}", mac))
    assert len(model.claims) == 50
    assert all(len(c.macs) <= 8 for c in model.claims.values())
    assert model.untracked_claims[ETH0] == 20_000 - 20_000 * 50 // 200
    assert model.claim_budget.used == 50


def test_a_failback_within_the_window_that_vrrp_explains_is_no_conflict() -> None:
    """keepalived restarted on the master: n1 resigns, n2 takes over and announces, n1 comes
    back three seconds later, preempts and announces again. On L2 alone that is two MACs in
    turns; where the VRID is heard, each announcement is the master VRRP chose."""
    n1, n2 = "192.0.2.11", "192.0.2.12"
    model = Model()
    stream = [
        *[advert(t, n1, 150, vrid=51, vips=(VIP,))._replace(mac=A_MAC) for t in range(5)],
        advert(5.0, n1, 0, vrid=51, vips=(VIP,))._replace(mac=A_MAC),
        *[advert(5.6 + i, n2, 100, vrid=51, vips=(VIP,))._replace(mac=B_MAC) for i in range(3)],
        *[advert(8.5 + i, n1, 150, vrid=51, vips=(VIP,))._replace(mac=A_MAC) for i in range(6)],
    ]
    claims = [(A_MAC, 0.01), (B_MAC, 5.61), (A_MAC, 8.51)]
    events = sorted(
        [*((a.time, a) for a in stream), *((t, Claim(t, "ipv4", VIP, m)) for m, t in claims)],
        key=lambda pair: pair[0],
    )
    for _, item in events:
        if isinstance(item, Claim):
            model.observe_claim(ETH0, item)
        else:
            model.observe(ETH0, item)
    model.advance(14)
    assert [k for k in kinds(model) if "conflict" in k[0]] == []
    # the same announcements with no VRRP heard: the L2 rule alone calls it a conflict
    blind = Model()
    for mac, t in claims:
        blind.observe_claim(ETH0, Claim(t, "ipv4", VIP, mac))
    assert kinds(blind) == [("vip_conflict_start", 8.51)]
