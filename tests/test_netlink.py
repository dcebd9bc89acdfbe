"""The netlink watcher's reading of link messages, and what the exporter does with them."""

from __future__ import annotations

import asyncio
from typing import Any

from ka_exporter.daemon import Daemon, Settings
from ka_exporter.model import Segment
from ka_exporter.netlink import IFF_RUNNING, IFF_UP, Link, Watcher

UP = IFF_UP | IFF_RUNNING | 0x1000  # up, running, multicast


class Msg(dict[str, Any]):
    """A link message as pyroute2 hands it over: `get` takes a name or a path of names."""

    def get(self, key: Any, default: Any = None) -> Any:
        value: Any = self
        for name in key if isinstance(key, tuple) else (key,):
            value = dict.get(value, name) if isinstance(value, dict) else None
        return default if value is None else value


def newlink(index: int, name: str, flags: int = UP, **info: Any) -> Msg:
    msg = Msg(event="RTM_NEWLINK", index=index, ifname=name, flags=flags)
    if info:
        msg["linkinfo"] = {"kind": info.pop("kind"), "data": info.pop("data", {})}
        msg.update(info)
    return msg


def watch() -> tuple[Watcher, list[tuple[Segment, Link | None]]]:
    seen: list[tuple[Segment, Link | None]] = []
    return Watcher("", lambda segment, link: seen.append((segment, link))), seen


def test_link_state_and_vlan_subinterfaces() -> None:
    watcher, seen = watch()
    watcher._handle(newlink(1, "lo", 0x49))
    watcher._handle(newlink(2, "eth0"))
    watcher._handle(newlink(3, "eth0.100", kind="vlan", data={"vlan_id": 100}, link=2))
    watcher._handle(newlink(2, "eth0"))  # nothing changed: nothing said
    watcher._handle(newlink(2, "eth0", IFF_UP))  # carrier lost
    watcher._handle(newlink(2, "eth0", 0x1000))  # then set down too: still down, not said again
    watcher._handle(Msg(event="RTM_DELLINK", index=3))
    assert seen == [
        (Segment("eth0"), Link(True)),
        (Segment("eth0.100"), Link(True, 100, "eth0")),
        (Segment("eth0"), Link(False)),
        (Segment("eth0.100"), None),
    ]


class FakeCapture:
    def __init__(self) -> None:
        self.taps: dict[Segment, Any] = {}
        self.failed: set[Segment] = set()
        self.left: dict[Segment, frozenset[int]] = {}

    def open(self, link: Segment, vlan: str = "") -> None:
        self.taps[link] = type("Tap", (), {"segment": link._replace(vlan=vlan)})

    def close(self, link: Segment) -> None:
        self.taps.pop(link, None)

    def elsewhere(self, link: Segment, vids: frozenset[int]) -> None:
        self.left[link] = vids

    def horizon(self, now: float) -> float:
        return now


def test_the_exporter_leaves_a_vlan_to_its_captured_subinterface() -> None:
    async def main() -> tuple[FakeCapture, Daemon]:
        daemon = Daemon(Settings(interfaces=("eth0", "eth0.100", "eth0.300")))
        daemon.capture = FakeCapture()  # type: ignore[assignment]
        daemon._on_link(Segment("eth0"), Link(True))
        daemon._on_link(Segment("eth0.100"), Link(True, 100, "eth0"))
        daemon._on_link(Segment("eth0.200"), Link(True, 200, "eth0"))  # not selected
        daemon._on_link(Segment("eth0.300"), Link(True, 300, "eth0"))
        daemon._on_link(Segment("eth0.300"), None)
        daemon._on_link(Segment("eth0"), Link(False))
        return daemon.capture, daemon  # type: ignore[return-value]

    capture, daemon = asyncio.run(main())
    assert capture.taps[Segment("eth0.100")].segment == Segment("eth0.100", "", "100")
    assert capture.left[Segment("eth0")] == frozenset({100})
    assert Segment("eth0.200") not in capture.taps
    assert daemon.model.down == {Segment("eth0"): daemon.model.down[Segment("eth0")]}


def test_an_address_on_a_link_that_is_down_is_not_held() -> None:
    """FRR keeps a backup's VIP on a macvlan it holds protodown: configured, not answered for."""
    watcher, _ = watch()
    watcher._handle(newlink(2, "eth0"))
    watcher._handle(newlink(3, "vrrp4-2-61", IFF_UP))  # up, no carrier
    for index, address in ((2, "192.0.2.12"), (3, "192.0.2.61"), (1, "127.0.0.1")):
        watcher._handle(Msg(event="RTM_NEWADDR", index=index, address=address))
    assert watcher.local == {"192.0.2.12", "127.0.0.1"}  # loopback's state is never tracked
    watcher._handle(newlink(3, "vrrp4-2-61"))
    assert "192.0.2.61" in watcher.local
