"""Captured frame in, validated VRRP advertisement, CARP advertisement, or a reason to drop it out.

Every capture path, live or replayed, funnels its bytes through `decode`, so it validates the way an
RFC 3768/5798/9568 receiver does, returns a reason instead of raising, and reads the bytes with
plain indexing: it runs once per packet and must stay cheap.

CARP (OpenBSD/FreeBSD carp(4), pfSense, OPNsense, ucarp) shares VRRP's protocol number, group
address, first byte and virtual MACs; it is told apart by its fixed layout, not guessed, so a
CARP neighbour is named as such instead of counted as malformed VRRP. The 802.1Q/802.1ad tags a
frame carries are returned with it: two VLANs are two segments, even when they reuse a VRID.

A master announces its VIPs to the whole segment, whatever its VRRP mode: gratuitous ARP for
IPv4, unsolicited neighbour advertisements for IPv6. Those are returned as a `Claim` (this MAC
answers for this address): the L2 truth of who holds a VIP, heard even where unicast VRRP is not.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import socket
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple


class LinkType(enum.IntEnum):
    """pcap LINKTYPE_* values of the framings we accept."""

    ETHERNET = 1
    RAW = 101
    LINUX_SLL = 113
    IPV4 = 228
    IPV6 = 229
    LINUX_SLL2 = 276


class DropReason(enum.StrEnum):
    """Why a frame was not taken as an advertisement; the value is the metric label."""

    NOT_VRRP = "not_vrrp"
    TRUNCATED = "truncated"
    IP_HEADER = "ip_header"
    FRAGMENT = "fragment"
    TTL = "ttl"
    VERSION = "version"
    TYPE = "type"
    LENGTH = "length"
    VRID = "vrid"
    INTERVAL = "interval"
    CHECKSUM = "checksum"
    CARP_CHECKSUM = "carp_checksum"  # CARP's layout, but its checksum does not verify


class Checksum(enum.StrEnum):
    """Which checksum computation validated the advert (a mixed VRID is itself a finding)."""

    MESSAGE = "message"  # over the message only: VRRPv2, and VRRPv3/IPv4 per RFC 9568
    PSEUDO_HEADER = "pseudo_header"  # pseudo-header with the real destination (RFC 5798 reading)
    LEGACY_UNICAST = "legacy_unicast"  # keepalived <= 1.3.6 unicast: pseudo-header with 224.0.0.18


class Advert(NamedTuple):
    time: float
    family: str  # "ipv4" | "ipv6"
    src: str
    dst: str
    version: int
    vrid: int
    priority: int
    interval_cs: int  # Advertisement_Interval in centiseconds, v2 seconds scaled
    vips: tuple[str, ...]
    auth_type: int  # VRRPv2 auth type; 0 for v3
    auth_fingerprint: str  # keyed digest of a PASS password, "" otherwise
    ah: bool  # carried inside an IPsec AH header (keepalived auth_type AH)
    checksum: Checksum
    trailer: int  # bytes after the message, e.g. keepalived 2.4's HMAC trailer
    ttl: int
    vlan: str = ""  # VLAN IDs of the tags in the frame, outermost first: "100", "100.200"
    mac: str = ""  # the frame's source MAC, where the link layer has one

    @property
    def interval(self) -> float:
        return self.interval_cs / 100.0


class Carp(NamedTuple):
    """A CARP advertisement: only a CARP master sends them, every advbase + advskew/256 s."""

    time: float
    family: str
    src: str
    dst: str
    vhid: int
    advbase: int  # seconds
    advskew: int  # 1/256 s added to advbase; the lowest advertises fastest and wins
    demote: int  # OpenBSD's demotion counter (reserved, 0, on FreeBSD and ucarp)
    ttl: int
    vlan: str = ""
    mac: str = ""

    @property
    def interval(self) -> float:
        return self.advbase + self.advskew / 256


class Claim(NamedTuple):
    """A MAC announcing that it answers for an address: a gratuitous ARP (sender IP = target
    IP) or an unsolicited neighbour advertisement (override flag, to a multicast group)."""

    time: float
    family: str
    address: str
    mac: str  # ARP's sender hardware address; the NA's target link-layer option, else source
    vlan: str = ""


IPV4 = "ipv4"
IPV6 = "ipv6"
PROTO_VRRP = 112
PROTO_AH = 51
_VLAN_TAGS = frozenset((0x8100, 0x88A8, 0x9100))
_IPV6_EXT = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options: skipped
_IPV6_FRAGMENT = 44
_GROUP4 = int.from_bytes(socket.inet_aton("224.0.0.18"))
_ARP = 0x0806
_ARP_ETHER_IPV4 = b"\x00\x01\x08\x00\x06\x04"  # htype Ethernet, ptype IPv4, hlen 6, plen 4
_ICMPV6 = 58
_NEIGHBOR_ADVERT = 136
_NA_OVERRIDE = 0x20
# CARP's header: version 2, type 1, vhid, advskew, authlen 7 (counter + SHA-1 HMAC, in 32-bit
# words), demote, advbase, checksum, 8-byte counter, 20-byte HMAC. Read as VRRPv2, authlen is an
# address count of 7, which needs 44 bytes: 36 is never a valid VRRP message.
_CARP_SIZE = 36
_CARP_AUTHLEN = 7
_PROCESS_KEY = os.urandom(32)
_ntoa = socket.inet_ntoa


def _ntop6(b: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, b)


@lru_cache(maxsize=1024)
def fingerprint(secret: bytes, key: bytes = _PROCESS_KEY) -> str:
    """A keyed digest: equal passwords give equal prints, and a print cannot be brute-forced."""
    return hmac.new(key, secret, hashlib.sha256).hexdigest()[:12]


_ETHERNET, _SLL, _SLL2 = (
    LinkType.ETHERNET.value,
    LinkType.LINUX_SLL.value,
    LinkType.LINUX_SLL2.value,
)
_RAW_IP = frozenset((LinkType.RAW.value, LinkType.IPV4.value, LinkType.IPV6.value))
_MEMO_SIZE = 4096
# Validated adverts by (family, ttl, ah, addresses + message): a master repeats the same message
# every interval, so the steady state skips validation and address formatting. Bounded.
# (Advert or Carp, its fields between `time` and `vlan`), or why it was dropped
_Decoded = tuple[Callable[..., Advert | Carp], tuple[object, ...]] | DropReason
_memo: dict[tuple[bytes, bytes], _Decoded] = {}


Decoded = Advert | Carp | Claim | DropReason


def decode(
    frame: bytes, time: float, linktype: int = _ETHERNET, key: bytes = _PROCESS_KEY
) -> Decoded:
    n = len(frame)
    vlan = mac = ""
    if linktype in (_ETHERNET, _SLL):
        # libpcap puts a stripped 802.1Q tag back into SLL frames, just as it sits in Ethernet
        off = 12 if linktype == _ETHERNET else 14
        if n < off + 2:
            return DropReason.TRUNCATED
        mac = (frame[6:12] if off == 12 else frame[6 : 6 + min(frame[5], 8)]).hex(":")
        ethertype = frame[off] << 8 | frame[off + 1]
        while ethertype in _VLAN_TAGS:
            if n < off + 6:
                return DropReason.TRUNCATED
            vid = (frame[off + 2] & 0x0F) << 8 | frame[off + 3]
            if vid:  # VID 0 is a priority tag: no VLAN
                vlan = f"{vlan}.{vid}" if vlan else str(vid)
            off += 4
            ethertype = frame[off] << 8 | frame[off + 1]
        off += 2
    elif linktype == _SLL2:
        if n < 20:
            return DropReason.TRUNCATED
        ethertype, off = frame[0] << 8 | frame[1], 20
        mac = frame[12 : 12 + min(frame[11], 8)].hex(":")
    elif linktype in _RAW_IP:
        if n < 1:
            return DropReason.TRUNCATED
        ethertype, off = (0x86DD if frame[0] >> 4 == 6 else 0x0800), 0
    else:
        return DropReason.NOT_VRRP
    if ethertype == 0x0800:
        return _ipv4(frame, off, time, key, vlan, mac)
    if ethertype == 0x86DD:
        return _ipv6(frame, off, time, key, vlan, mac)
    if ethertype == _ARP:
        return _arp(frame, off, time, vlan)
    return DropReason.NOT_VRRP


def _arp(frame: bytes, off: int, time: float, vlan: str) -> Claim | DropReason:
    """Gratuitous ARP, request or reply: the sender's address is the one it asks about. An RFC
    5227 probe (sender 0.0.0.0) claims nothing yet."""
    if len(frame) < off + 28:
        return DropReason.TRUNCATED
    spa = frame[off + 14 : off + 18]
    if (
        frame[off : off + 6] != _ARP_ETHER_IPV4
        or frame[off + 6] != 0
        or frame[off + 7] not in (1, 2)
        or spa != frame[off + 24 : off + 28]
        or spa == b"\0\0\0\0"
    ):
        return DropReason.NOT_VRRP
    return Claim(time, IPV4, _ntoa(spa), frame[off + 8 : off + 14].hex(":"), vlan)


def _neighbour_advert(
    frame: bytes, p: int, end: int, off: int, time: float, vlan: str, mac: str
) -> Claim | DropReason:
    """An unsolicited NA: override flag set, to a multicast group (all-nodes, or a reply to
    someone's duplicate address detection). A solicited one goes to the asker alone."""
    if end <= p or frame[p] != _NEIGHBOR_ADVERT:
        return DropReason.NOT_VRRP
    if end < p + 24:
        return DropReason.TRUNCATED
    if frame[p + 1] != 0 or not frame[p + 4] & _NA_OVERRIDE or frame[off + 24] != 0xFF:
        return DropReason.NOT_VRRP
    if frame[off + 7] != 255:
        return DropReason.TTL
    src, dst = frame[off + 8 : off + 24], frame[off + 24 : off + 40]
    size = end - p
    pseudo = int.from_bytes(src) + int.from_bytes(dst) + size + _ICMPV6
    if (int.from_bytes(frame[p:end] + bytes(size & 1)) + pseudo) % 0xFFFF:
        return DropReason.CHECKSUM
    o = p + 24
    while o + 8 <= end and frame[o + 1]:
        if frame[o] == 2 and frame[o + 1] == 1:  # target link-layer address
            mac = frame[o + 2 : o + 8].hex(":")
            break
        o += frame[o + 1] * 8
    return Claim(time, IPV6, _ntop6(frame[p + 8 : p + 24]), mac, vlan)


def _ipv4(
    frame: bytes, off: int, time: float, key: bytes, vlan: str, mac: str
) -> Advert | Carp | DropReason:
    if len(frame) < off + 20:
        return DropReason.TRUNCATED
    b0 = frame[off]
    ihl = (b0 & 0x0F) * 4
    total = frame[off + 2] << 8 | frame[off + 3]
    if b0 >> 4 != 4 or ihl < 20 or total < ihl:
        return DropReason.IP_HEADER
    end = off + total
    if end > len(frame) or len(frame) < off + ihl:
        return DropReason.TRUNCATED
    proto = frame[off + 9]
    if proto not in (PROTO_VRRP, PROTO_AH):
        return DropReason.NOT_VRRP
    if (frame[off + 6] << 8 | frame[off + 7]) & 0x3FFF:
        return DropReason.FRAGMENT
    p = off + ihl
    ah = proto == PROTO_AH
    if ah:
        if end < p + 12:
            return DropReason.TRUNCATED
        proto = frame[p]
        p += (frame[p + 1] + 2) * 4
    if proto != PROTO_VRRP:
        return DropReason.NOT_VRRP
    src = frame[off + 12 : off + 16]
    dst = frame[off + 16 : off + 20]
    return _memoized(frame, p, end, IPV4, src, dst, frame[off + 8], ah, time, key, vlan, mac)


def _ipv6(frame: bytes, off: int, time: float, key: bytes, vlan: str, mac: str) -> Decoded:
    if len(frame) < off + 40:
        return DropReason.TRUNCATED
    if frame[off] >> 4 != 6:
        return DropReason.IP_HEADER
    end = off + 40 + (frame[off + 4] << 8 | frame[off + 5])
    if end > len(frame):
        return DropReason.TRUNCATED
    nh = frame[off + 6]
    p = off + 40
    while nh in _IPV6_EXT:
        if end < p + 8:
            return DropReason.TRUNCATED
        nh, p = frame[p], p + (frame[p + 1] + 1) * 8
    if nh == _IPV6_FRAGMENT:
        return DropReason.FRAGMENT
    if nh == _ICMPV6:
        return _neighbour_advert(frame, p, end, off, time, vlan, mac)
    if nh != PROTO_VRRP:
        return DropReason.NOT_VRRP
    src = frame[off + 8 : off + 24]
    dst = frame[off + 24 : off + 40]
    return _memoized(frame, p, end, IPV6, src, dst, frame[off + 7], False, time, key, vlan, mac)


def _memoized(
    frame: bytes,
    p: int,
    end: int,
    family: str,
    src: bytes,
    dst: bytes,
    ttl: int,
    ah: bool,
    time: float,
    key: bytes,
    vlan: str,
    mac: str,
) -> Advert | Carp | DropReason:
    memo_key = (key, b"%c%c%c%s%s%s" % (len(src), ttl, ah, src, dst, frame[p:end]))
    decoded = _memo.get(memo_key)
    if decoded is None:
        decoded = _message(frame, p, end, family, src, dst, ttl, ah, key)
        if len(_memo) >= _MEMO_SIZE:
            _memo.clear()
        _memo[memo_key] = decoded
    if isinstance(decoded, DropReason):
        return decoded
    kind, fields = decoded
    return kind(time, *fields, vlan, mac)


def _message(
    frame: bytes,
    p: int,
    end: int,
    family: str,
    src: bytes,
    dst: bytes,
    ttl: int,
    ah: bool,
    key: bytes,
) -> _Decoded:
    """Validates one message; returns its kind and its fields after `time`."""
    if end < p + 8:
        return DropReason.LENGTH
    # RFC 3768/5798 receivers drop TTL != 255; keepalived skips the check for unicast adverts,
    # whose TTL its `unicast_ttl` option sets.
    if ttl != 255 and (dst[0] >> 4 == 0xE if family == IPV4 else dst[0] == 0xFF):
        return DropReason.TTL
    if frame[p] == 0x21 and frame[p + 3] == _CARP_AUTHLEN and end - p == _CARP_SIZE and not ah:
        return _carp(frame, p, family, src, dst, ttl)
    version = frame[p] >> 4
    if version not in (2, 3) or (version == 2 and family == IPV6):
        return DropReason.VERSION
    if frame[p] & 0x0F != 1:
        return DropReason.TYPE
    count = frame[p + 3]
    alen = 4 if family == IPV4 else 16
    size = 8 + alen * count + (8 if version == 2 else 0)
    if end < p + size:
        return DropReason.LENGTH
    vrid = frame[p + 1]
    if vrid == 0:
        return DropReason.VRID
    interval_cs = frame[p + 5] * 100 if version == 2 else (frame[p + 4] & 0x0F) << 8 | frame[p + 5]
    if interval_cs == 0:
        return DropReason.INTERVAL
    total = int.from_bytes(frame[p : p + size])
    if version == 2:
        checksum = Checksum.MESSAGE if total % 0xFFFF == 0 else None
    else:
        checksum = _v3_checksum(total, family, src, dst, size)
    if checksum is None:
        return DropReason.CHECKSUM
    auth_type = frame[p + 4] if version == 2 else 0
    fp = fingerprint(frame[p + size - 8 : p + size], key) if auth_type == 1 else ""
    a = p + 8
    if family == IPV4:
        vips = tuple(_ntoa(frame[i : i + 4]) for i in range(a, a + 4 * count, 4))
        src_s, dst_s = _ntoa(src), _ntoa(dst)
    else:
        vips = tuple(_ntop6(frame[i : i + 16]) for i in range(a, a + 16 * count, 16))
        src_s, dst_s = _ntop6(src), _ntop6(dst)
    return Advert, (
        family,
        src_s,
        dst_s,
        version,
        vrid,
        frame[p + 2],
        interval_cs,
        vips,
        auth_type,
        fp,
        ah,
        checksum,
        end - p - size,
        ttl,
    )


def _carp(frame: bytes, p: int, family: str, src: bytes, dst: bytes, ttl: int) -> _Decoded:
    # carp(4) and ucarp checksum the 36-byte header alone, over IPv6 too: no pseudo-header
    if int.from_bytes(frame[p : p + _CARP_SIZE]) % 0xFFFF:
        return DropReason.CARP_CHECKSUM
    vhid = frame[p + 1]
    if vhid == 0:
        return DropReason.VRID
    ntoa = _ntoa if family == IPV4 else _ntop6
    fields = (family, ntoa(src), ntoa(dst), vhid, frame[p + 5], frame[p + 2], frame[p + 4], ttl)
    return Carp, fields


def _v3_checksum(total: int, family: str, src: bytes, dst: bytes, size: int) -> Checksum | None:
    # The Internet checksum is the one's-complement sum of 16-bit words; as 2**16 == 1 (mod 0xFFFF),
    # a buffer sums to 0xFFFF exactly when its value as one big integer is 0 mod 0xFFFF.
    src_i = int.from_bytes(src)
    if (total + src_i + int.from_bytes(dst) + size + PROTO_VRRP) % 0xFFFF == 0:
        return Checksum.PSEUDO_HEADER
    if family == IPV4:
        if total % 0xFFFF == 0:
            return Checksum.MESSAGE
        if (total + src_i + _GROUP4 + size + PROTO_VRRP) % 0xFFFF == 0:
            return Checksum.LEGACY_UNICAST
    return None
