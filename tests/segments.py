"""Frames of segments as networks have them: VLAN-tagged adverts and CARP neighbours.

CARP is built here byte by byte and checksummed by scapy's `checksum` (the oracle for the
Internet checksum), not by scapy's CARP layer: loading that contrib unbinds VRRP from IP for the
whole test process.
"""

from __future__ import annotations

import struct

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import checksum

from tests.frames import GROUP4, GROUP6, advert

CARP_SRC4 = "192.0.2.31"
CARP_SRC6 = "fe80::31"


def carp_message(
    vhid: int, *, advskew: int = 0, advbase: int = 1, demote: int = 0, good: bool = True
) -> bytes:
    """A CARP header as carp(4) and ucarp send it: 36 bytes, authlen 7, checksum over itself."""
    body = struct.pack("!BBBBBBH", 0x21, vhid, advskew, 7, demote, advbase, 0)
    body += struct.pack("!Q", 0x0123456789ABCDEF) + bytes(range(20))  # counter, SHA-1 HMAC
    value = checksum(body) ^ (0 if good else 0x0101)
    return body[:6] + struct.pack("!H", value) + body[8:]


def carp(
    vhid: int,
    family: str = "ipv4",
    *,
    src: str | None = None,
    mac: str = "00:00:5e:00:01:01",
    **fields: int | bool,
) -> bytes:
    """An Ethernet frame carrying a CARP advert to the VRRP/CARP group address."""
    message = carp_message(vhid, **fields)  # type: ignore[arg-type]
    if family == "ipv4":
        l3 = IP(src=src or CARP_SRC4, dst=GROUP4, ttl=255, proto=112)
        dst = "01:00:5e:00:00:12"
    else:
        l3 = IPv6(src=src or CARP_SRC6, dst=GROUP6, hlim=255, nh=112)
        dst = "33:33:00:00:00:12"
    return bytes(Ether(src=mac, dst=dst) / l3 / Raw(message))


def tagged(frame: bytes, *vids: int, tpid: int = 0x8100) -> bytes:
    """`frame` with 802.1Q tags, outermost first; with two, the outer one is 802.1ad (QinQ)."""
    tags = b""
    for i, vid in enumerate(vids):
        outer = i == 0 and len(vids) > 1
        tags += struct.pack("!HH", 0x88A8 if outer else tpid, vid)
    return frame[:12] + tags + frame[12:]


def trunk(start: float = 1000.0, seconds: int = 10) -> list[tuple[float, bytes]]:
    """A trunk's capture, one advert per second per speaker: VRID 51 on VLAN 100 and on VLAN 200
    (other masters, other VIPs), VRID 52 inside QinQ 300.52, and on VLAN 100 a CARP neighbour
    whose vhid is 51 beside one (vhid 60) that collides with nothing."""
    a = bytes(advert(3, vrid=51, priority=200, src="192.0.2.11", addrlist=["192.0.2.51"]))
    b = bytes(advert(3, vrid=51, priority=150, src="198.51.100.11", addrlist=["198.51.100.51"]))
    q = bytes(advert(3, vrid=52, priority=100, src="192.0.2.12", addrlist=["192.0.2.52"]))
    records = []
    for i in range(seconds):
        t = start + i
        records += [
            (t, tagged(a, 100)),
            (t + 0.01, tagged(b, 200)),
            (t + 0.02, tagged(q, 300, 52)),
            (t + 0.03, tagged(carp(51, advskew=10), 100)),
            (t + 0.04, tagged(carp(60, src="192.0.2.32"), 100)),
        ]
    return records
