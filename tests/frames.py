"""Oracles and captures for the decoder and capture tests, over the frames lab.frames builds.

scapy dissects the built adverts back as an independent oracle, and computes checksums on its own.
The carp contrib is never loaded here: it unbinds VRRP from IP.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import AH
from scapy.layers.l2 import Ether
from scapy.layers.vrrp import VRRP, VRRPv3
from scapy.packet import Packet, Raw
from scapy.utils import checksum

from ka_exporter.decode import Advert, Checksum
from ka_exporter.pcap import Packet as CapturedPacket
from ka_exporter.pcap import read
from lab.frames import FRAMINGS, GROUP4, GROUP6, SRC4, SRC6, SRC_MAC, advert, auth_ints, reframe

__all__ = [
    "ADVERT_FIELDS",
    "DATA",
    "FRAMINGS",
    "GROUP4",
    "GROUP6",
    "KEY",
    "SRC4",
    "SRC6",
    "SRC_MAC",
    "advert",
    "advert_fields",
    "auth_ints",
    "canonical",
    "capture",
    "message",
    "patch",
    "pcap_bytes",
    "pseudo_header",
    "reframe",
    "replace_message",
    "scapy_fields",
    "set_checksum",
    "valid_checksums",
    "with_trailer",
]

DATA = Path(__file__).parent / "data"
KEY = b"test-key-0123456789abcdef0123456"

ADVERT_FIELDS = (
    "family",
    "src",
    "dst",
    "version",
    "vrid",
    "priority",
    "interval_cs",
    "vips",
    "auth_type",
    "ah",
    "trailer",
    "ttl",
)


def message(pkt: Packet) -> bytes:
    """The VRRP message of a built advert (checksum included)."""
    return bytes(pkt.getlayer(VRRPv3) or pkt[VRRP])


def with_trailer(pkt: Packet, trailer: bytes) -> Packet:
    """The advert with bytes after its message inside the IP payload.

    Not `pkt / Raw(trailer)`: scapy's VRRP and VRRPv3 `post_build` return the layer without its
    payload, so a Raw stacked on them silently disappears from the built frame.
    """
    return replace_message(pkt, message(pkt) + trailer) if trailer else pkt


def replace_message(pkt: Packet, payload: bytes) -> Packet:
    """A copy of an advert whose IP payload is `payload` verbatim (still IP protocol 112)."""
    out = pkt.copy()
    ip = out.getlayer(IP) or out[IPv6]
    ip.remove_payload()
    if isinstance(ip, IP):
        ip.proto = 112
    else:
        ip.nh = 112
    return out / Raw(payload)


def patch(frame: bytes, offset: int, value: bytes) -> bytes:
    return frame[:offset] + value + frame[offset + len(value) :]


def set_checksum(pkt: Packet, variant: Checksum | None) -> Packet:
    """A copy of an advert with its checksum computed per `variant`; None gives a corrupt one."""
    out = pkt.copy()
    vr = out.getlayer(VRRPv3) or out[VRRP]
    ip = out.getlayer(IP) or out[IPv6]
    vr.chksum = 0
    msg = bytes(vr)
    pseudo = checksum(pseudo_header(ip.src, ip.dst, len(msg)) + msg)
    if variant is Checksum.MESSAGE:
        vr.chksum = checksum(msg)
    elif variant is Checksum.LEGACY_UNICAST:
        vr.chksum = checksum(pseudo_header(ip.src, GROUP4, len(msg)) + msg)
    elif variant is Checksum.PSEUDO_HEADER:  # for v3 scapy's own pseudo-header computation
        vr.chksum = pseudo if vr.version == 2 else None
    else:
        vr.chksum = (checksum(msg) if vr.version == 2 else pseudo) ^ 0x0101
    return out


def pseudo_header(src: str, dst: str, length: int) -> bytes:
    """The RFC 5798 pseudo-header (RFC 768 form for IPv4, RFC 2460 §8.1 for IPv6)."""
    if ":" in src:
        return (
            socket.inet_pton(socket.AF_INET6, src)
            + socket.inet_pton(socket.AF_INET6, dst)
            + struct.pack("!IxxxB", length, 112)
        )
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 112, length)


def valid_checksums(version: int, src: str, dst: str, msg: bytes) -> list[Checksum]:
    """Every checksum variant `msg` satisfies, in the decoder's order of preference."""
    if version == 2:
        return [Checksum.MESSAGE] if checksum(msg) == 0 else []
    found = []
    if checksum(pseudo_header(src, dst, len(msg)) + msg) == 0:
        found.append(Checksum.PSEUDO_HEADER)
    if ":" not in src:
        if checksum(msg) == 0:
            found.append(Checksum.MESSAGE)
        if checksum(pseudo_header(src, GROUP4, len(msg)) + msg) == 0:
            found.append(Checksum.LEGACY_UNICAST)
    return found


def scapy_fields(frame: bytes) -> dict[str, Any]:
    """The Advert fields of an Ethernet frame as scapy dissects it (the oracle)."""
    pkt = Ether(frame)
    ip = pkt.getlayer(IP)
    if ip is not None:
        family, src, dst, ttl = "ipv4", ip.src, ip.dst, ip.ttl
        message_bytes = ip.len - ip.ihl * 4
    else:
        ip = pkt[IPv6]
        family, src, dst, ttl = "ipv6", ip.src, ip.dst, ip.hlim
        message_bytes = ip.plen
    ah = pkt.getlayer(AH)
    if ah is not None:
        message_bytes -= (ah.payloadlen + 2) * 4
    vr = pkt.getlayer(VRRP) or pkt.getlayer(VRRPv3)
    if vr is None:  # VRRPv3/IPv4 without addresses: scapy's dispatch leaves it as Raw
        bare = ip.copy()
        bare.remove_payload()
        vr = VRRPv3(bytes(ip.payload), _underlayer=bare)
    header = len(vr) - len(vr.payload)
    v2 = vr.version != 3
    return {
        "family": family,
        "src": ipaddress.ip_address(src),
        "dst": ipaddress.ip_address(dst),
        "version": vr.version,
        "vrid": vr.vrid,
        "priority": vr.priority,
        "interval_cs": vr.adv * 100 if v2 else vr.adv,
        "vips": tuple(map(ipaddress.ip_address, vr.addrlist)),
        "auth_type": vr.authtype if v2 else 0,
        "ah": ah is not None,
        "trailer": message_bytes - header,
        "ttl": ttl,
    }


def advert_fields(adv: Advert) -> dict[str, Any]:
    """The fields `scapy_fields` gives, addresses as `ipaddress` objects (scapy writes IPv6 its own
    way: '::ffff:0:0' where libc's inet_ntop, and the decoder, write '::ffff:0.0.0.0')."""
    fields = {name: getattr(adv, name) for name in ADVERT_FIELDS}
    fields["src"] = ipaddress.ip_address(adv.src)
    fields["dst"] = ipaddress.ip_address(adv.dst)
    fields["vips"] = tuple(map(ipaddress.ip_address, adv.vips))
    return fields


def canonical(address: str) -> str:
    """The libc text form of an address, as `ip addr` and netlink consumers print it."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return socket.inet_ntop(family, socket.inet_pton(family, address))


@cache
def capture(name: str) -> tuple[CapturedPacket, ...]:
    with (DATA / name).open("rb") as f:
        return tuple(read(f))


def pcap_bytes(
    records: Iterable[tuple[float, bytes]],
    linktype: int,
    *,
    endian: str = "<",
    nano: bool = False,
    snaplen: int = 262144,
) -> bytes:
    """A classic pcap file; `records` are (timestamp, frame)."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    scale = 10**9 if nano else 10**6
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for time, frame in records:
        sec = int(time)
        frac = round((time - sec) * scale)
        out.append(struct.pack(endian + "IIII", sec, frac, len(frame), len(frame)) + frame)
    return b"".join(out)
