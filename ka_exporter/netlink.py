"""What each watched network namespace has: its interfaces and its addresses, kept current.

One rtnetlink socket per namespace (pyroute2, asyncio): a dump at start, then link and address
events. Links drive which interfaces are captured, whether their link is up, and which are VLAN
subinterfaces of which parent; addresses tell which VIPs this host holds.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK

from ka_exporter.model import Segment

log = logging.getLogger(__name__)

NETNS_DIR = "/var/run/netns"
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40  # operationally up: carrier, and not dormant
RETRY_SECONDS = 1.0


class Link(NamedTuple):
    up: bool  # administratively up and running: adverts can arrive
    vlan: int = 0  # a VLAN subinterface: its VLAN ID, and the interface it is on
    parent: str = ""


LinkHandler = Callable[[Segment, Link | None], None]  # (segment, its link; None: gone)


def check_netns(name: str) -> None:
    """pyroute2 silently creates, or blindly opens, a missing namespace: refuse it first."""
    if "/" in name or not os.path.exists(os.path.join(NETNS_DIR, name)):
        raise FileNotFoundError(f"unknown network namespace {name!r} (see `ip netns list`)")


class Watcher:
    def __init__(self, netns: str, on_link: LinkHandler) -> None:
        self.netns = netns
        self.on_link = on_link
        self.links: dict[int, str] = {}  # ifindex -> name, loopback excluded
        self.states: dict[int, Link] = {}
        self.addresses: set[tuple[int, str]] = set()
        self.up = False
        self._ipr: Any = None

    @property
    def local(self) -> frozenset[str]:
        """The addresses this host answers for: on a link that is down (FRR keeps a backup's
        VIPs on a macvlan it holds protodown) an address is configured, not held."""
        states = self.states
        return frozenset(
            address
            for index, address in self.addresses
            if (state := states.get(index)) is None or state.up
        )

    async def start(self) -> None:
        """Dumps links and addresses; raises if the namespace cannot be watched at all."""
        self._ipr = AsyncIPRoute(netns=self.netns, flags=0) if self.netns else AsyncIPRoute()
        await self._ipr.bind(groups=RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)
        for name in list(self.links.values()):
            self.on_link(Segment(name, self.netns), None)
        self.links.clear()
        self.states.clear()
        self.addresses.clear()
        async for msg in await self._ipr.link("dump"):
            self._handle(msg)
        async for msg in await self._ipr.addr("dump"):
            self._handle(msg)
        self.up = True

    async def run(self) -> None:
        """Follows events; on a socket error (e.g. ENOBUFS overflow) reopens and dumps again."""
        while True:
            try:
                while True:
                    async for msg in self._ipr.get():
                        self._handle(msg)
            except (OSError, ConnectionError) as exc:
                self.up = False
                log.warning("netlink watch of %s failed (%s); reopening", self._where(), exc)
                self.close()
                await asyncio.sleep(RETRY_SECONDS)
                try:
                    await self.start()
                except OSError as again:
                    log.warning("netlink reopen of %s failed: %s", self._where(), again)

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def _handle(self, msg: Any) -> None:
        event, index = msg.get("event"), msg.get("index")
        if event == "RTM_NEWLINK":
            name, flags = msg.get("ifname"), msg.get("flags", 0)
            if flags & IFF_LOOPBACK:
                return
            link = Link(flags & (IFF_UP | IFF_RUNNING) == IFF_UP | IFF_RUNNING)
            if msg.get(("linkinfo", "kind")) == "vlan":
                parent = self.links.get(msg.get("link"), "")
                link = link._replace(
                    vlan=msg.get(("linkinfo", "data", "vlan_id"), 0), parent=parent
                )
            if self.links.get(index) == name and self.states.get(index) == link:
                return
            if index in self.links and self.links[index] != name:
                self.on_link(Segment(self.links[index], self.netns), None)
            self.links[index], self.states[index] = name, link
            self.on_link(Segment(name, self.netns), link)
        elif event == "RTM_DELLINK":
            name = self.links.pop(index, None)
            self.states.pop(index, None)
            if name is not None:
                self.on_link(Segment(name, self.netns), None)
        elif event == "RTM_NEWADDR":
            self.addresses.add((index, msg.get("address")))
        elif event == "RTM_DELADDR":
            self.addresses.discard((index, msg.get("address")))

    def _where(self) -> str:
        return f"network namespace {self.netns}" if self.netns else "this host"
