"""Split-brain across hosts from the exporters' /metrics (`--peer`)."""

import asyncio
import re
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from ka_exporter.alerting.alert import Alert, Status
from ka_exporter.model import Model, Segment
from ka_exporter.peers import (
    ALERT,
    DEBOUNCE_POLLS,
    METRICS,
    PeerState,
    PeerWatch,
    claims_in,
    local_claims,
    metrics_url,
)
from tests.notify_servers import free_port, http_receiver
from tests.test_model import every, feed

ROOT = Path(__file__).resolve().parent.parent
A, B = ("ipv4", "", 51), ("ipv6", "", 7)


def page(*claims: tuple[str, str, int], lost: tuple[str, str, int] = ("ipv4", "", 9)) -> str:
    """An exporter's exposition: master of `claims`, backup of `lost`."""
    lines = ["# HELP vrrp_local_master x", "# TYPE vrrp_local_master gauge"]
    for (family, vlan, vrid), value in [*((c, 1) for c in claims), (lost, 0)]:
        tag = f',vlan="{vlan}"' if vlan else ""
        lines.append(
            f'vrrp_local_master{{interface="eth0",family="{family}"{tag},vrid="{vrid}"}} {value}'
        )
    lines.append('vrrp_masters{interface="eth0",family="ipv4",vrid="52"} 1')
    return "\n".join(lines) + "\n"


def test_claims_are_the_vrids_whose_local_master_is_1() -> None:
    assert claims_in(page(A, B)) == {A, B}
    assert claims_in(page()) == frozenset()


def test_one_vrid_on_two_vlans_claimed_by_two_hosts_is_no_split_brain() -> None:
    """Host a is master of VRID 51 on VLAN 100, host b on VLAN 200: two virtual routers."""
    v100, v200 = ("ipv4", "100", 51), ("ipv4", "200", 51)
    assert claims_in(page(v100)) == {v100}
    state = PeerState("node-a", "lb1")
    for t in (1.0, 2.0, 3.0):
        assert state.update(frozenset({v100}), {"b": frozenset({v200})}, t) == []
    fired = []
    for t in (4.0, 5.0):
        fired += state.update(frozenset({v100}), {"b": frozenset({v100})}, t)
    assert [a.labels.get("vlan") for a in fired] == ["100"]
    assert "VLAN 100" in fired[0].annotations["summary"]


def test_metrics_url() -> None:
    assert metrics_url("http://192.0.2.12:9743") == "http://192.0.2.12:9743/metrics"
    assert metrics_url("https://b.example/x/metrics") == "https://b.example/x/metrics"
    for bad in ("192.0.2.12:9743", "ftp://b.example", "http://"):
        with pytest.raises(ValueError, match="not an http"):
            metrics_url(bad)


def test_two_hosts_claiming_one_vrid_fire_after_the_debounce_and_resolve() -> None:
    state = PeerState("node-a", "lb1")
    assert state.update(frozenset({A}), {"b": frozenset({A, B})}, 1.0) == []  # one read: overlap
    fired = state.update(frozenset({A}), {"b": frozenset({A, B})}, 2.0)
    assert DEBOUNCE_POLLS == 2 and [a.status for a in fired] == [Status.FIRING]
    assert fired[0].name == ALERT and fired[0].labels["vrid"] == "51"
    assert "node-a, b" in fired[0].annotations["summary"]
    assert state.update(frozenset({A}), {"b": frozenset({A, B})}, 3.0) == []  # no repeat
    (resolved,) = state.update(frozenset({A}), {"b": frozenset({B})}, 4.0)
    assert resolved.status is Status.RESOLVED and resolved.fingerprint == fired[0].fingerprint
    assert (resolved.starts_at, resolved.ends_at) == (2.0, 4.0)


def test_a_preemption_overlap_or_an_unreachable_peer_is_not_split_brain() -> None:
    state = PeerState("node-a", "lb1")
    views: list[dict[str, frozenset[tuple[str, int]] | None]] = [
        {"b": frozenset({A})},  # both claim for one read only ...
        {"b": frozenset()},  # ... then b has handed over
        {"b": None},  # b unreachable: it claims nothing
        {"b": None},
    ]
    assert [state.update(frozenset({A}), v, t) for t, v in enumerate(views)] == [[]] * 4


def test_peers_are_read_over_http_and_exposed() -> None:
    """Two real HTTP peers: one claims our VRID, one is down; the metrics say so."""
    alerts: list[Alert] = []

    async def scenario() -> str:
        async def metrics(_: web.Request) -> web.Response:
            return web.Response(text=page(A))

        async with http_receiver(metrics, "GET") as up:
            return await watched(up, f"http://127.0.0.1:{free_port()}")

    async def watched(up: str, down: str) -> str:
        state = PeerState("node-a", "lb1")
        watch = PeerWatch(
            [up, down], state, lambda: frozenset({A}), lambda a, _: alerts.extend(a), lambda: 1.0
        )
        registry = CollectorRegistry()
        registry.register(watch.collector)
        task = asyncio.create_task(watch.run())
        try:
            for _ in range(100):
                if alerts:
                    break
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
        return generate_latest(registry).decode().replace(up, "UP").replace(down, "DOWN")

    text = asyncio.run(scenario())
    assert [a.status for a in alerts] == [Status.FIRING]
    assert 'vrrp_peer_up{peer="UP"} 1.0' in text and 'vrrp_peer_up{peer="DOWN"} 0.0' in text
    assert 'vrrp_peer_masters{family="ipv4",vrid="51"} 2.0' in text
    assert 'vrrp_peer_split_brain{family="ipv4",vrid="51"} 1.0' in text


def test_docs_list_the_peer_metrics_with_their_help() -> None:
    docs = (ROOT / "docs" / "metrics.md").read_text()
    section = docs[docs.index("## Peers") :]
    listed = dict(re.findall(r"^- `(\w+)` \(gauge[^)]*\): (.+)$", section, re.MULTILINE))
    assert listed == METRICS


def test_a_host_being_preempted_does_not_claim_the_vrid() -> None:
    """Its last advert keeps it acting for a tolerance after it heard the higher priority and
    went backup: that overlap is a preemption, seen here, not a split-brain across hosts."""
    model = Model()
    ours, theirs = "192.0.2.11", "192.0.2.12"
    feed(model, every(ours, 0, 10.5, prio=100, vips=("192.0.2.51",)), Segment("eth0"))
    feed(model, every(theirs, 10.2, 11, prio=200, vips=("192.0.2.51",)), Segment("eth0"))
    here = {"": frozenset({ours, "192.0.2.51"})}
    assert len(model.snapshot(10.9)[0].masters) == 2  # both still acting
    assert local_claims(model.snapshot(10.9), here) == frozenset()
    other = {"": frozenset({theirs})}
    assert local_claims(model.snapshot(10.9), other) == {("ipv4", "", 1)}
