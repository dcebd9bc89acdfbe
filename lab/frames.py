"""VRRP frames for the tests and the benchmarks: adverts built by scapy, moved into the other link
layers the decoder accepts, and re-addressed without scapy when thousands are needed.

scapy computes the checksums the way keepalived does. Its carp contrib is never loaded here: it
unbinds VRRP from IP.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import AH
from scapy.layers.l2 import Ether
from scapy.layers.vrrp import VRRP, VRRPv3
from scapy.packet import Packet, bind_layers

from ka_exporter.decode import LinkType

# scapy leaves an AH-wrapped advert as Raw unless told that AH next header 112 is VRRP.
bind_layers(AH, VRRP, nh=112)

GROUP4 = "224.0.0.18"
GROUP6 = "ff02::12"
SRC4 = "192.0.2.11"
SRC6 = "fe80::f8f6:94ff:fe7b:2112"
SRC_MAC = "02:00:00:00:00:0b"

FRAMINGS = ("ethernet", "dot1q", "qinq", "sll", "sll2", "raw", "raw_family")


def auth_ints(secret: bytes) -> tuple[int, int]:
    """VRRPv2 auth data as scapy's auth1/auth2 (the password NUL-padded to 8 bytes)."""
    a, b = struct.unpack("!II", secret.ljust(8, b"\0")[:8])
    return a, b


def advert(
    version: int = 3,
    family: str = "ipv4",
    *,
    src: str | None = None,
    dst: str | None = None,
    ttl: int = 255,
    ah: bool = False,
    auth: bytes | None = None,
    **fields: Any,
) -> Packet:
    """Ether/IP(v6)/[AH]/VRRP(v3) with scapy's checksums; `fields` go to the VRRP layer."""
    v3_ipv6 = (version, family) == (3, "ipv6")
    fields.setdefault("addrlist", ["2001:db8::50"] if v3_ipv6 else ["192.0.2.50"])
    if family == "ipv4":
        l3: Packet = IP(src=src or SRC4, dst=dst or GROUP4, ttl=ttl)
    else:
        l3 = IPv6(src=src or SRC6, dst=dst or GROUP6, hlim=ttl)
    if version == 3:
        message: Packet = VRRPv3(**fields)
    else:
        if auth is not None:
            fields["auth1"], fields["auth2"] = auth_ints(auth)
        message = VRRP(version=version, **fields)
    if family == "ipv6":
        l3.nh = 112  # scapy binds only VRRPv3 to IPv6
    if ah:
        l3 = l3 / AH(nh=112, payloadlen=4, spi=0xC000020B, seq=1, icv=b"\xa7" * 12)
    frame: Packet = Ether(src=SRC_MAC, dst=_dst_mac(l3.dst)) / l3 / message
    return frame


def _dst_mac(dst: str) -> str:
    if dst == GROUP4:
        return "01:00:5e:00:00:12"
    return "33:33:00:00:00:12" if dst == GROUP6 else "02:00:00:00:00:0c"


def reframe(frame: bytes, framing: str) -> tuple[bytes, int]:
    """An untagged Ethernet frame moved into another framing: (frame, pcap linktype)."""
    dst_src, ethertype, payload = frame[:12], frame[12:14], frame[14:]
    if framing == "ethernet":
        return frame, LinkType.ETHERNET
    if framing == "dot1q":
        return dst_src + b"\x81\x00\x00\x2a" + ethertype + payload, LinkType.ETHERNET
    if framing == "qinq":
        tags = b"\x88\xa8\x00\x64\x81\x00\x00\x2a"
        return dst_src + tags + ethertype + payload, LinkType.ETHERNET
    if framing == "sll":
        head = struct.pack("!HHH8s", 0, 1, 6, frame[6:12]) + ethertype
        return head + payload, LinkType.LINUX_SLL
    if framing == "sll2":
        head = ethertype + struct.pack("!HIHBB8s", 0, 2, 1, 0, 6, frame[6:12])
        return head + payload, LinkType.LINUX_SLL2
    if framing == "raw":
        return payload, LinkType.RAW
    if framing == "raw_family":
        return payload, LinkType.IPV6 if payload[:1] and payload[0] >> 4 == 6 else LinkType.IPV4
    raise ValueError(framing)


def checksum(data: bytes | bytearray) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    words: tuple[int, ...] = struct.unpack(f"!{len(data) // 2}H", data)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def respoof(template: bytes, src: str, vrid: int) -> bytes:
    """A VRRPv3 advert (Ethernet, no IP options) from another source and VRID, its IPv4 header
    and RFC 5798 pseudo-header checksums made anew: thousands of them cost microseconds each
    instead of scapy's milliseconds."""
    b = bytearray(template)
    if b[12:14] == b"\x08\x00":
        ip, vrrp = 14, 34
        b[ip + 12 : ip + 16] = socket.inet_pton(socket.AF_INET, src)
        b[ip + 10 : ip + 12] = bytes(2)
        b[ip + 10 : ip + 12] = checksum(b[ip:vrrp]).to_bytes(2)
        pseudo = bytes(b[ip + 12 : ip + 20]) + struct.pack("!BBH", 0, 112, len(b) - vrrp)
    else:
        ip, vrrp = 14, 54
        b[ip + 8 : ip + 24] = socket.inet_pton(socket.AF_INET6, src)
        pseudo = bytes(b[ip + 8 : ip + 40]) + struct.pack("!I3xB", len(b) - vrrp, 112)
    b[vrrp + 1] = vrid
    b[vrrp + 6 : vrrp + 8] = bytes(2)
    b[vrrp + 6 : vrrp + 8] = checksum(pseudo + bytes(b[vrrp:])).to_bytes(2)
    return bytes(b)
