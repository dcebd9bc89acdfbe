from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

from ka_exporter import capture
from ka_exporter.model import Model, Segment, VridKey
from lab import netns
from tests import frames, segments
from tests.conftest import send


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
def test_embedded_bpf_is_the_filter_compiled() -> None:
    out = subprocess.run(
        ["tcpdump", "-y", "EN10MB", "-dd", capture.FILTER],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    compiled = [
        tuple(int(x, 0) for x in line.strip(" {},").split(","))
        for line in out.splitlines()
        if line.startswith("{")
    ]
    assert compiled == list(capture.BPF_PROGRAM)


def vrrp_frames() -> list[bytes]:
    return [
        bytes(frames.advert(3, vrid=1, priority=150)),
        bytes(frames.advert(2, vrid=2, authtype=1, auth=b"secret12")),
        bytes(frames.advert(2, vrid=3, authtype=2, ah=True)),
        bytes(frames.advert(3, "ipv6", vrid=4)),
    ]


def noise() -> list[bytes]:
    return [
        bytes(Ether() / IP(src="192.0.2.9", dst="192.0.2.10") / UDP(dport=112)),
        bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="192.0.2.9", pdst="192.0.2.10")),
    ]


async def captured(
    listen_ns: str, send_ns: str, payload: list[bytes], expect: int = 4
) -> tuple[Model, int]:
    """The model once `expect` adverts (VRRP or CARP) were read, and the frames the filter
    passed."""
    model = Model()
    cap = capture.Capture(model, asyncio.get_running_loop())
    segment = Segment("eth0", listen_ns)
    cap.open(segment)
    try:
        await asyncio.to_thread(send, send_ns, payload)
        for _ in range(50):
            await asyncio.sleep(0.02)
            vrrp = sum(r.adverts for v in model.vrids.values() for r in v.routers.values())
            carp = sum(s.adverts for g in model.carp.values() for s in g.speakers.values())
            if vrrp + carp >= expect:
                break
        (tap,) = cap.statistics()
        return model, tap.packets
    finally:
        cap.close_all()


def test_kernel_filter_passes_vrrp_only(wire: tuple[str, str]) -> None:
    a, b = wire
    model, packets = asyncio.run(captured(b, a, noise() + vrrp_frames() + noise()))
    assert sorted(k.vrid for k in model.vrids) == [1, 2, 3, 4]
    assert not model.rejects
    assert packets == 4  # the UDP and ARP frames never left the kernel


def test_own_outgoing_adverts_are_seen(wire: tuple[str, str]) -> None:
    """On a unicast node, capturing its own sends is the only way to see its adverts."""
    a, _ = wire
    model, _ = asyncio.run(captured(a, a, vrrp_frames()))
    assert sorted(k.vrid for k in model.vrids) == [1, 2, 3, 4]


def test_unknown_interface_is_a_clear_error(wire: tuple[str, str]) -> None:
    with pytest.raises(capture.CaptureError, match=r"cannot capture on nope0 in network namespace"):
        capture.open_socket("nope0", wire[0])


async def held_loop(listen_ns: str, send_ns: str, payload: list[bytes]) -> tuple[Model, float, int]:
    """Sends `payload` while holding the event loop, as a slow scrape would, and then 0.2 s
    more; returns the model once the loop has caught up, the time sending ended, and the
    wake-ups it took."""
    model = Model()
    cap = capture.Capture(model, asyncio.get_running_loop())
    cap.open(Segment("eth0", listen_ns))
    try:
        send(send_ns, payload)
        sent = time.time()
        time.sleep(0.2)
        for _ in range(250):
            await asyncio.sleep(0.02)
            (tap,) = cap.statistics()
            if sum(r.adverts for v in model.vrids.values() for r in v.routers.values()) >= len(
                payload
            ):
                break
        assert (tap.packets, tap.drops) == (len(payload), 0)
        return model, sent, tap.wakeups
    finally:
        cap.close_all()


def test_a_burst_waits_in_the_ring_with_its_arrival_times(wire: tuple[str, str]) -> None:
    """30,000 adverts, three times what the former 4 MiB socket buffer held, arrive while the
    loop is busy: none is lost, they are read a block at a time, not one wake-up each, and are
    stamped when they arrived, not when they were read."""
    a, b = wire
    before = time.time()
    model, sent, wakeups = asyncio.run(held_loop(b, a, vrrp_frames() * 7_500))
    routers = [r for v in model.vrids.values() for r in v.routers.values()]
    assert sum(r.adverts for r in routers) == 30_000
    assert all(before <= r.last_seen <= sent for r in routers)
    # full blocks, plus those the kernel retired part-full after RETIRE_MS while a loaded
    # machine held the sender back: still a few dozen wake-ups, not 30,000
    assert wakeups <= 2 * (30_000 * 144 // capture.BLOCK_SIZE) + 5


def test_link_down_does_not_spin_the_loop(wire: tuple[str, str]) -> None:
    """A link going down leaves an error on the socket; it is read once, not again and again,
    and the capture resumes when the link comes back."""
    a, b = wire

    async def main() -> tuple[int, int]:
        model = Model()
        cap = capture.Capture(model, asyncio.get_running_loop())
        cap.open(Segment("eth0", b))
        try:
            await asyncio.to_thread(netns.run, ["ip", "-n", b, "link", "set", "eth0", "down"])
            await asyncio.sleep(0.3)
            (tap,) = cap.statistics()
            down = tap.wakeups
            await asyncio.to_thread(netns.run, ["ip", "-n", b, "link", "set", "eth0", "up"])
            await asyncio.sleep(0.2)  # the veth carrier back on both sides
            await asyncio.to_thread(send, a, vrrp_frames())
            for _ in range(100):
                await asyncio.sleep(0.02)
                if len(model.vrids) == 4:
                    break
            return down, len(model.vrids)
        finally:
            cap.close_all()

    down, vrids = asyncio.run(main())
    assert down <= 3
    assert vrids == 4


def test_a_trunk_through_the_ring_keeps_vlans_apart(wire: tuple[str, str]) -> None:
    """Tagged frames written on a veth arrive with the tag in the ring's frame header, as on a
    NIC with VLAN offload: VRID 51 on VLAN 100 and VLAN 200 are two virtual routers, QinQ's inner
    tag (left in the frame) follows the outer one, and CARP beside is CARP."""
    a, b = wire
    payload = [frame for _, frame in segments.trunk(seconds=2)]
    model, packets = asyncio.run(captured(b, a, payload, len(payload)))
    assert packets == len(payload)
    assert not model.rejects
    vrids = {(k.segment.vlan, k.vrid): v for k, v in model.vrids.items()}
    assert set(vrids) == {("100", 51), ("200", 51), ("300.52", 52)}
    assert set(vrids["100", 51].routers) == {"192.0.2.11"}
    assert set(vrids["200", 51].routers) == {"198.51.100.11"}
    assert {(k.segment.vlan, k.vrid) for k in model.carp} == {("100", 51), ("100", 60)}
    assert model.collisions == {VridKey(Segment("eth0", b, "100"), "ipv4", 51)}


def test_a_vlan_with_its_own_subinterface_is_reported_there_not_on_the_parent(
    wire: tuple[str, str],
) -> None:
    """When the VLAN's subinterface is captured too, the parent leaves its frames to it."""
    a, b = wire

    async def main() -> Model:
        model = Model()
        cap = capture.Capture(model, asyncio.get_running_loop())
        cap.open(Segment("eth0", b))
        cap.elsewhere(Segment("eth0", b), frozenset({100}))
        try:
            await asyncio.to_thread(send, a, [frame for _, frame in segments.trunk(seconds=1)])
            for _ in range(50):
                await asyncio.sleep(0.02)
                if len(model.vrids) >= 2:
                    break
            await asyncio.sleep(0.05)
            return model
        finally:
            cap.close_all()

    model = asyncio.run(main())
    assert {(k.segment.vlan, k.vrid) for k in model.vrids} == {("200", 51), ("300.52", 52)}
    assert model.carp == {}  # the CARP adverts were on VLAN 100 too


# Address announcements: the kernel filter passes gratuitous ARP and unsolicited NA, and keeps
# ordinary ARP and neighbour discovery, which a busy segment is full of, out of user space.

L2_MAC, PEER_MAC = "02:00:00:00:00:21", "02:00:00:00:00:22"


def _na(dst: str, target: str, *, solicited: int = 0, override: int = 1) -> bytes:
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6  # noqa: PLC0415

    mac = "33:33:00:00:00:01" if dst == "ff02::1" else PEER_MAC
    na = ICMPv6ND_NA(tgt=target, R=0, S=solicited, O=override)
    return bytes(
        Ether(src=L2_MAC, dst=mac)
        / IPv6(src=target, dst=dst, hlim=255)
        / na
        / ICMPv6NDOptDstLLAddr(lladdr=L2_MAC)
    )


def announcements() -> list[bytes]:
    """Gratuitous ARP request and reply, and an unsolicited NA to all-nodes."""
    bcast = "ff:ff:ff:ff:ff:ff"
    return [
        bytes(
            Ether(src=L2_MAC, dst=bcast) / ARP(op=op, hwsrc=L2_MAC, psrc=ip, hwdst=bcast, pdst=ip)
        )
        for op, ip in ((1, "192.0.2.21"), (2, "198.51.100.21"))
    ] + [_na("ff02::1", "2001:db8::21")]


def ordinary_arp_nd() -> list[bytes]:
    """ARP request, reply and probe; NS (address resolution and DAD); a solicited NA
    (unicast), and an NA to all-nodes without the override flag: none announces."""
    from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6  # noqa: PLC0415

    bcast, zero = "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"
    ns = ICMPv6ND_NS(tgt="2001:db8::22")
    return [
        bytes(
            Ether(src=L2_MAC, dst=bcast)
            / ARP(op=1, hwsrc=L2_MAC, psrc="192.0.2.21", hwdst=zero, pdst="192.0.2.22")
        ),
        bytes(
            Ether(src=PEER_MAC, dst=L2_MAC)
            / ARP(op=2, hwsrc=PEER_MAC, psrc="192.0.2.22", hwdst=L2_MAC, pdst="192.0.2.21")
        ),
        bytes(
            Ether(src=L2_MAC, dst=bcast)
            / ARP(op=1, hwsrc=L2_MAC, psrc="0.0.0.0", hwdst=zero, pdst="192.0.2.23")
        ),
        bytes(
            Ether(src=L2_MAC, dst="33:33:ff:00:00:22")
            / IPv6(src="2001:db8::21", dst="ff02::1:ff00:22", hlim=255)
            / ns
            / ICMPv6NDOptSrcLLAddr(lladdr=L2_MAC)
        ),
        bytes(
            Ether(src=L2_MAC, dst="33:33:ff:00:00:22")
            / IPv6(src="::", dst="ff02::1:ff00:22", hlim=255)
            / ns
        ),
        _na("2001:db8::22", "2001:db8::21", solicited=1),
        _na("ff02::1", "2001:db8::23", override=0),
    ]


def test_kernel_filter_passes_announcements_not_ordinary_arp_or_nd(wire: tuple[str, str]) -> None:
    a, b = wire
    ordinary = ordinary_arp_nd()

    async def main() -> tuple[Model, int]:
        model = Model()
        cap = capture.Capture(model, asyncio.get_running_loop())
        cap.open(Segment("eth0", b))
        try:
            payload = ordinary * 100 + announcements() + ordinary * 100
            await asyncio.to_thread(send, a, payload)
            for _ in range(50):
                await asyncio.sleep(0.02)
                if len(model.claims) >= 3:
                    break
            await asyncio.sleep(0.05)
            (tap,) = cap.statistics()
            return model, tap.packets
        finally:
            cap.close_all()

    model, packets = asyncio.run(main())
    assert {(k.family, k.address) for k in model.claims} == {
        ("ipv4", "192.0.2.21"),
        ("ipv4", "198.51.100.21"),
        ("ipv6", "2001:db8::21"),
    }
    assert all(set(c.macs) == {L2_MAC} for c in model.claims.values())
    assert not model.rejects
    assert packets == 3  # the 1,400 ordinary ARP and ND frames never left the kernel
