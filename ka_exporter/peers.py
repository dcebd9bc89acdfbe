"""Split-brain across hosts, from the exporters' own views (`--peer URL`).

When VRRP is blocked between the nodes, each node's sniffer hears only its own adverts and sees
one master, itself. Only by comparing what each host claims (`vrrp_local_master` on its
/metrics) does the second master show. VRIDs are compared by (family, VLAN, vrid): the hosts of
one cluster may name their interfaces differently, but a VLAN is the same on every trunk port.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from ka_exporter.alerting.alert import Alert, Severity, Source, Status
from ka_exporter.model import VridView
from ka_exporter.ownership import ownership

log = logging.getLogger(__name__)

Claim = tuple[str, str, int]  # (family, vlan or "", vrid)

POLL_SECONDS = 1.0
TIMEOUT_SECONDS = 2.0
DEBOUNCE_POLLS = 2  # a preemption's overlap lasts less than two polls; a partition does not
ALERT = "VRRPPeerSplitBrain"
METRICS = {
    "vrrp_peer_up": "1 when the last read of the peer's /metrics succeeded.",
    "vrrp_peer_masters": "Hosts (this one and its reachable peers) that claim master of the VRID.",
    "vrrp_peer_split_brain": "1 while two or more hosts have claimed master of the VRID "
    f"for {DEBOUNCE_POLLS} reads in a row.",
}


def metrics_url(url: str) -> str:
    """A peer given as `http://host:port` means its /metrics."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https") or not rest.split("/")[0]:
        raise ValueError(f"not an http(s) URL: {url!r}")
    return url if "/" in rest else f"{url}/metrics"


def claims_in(text: str) -> frozenset[Claim]:
    """The VRIDs a /metrics page says its host is master of."""
    found = set()
    for family in text_string_to_metric_families(text):
        if family.name != "vrrp_local_master":
            continue
        for sample in family.samples:
            if sample.value == 1:
                labels = sample.labels
                found.add((labels["family"], labels.get("vlan", ""), int(labels["vrid"])))
    return frozenset(found)


def local_claims(
    views: Iterable[VridView], addresses: Mapping[str, frozenset[str]]
) -> frozenset[Claim]:
    """The VRIDs this host is master of, as its own vrrp_local_master says, but for one it is
    yielding: a host that hears another master of higher priority is being preempted (its last
    advert still counts for a tolerance), which its own split-brain check would see if it
    lasted. Across hosts, split-brain is the hosts that do not hear each other."""
    return frozenset(
        (v.key.family, v.key.segment.vlan, v.key.vrid)
        for v in views
        if v.key.segment.netns in addresses
        and ownership(v, addresses[v.key.segment.netns]).local_master
        and not _yielding(v, addresses[v.key.segment.netns])
    )


def _yielding(view: VridView, local: frozenset[str]) -> bool:
    priority = {r.address: (r.priority, r.address) for r in view.routers}
    mine = max(priority[a] for a in view.masters if a in local)
    return any(priority[a] > mine for a in view.masters if a not in local)


@dataclass(slots=True)
class PeerState:
    """Pure: the views in, the split-brains that start or end out."""

    host: str
    cluster: str
    views: dict[str, frozenset[Claim] | None] = field(default_factory=dict)  # None: unreachable
    own: frozenset[Claim] = frozenset()
    streak: dict[Claim, int] = field(default_factory=dict)
    open: dict[Claim, float] = field(default_factory=dict)  # split-brains and their start

    def claimants(self) -> dict[Claim, list[str]]:
        who: dict[Claim, list[str]] = {c: [self.host] for c in self.own}
        for peer, claims in sorted(self.views.items()):
            for c in claims or ():
                who.setdefault(c, []).append(peer)
        return who

    def update(
        self, own: frozenset[Claim], views: Mapping[str, frozenset[Claim] | None], now: float
    ) -> list[Alert]:
        self.own, self.views = own, dict(views)
        who = self.claimants()
        split = {c for c, hosts in who.items() if len(hosts) > 1}
        self.streak = {c: self.streak.get(c, 0) + 1 for c in split}
        alerts = []
        for c in sorted(c for c, n in self.streak.items() if n >= DEBOUNCE_POLLS):
            if c not in self.open:
                self.open[c] = now
                alerts.append(self._alert(c, Status.FIRING, now, None, who[c]))
        for c in sorted(set(self.open) - split):
            alerts.append(self._alert(c, Status.RESOLVED, self.open.pop(c), now, who.get(c, [])))
        return alerts

    def _alert(
        self, claim: Claim, status: Status, starts: float, ends: float | None, hosts: list[str]
    ) -> Alert:
        family, vlan, vrid = claim
        on = describe(claim)
        if status is Status.FIRING:
            summary = f"split brain on {on} across hosts: {', '.join(hosts)}"
        else:
            summary = f"split brain across hosts over on {on}"
        return Alert(
            name=ALERT,
            severity=Severity.CRITICAL,
            status=status,
            source=Source.EXPORTER,
            starts_at=starts,
            ends_at=ends,
            labels={
                "vrid": str(vrid),
                "family": family,
                **({"vlan": vlan} if vlan else {}),
                "cluster": self.cluster,
                "instance": self.host,
            },
            annotations={"summary": summary, "description": f"{summary} (seen by {self.host})"},
        )


class PeerCollector(Collector):
    def __init__(self, state: PeerState, peers: Iterable[str]) -> None:
        self.state, self.peers = state, tuple(peers)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("vrrp_peer_up", METRICS["vrrp_peer_up"], labels=["peer"])
        for peer in self.peers:
            up.add_metric([peer], int(self.state.views.get(peer) is not None))
        masters = Metric("vrrp_peer_masters", METRICS["vrrp_peer_masters"], "gauge")
        split = Metric("vrrp_peer_split_brain", METRICS["vrrp_peer_split_brain"], "gauge")
        for claim, hosts in sorted(self.state.claimants().items()):
            family, vlan, vrid = claim
            labels = {"family": family, **({"vlan": vlan} if vlan else {}), "vrid": str(vrid)}
            masters.add_sample("vrrp_peer_masters", labels, len(hosts))
            split.add_sample("vrrp_peer_split_brain", labels, int(claim in self.state.open))
        yield from (up, masters, split)


def describe(claim: Claim) -> str:
    """`VRID 10 (ipv4, VLAN 100)`."""
    family, vlan, vrid = claim
    return f"VRID {vrid} ({family}{f', VLAN {vlan}' if vlan else ''})"


class PeerWatch:
    """Reads every peer once per POLL_SECONDS, in the exporter's loop."""

    def __init__(
        self,
        peers: Iterable[str],
        state: PeerState,
        own: Callable[[], frozenset[Claim]],
        on_alerts: Callable[[list[Alert], float], None],
        clock: Callable[[], float],
    ) -> None:
        self.peers = tuple(peers)
        self.state, self.own, self.on_alerts, self.clock = state, own, on_alerts, clock
        self.collector = PeerCollector(state, self.peers)

    def split_brains(self) -> list[tuple[str, float]]:
        """What the open cross-host split-brains are on, with their hosts, and since when."""
        who = self.state.claimants()
        return [
            (f"{describe(c)}: {', '.join(who.get(c, []))}", since)
            for c, since in sorted(self.state.open.items())
        ]

    async def _read(self, session: aiohttp.ClientSession, peer: str) -> frozenset[Claim] | None:
        try:
            async with session.get(metrics_url(peer)) as response:
                response.raise_for_status()
                return claims_in(await response.text())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.debug("peer %s unreachable: %s", peer, exc)
            return None

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                views = await asyncio.gather(*(self._read(session, p) for p in self.peers))
                now = self.clock()
                alerts = self.state.update(
                    self.own(), dict(zip(self.peers, views, strict=True)), now
                )
                for alert in alerts:
                    log.warning("event=%s %s", ALERT, alert.annotations["summary"])
                if alerts:
                    self.on_alerts(alerts, now)
                await asyncio.sleep(POLL_SECONDS)
