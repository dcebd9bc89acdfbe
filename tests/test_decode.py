"""Unit tests of `ka_exporter.decode`: scapy as the oracle, hand-built frames for every verdict."""

from __future__ import annotations

import ipaddress
import struct
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP, IPOption_Router_Alert
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6NDOptDstLLAddr,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vrrp import VRRP, VRRPv3
from scapy.packet import Packet, Raw

from ka_exporter.decode import (
    Advert,
    Carp,
    Checksum,
    Claim,
    DropReason,
    LinkType,
    decode,
    fingerprint,
)
from tests import segments
from tests.frames import (
    FRAMINGS,
    GROUP4,
    GROUP6,
    KEY,
    SRC4,
    SRC6,
    SRC_MAC,
    advert,
    advert_fields,
    canonical,
    capture,
    message,
    patch,
    reframe,
    replace_message,
    scapy_fields,
    set_checksum,
    valid_checksums,
    with_trailer,
)

PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=1000, deadline=None)
KINDS = {"v2": (2, "ipv4"), "v3-ipv4": (3, "ipv4"), "v3-ipv6": (3, "ipv6")}
ALL_LINKTYPES = [*LinkType, 0, 147, 0xFFFF]


def decoded(frame: bytes, linktype: int = LinkType.ETHERNET) -> Advert:
    result = decode(frame, 1.5, linktype, KEY)
    assert isinstance(result, Advert), result
    return result


def kind(name: str, **fields: Any) -> Packet:
    version, family = KINDS[name]
    return advert(version, family, **fields)


def test_scapy_vrrp_bindings_intact() -> None:
    """scapy's carp contrib unbinds VRRP from IP; nothing here may load it."""
    assert "scapy.contrib.carp" not in sys.modules
    assert isinstance(Ether(bytes(advert(2)))[2], VRRP)


# ---------------------------------------------------------------------------------------------
# Property tests against scapy


def addresses(version: int) -> st.SearchStrategy[list[str]]:
    return st.lists(st.ip_addresses(v=version).map(str), max_size=24)


src4 = st.integers(0, 255).map(lambda i: f"192.0.2.{i}")
src6 = st.integers(0, 2**64 - 1).map(lambda i: str(ipaddress.IPv6Address(0xFE80 << 112 | i)))
trailers = st.one_of(st.just(b""), st.binary(min_size=1, max_size=32))


@st.composite
def v2_adverts(draw: st.DrawFn) -> Packet:
    return advert(
        2,
        "ipv4",
        src=draw(src4),
        ah=draw(st.booleans()),
        vrid=draw(st.integers(1, 255)),
        priority=draw(st.integers(0, 255)),
        authtype=draw(st.sampled_from([0, 1, 2])),
        adv=draw(st.integers(1, 255)),
        addrlist=draw(addresses(4)),
        auth1=draw(st.integers(0, 2**32 - 1)),
        auth2=draw(st.integers(0, 2**32 - 1)),
    )


@st.composite
def v3_adverts(draw: st.DrawFn, family: str) -> Packet:
    return advert(
        3,
        family,
        src=draw(src4 if family == "ipv4" else src6),
        vrid=draw(st.integers(1, 255)),
        priority=draw(st.integers(0, 255)),
        res=draw(st.integers(0, 15)),
        adv=draw(st.integers(1, 4095)),
        addrlist=draw(addresses(4 if family == "ipv4" else 6)),
    )


any_advert = st.one_of(v2_adverts(), v3_adverts("ipv4"), v3_adverts("ipv6"))


@PROPERTY
@given(pkt=any_advert, trailer=trailers, framing=st.sampled_from(FRAMINGS), pad=st.booleans())
def test_decode_agrees_with_scapy(pkt: Packet, trailer: bytes, framing: str, pad: bool) -> None:
    frame = bytes(with_trailer(pkt, trailer))
    if pad:
        frame = frame.ljust(60, b"\0")
    adv = decoded(*reframe(frame, framing))
    assert advert_fields(adv) == scapy_fields(frame)
    vr = pkt.getlayer(VRRPv3) or pkt[VRRP]
    assert adv.time == 1.5
    assert adv.trailer == len(trailer)
    assert adv.vips == tuple(canonical(a) for a in vr.addrlist)
    assert adv.src == canonical(pkt[1].src)
    assert adv.checksum == (Checksum.MESSAGE if vr.version == 2 else Checksum.PSEUDO_HEADER)
    v2_pass = vr.version == 2 and vr.authtype == 1
    secret = struct.pack("!II", vr.auth1, vr.auth2) if v2_pass else b""
    assert adv.auth_fingerprint == (fingerprint(secret, KEY) if v2_pass else "")


@PROPERTY
@given(
    pkt=v3_adverts("ipv4"),
    dst=st.one_of(st.just(GROUP4), src4),
    variant=st.sampled_from([*Checksum, None]),
    trailer=trailers,
)
def test_v3_ipv4_checksum_variant(
    pkt: Packet, dst: str, variant: Checksum | None, trailer: bytes
) -> None:
    pkt[IP].dst = dst
    pkt = set_checksum(pkt, variant)
    valid = valid_checksums(3, pkt[IP].src, dst, message(pkt))
    if variant is not None:
        assert variant in valid
    frame = bytes(with_trailer(pkt, trailer))
    result = decode(frame, 0.0, LinkType.ETHERNET, KEY)
    if valid:  # several variants can hold at once; the decoder reports the first it tries
        assert isinstance(result, Advert)
        assert result.checksum == valid[0]
        assert advert_fields(result) == scapy_fields(frame)
    else:
        assert result is DropReason.CHECKSUM


@PROPERTY
@given(pkt=v3_adverts("ipv6"))
def test_ipv6_requires_the_pseudo_header(pkt: Packet) -> None:
    without = set_checksum(pkt, Checksum.MESSAGE)
    valid = valid_checksums(3, pkt[IPv6].src, pkt[IPv6].dst, message(without))
    result = decode(bytes(without), 0.0, LinkType.ETHERNET, KEY)
    if valid:  # the message-only sum happens to satisfy the pseudo-header sum as well
        assert isinstance(result, Advert)
        assert result.checksum == Checksum.PSEUDO_HEADER
    else:
        assert result is DropReason.CHECKSUM


# ---------------------------------------------------------------------------------------------
# Checksum variants, by example

UNICAST = "192.0.2.12"


@pytest.mark.parametrize(
    ("pkt", "expected"),
    [
        pytest.param(advert(3), Checksum.PSEUDO_HEADER, id="v3-ipv4-rfc5798"),
        pytest.param(advert(3, dst=UNICAST), Checksum.PSEUDO_HEADER, id="v3-ipv4-unicast-rfc5798"),
        pytest.param(advert(3, "ipv6"), Checksum.PSEUDO_HEADER, id="v3-ipv6"),
        pytest.param(
            set_checksum(advert(3), Checksum.MESSAGE), Checksum.MESSAGE, id="v3-ipv4-rfc9568"
        ),
        pytest.param(
            set_checksum(advert(3, dst=UNICAST), Checksum.MESSAGE),
            Checksum.MESSAGE,
            id="v3-ipv4-unicast-rfc9568",
        ),
        pytest.param(
            set_checksum(advert(3, dst=UNICAST), Checksum.LEGACY_UNICAST),
            Checksum.LEGACY_UNICAST,
            id="v3-ipv4-legacy-unicast",
        ),
        pytest.param(advert(2), Checksum.MESSAGE, id="v2"),
        pytest.param(advert(2, ah=True, authtype=2), Checksum.MESSAGE, id="v2-ah"),
        pytest.param(set_checksum(advert(2), None), DropReason.CHECKSUM, id="v2-corrupt"),
        pytest.param(
            set_checksum(advert(2), Checksum.PSEUDO_HEADER),
            DropReason.CHECKSUM,
            id="v2-pseudo-header",
        ),
        pytest.param(set_checksum(advert(3), None), DropReason.CHECKSUM, id="v3-ipv4-corrupt"),
        pytest.param(
            set_checksum(advert(3, "ipv6"), None), DropReason.CHECKSUM, id="v3-ipv6-corrupt"
        ),
        pytest.param(
            set_checksum(advert(3, "ipv6"), Checksum.MESSAGE),
            DropReason.CHECKSUM,
            id="v3-ipv6-without-pseudo-header",
        ),
    ],
)
def test_checksum_variants(pkt: Packet, expected: Checksum | DropReason) -> None:
    result = decode(bytes(pkt), 0.0, LinkType.ETHERNET, KEY)
    assert (result.checksum if isinstance(result, Advert) else result) == expected


def test_real_v3_unicast_checksum_is_pseudo_header() -> None:
    """keepalived 2.2.7's v3 unicast adverts (VRID 53) use the real destination."""
    adverts = [decode(p.frame, p.time, p.linktype, KEY) for p in capture("vrrp-all.pcap")]
    unicast = [a for a in adverts if isinstance(a, Advert) and a.vrid == 53]
    assert unicast
    assert {a.checksum for a in unicast} == {Checksum.PSEUDO_HEADER}
    assert {a.dst for a in unicast} == {"192.0.2.12", "192.0.2.11"}


# ---------------------------------------------------------------------------------------------
# Every reject reason, with hand-built frames


def _fragment6() -> bytes:
    msg = message(advert(3, "ipv6"))
    ip = IPv6(src=SRC6, dst=GROUP6, hlim=255) / IPv6ExtHdrFragment(nh=112, m=1, id=7)
    return bytes(Ether(src=SRC_MAC, dst="33:33:00:00:00:12") / ip / Raw(msg))


def _ip_fields(pkt: Packet, **fields: Any) -> bytes:
    pkt = pkt.copy()
    for name, value in fields.items():
        setattr(pkt.getlayer(IP) or pkt[IPv6], name, value)
    return bytes(pkt)


def _sll(payload: Packet) -> bytes:
    return reframe(bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=SRC_MAC) / payload), "sll")[0]


V2, V3, V6 = bytes(advert(2)), bytes(advert(3)), bytes(advert(3, "ipv6"))
ETH = LinkType.ETHERNET

REJECTS = [
    # not_vrrp
    pytest.param(
        bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=SRC_MAC) / ARP(psrc=SRC4, pdst=GROUP4)),
        ETH,
        DropReason.NOT_VRRP,
        id="not_vrrp-arp",
    ),
    pytest.param(
        bytes(
            Ether(dst="01:00:5e:00:00:12")
            / IP(dst=GROUP4, ttl=255)
            / UDP()
            / Raw(message(advert(3)))
        ),
        ETH,
        DropReason.NOT_VRRP,
        id="not_vrrp-udp",
    ),
    pytest.param(
        bytes(Ether(dst="33:33:00:00:00:01") / IPv6(src=SRC6, dst="ff02::1") / ICMPv6EchoRequest()),
        ETH,
        DropReason.NOT_VRRP,
        id="not_vrrp-icmpv6",
    ),
    pytest.param(
        bytes(
            Ether(dst="01:00:5e:00:00:12")
            / IP(src=SRC4, dst=GROUP4, ttl=255)
            / AH(nh=17, payloadlen=4, icv=bytes(12))
            / UDP()
        ),
        ETH,
        DropReason.NOT_VRRP,
        id="not_vrrp-ah-udp",
    ),
    pytest.param(V3, 147, DropReason.NOT_VRRP, id="not_vrrp-unknown-linktype"),
    pytest.param(
        _sll(ARP(psrc=SRC4, pdst=GROUP4)),
        LinkType.LINUX_SLL,
        DropReason.NOT_VRRP,
        id="not_vrrp-sll-arp",
    ),
    # truncated
    pytest.param(V3[:13], ETH, DropReason.TRUNCATED, id="truncated-ethernet"),
    pytest.param(reframe(V3, "dot1q")[0][:17], ETH, DropReason.TRUNCATED, id="truncated-vlan-tag"),
    pytest.param(reframe(V3, "qinq")[0][:21], ETH, DropReason.TRUNCATED, id="truncated-qinq-tag"),
    pytest.param(V3[: 14 + 19], ETH, DropReason.TRUNCATED, id="truncated-ipv4-header"),
    pytest.param(V3[:-1], ETH, DropReason.TRUNCATED, id="truncated-ipv4-total-length"),
    pytest.param(V2[:-8], ETH, DropReason.TRUNCATED, id="truncated-v2-ipv4-total-length"),
    pytest.param(V6[: 14 + 39], ETH, DropReason.TRUNCATED, id="truncated-ipv6-header"),
    pytest.param(V6[:-1], ETH, DropReason.TRUNCATED, id="truncated-ipv6-payload-length"),
    pytest.param(
        bytes(Ether() / IPv6(src=SRC6, dst=GROUP6, hlim=255, nh=0) / Raw(b"\x70\0\0\0")),
        ETH,
        DropReason.TRUNCATED,
        id="truncated-ipv6-extension-header",
    ),
    pytest.param(
        bytes(Ether() / IP(src=SRC4, dst=GROUP4, ttl=255, proto=51) / Raw(bytes(8))),
        ETH,
        DropReason.TRUNCATED,
        id="truncated-ah",
    ),
    pytest.param(
        reframe(V3, "sll")[0][:15], LinkType.LINUX_SLL, DropReason.TRUNCATED, id="truncated-sll"
    ),
    pytest.param(
        reframe(V3, "sll2")[0][:19], LinkType.LINUX_SLL2, DropReason.TRUNCATED, id="truncated-sll2"
    ),
    pytest.param(b"", LinkType.RAW, DropReason.TRUNCATED, id="truncated-raw-empty"),
    pytest.param(V3[14:30], LinkType.IPV4, DropReason.TRUNCATED, id="truncated-raw-ipv4"),
    # ip_header
    pytest.param(patch(V3, 14, b"\x44"), ETH, DropReason.IP_HEADER, id="ip_header-ihl-4"),
    pytest.param(
        patch(V3, 14, b"\x65"), ETH, DropReason.IP_HEADER, id="ip_header-version-6-in-ipv4"
    ),
    pytest.param(
        patch(V3, 16, b"\x00\x13"), ETH, DropReason.IP_HEADER, id="ip_header-total-below-ihl"
    ),
    pytest.param(
        patch(V3, 12, b"\x86\xdd").ljust(60, b"\0"),
        ETH,
        DropReason.IP_HEADER,
        id="ip_header-v4-in-v6",
    ),
    # fragment
    pytest.param(
        _ip_fields(advert(3), flags="MF"), ETH, DropReason.FRAGMENT, id="fragment-ipv4-mf"
    ),
    pytest.param(
        _ip_fields(advert(3), frag=1), ETH, DropReason.FRAGMENT, id="fragment-ipv4-offset"
    ),
    pytest.param(_fragment6(), ETH, DropReason.FRAGMENT, id="fragment-ipv6-header"),
    # ttl
    pytest.param(bytes(advert(2, ttl=254)), ETH, DropReason.TTL, id="ttl-v2-254"),
    pytest.param(bytes(advert(3, ttl=254)), ETH, DropReason.TTL, id="ttl-v3-ipv4-254"),
    pytest.param(bytes(advert(3, "ipv6", ttl=254)), ETH, DropReason.TTL, id="ttl-v3-ipv6-254"),
    # version
    pytest.param(bytes(advert(1)), ETH, DropReason.VERSION, id="version-1"),
    pytest.param(bytes(advert(4)), ETH, DropReason.VERSION, id="version-4"),
    pytest.param(bytes(advert(2, "ipv6")), ETH, DropReason.VERSION, id="version-v2-over-ipv6"),
    # type
    pytest.param(bytes(advert(2, type=2)), ETH, DropReason.TYPE, id="type-2-v2"),
    pytest.param(bytes(advert(3, type=2)), ETH, DropReason.TYPE, id="type-2-v3"),
    pytest.param(bytes(advert(3, "ipv6", type=0)), ETH, DropReason.TYPE, id="type-0-v3-ipv6"),
    # length
    pytest.param(
        bytes(advert(3, ipcount=3, addrlist=["192.0.2.1", "192.0.2.2"])),
        ETH,
        DropReason.LENGTH,
        id="length-v3-ipv4-count-beyond-payload",
    ),
    pytest.param(
        bytes(advert(3, "ipv6", ipcount=2)), ETH, DropReason.LENGTH, id="length-v3-ipv6-count"
    ),
    pytest.param(bytes(advert(2, ipcount=2)), ETH, DropReason.LENGTH, id="length-v2-count"),
    pytest.param(
        bytes(replace_message(advert(2), message(advert(2))[:-4])),
        ETH,
        DropReason.LENGTH,
        id="length-v2-4-bytes-short",
    ),
    pytest.param(
        bytes(replace_message(advert(3), message(advert(3))[:7])),
        ETH,
        DropReason.LENGTH,
        id="length-below-8-bytes",
    ),
    # vrid
    pytest.param(bytes(advert(2, vrid=0)), ETH, DropReason.VRID, id="vrid-0-v2"),
    pytest.param(bytes(advert(3, vrid=0)), ETH, DropReason.VRID, id="vrid-0-v3-ipv4"),
    pytest.param(bytes(advert(3, "ipv6", vrid=0)), ETH, DropReason.VRID, id="vrid-0-v3-ipv6"),
    # interval
    pytest.param(bytes(advert(2, adv=0)), ETH, DropReason.INTERVAL, id="interval-0-v2"),
    pytest.param(bytes(advert(3, adv=0)), ETH, DropReason.INTERVAL, id="interval-0-v3-ipv4"),
    pytest.param(
        bytes(advert(3, "ipv6", adv=0)), ETH, DropReason.INTERVAL, id="interval-0-v3-ipv6"
    ),
    pytest.param(
        bytes(advert(3, adv=0, res=15)), ETH, DropReason.INTERVAL, id="interval-0-v3-reserved-bits"
    ),
    # checksum
    pytest.param(bytes(set_checksum(advert(2), None)), ETH, DropReason.CHECKSUM, id="checksum-v2"),
    pytest.param(bytes(set_checksum(advert(3), None)), ETH, DropReason.CHECKSUM, id="checksum-v3"),
    pytest.param(segments.carp(7, good=False), ETH, DropReason.CARP_CHECKSUM, id="carp-checksum"),
    pytest.param(
        segments.carp(7, "ipv6", good=False), ETH, DropReason.CARP_CHECKSUM, id="carp-checksum-v6"
    ),
]


@pytest.mark.parametrize(("frame", "linktype", "reason"), REJECTS)
def test_reject(frame: bytes, linktype: int, reason: DropReason) -> None:
    assert decode(frame, 0.0, linktype, KEY) is reason


def test_every_reject_reason_is_covered() -> None:
    assert {p.values[2] for p in REJECTS} == set(DropReason)


# ---------------------------------------------------------------------------------------------
# Accepted framings and envelopes


@pytest.mark.parametrize("name", KINDS)
@pytest.mark.parametrize("framing", FRAMINGS)
def test_framings_give_the_same_advert(name: str, framing: str) -> None:
    frame = bytes(kind(name, vrid=42, priority=200))
    vlan = {"dot1q": "42", "qinq": "100.42"}.get(framing, "")
    mac = "" if framing.startswith("raw") else SRC_MAC  # SLL carries the source address too
    assert decoded(*reframe(frame, framing)) == decoded(frame)._replace(vlan=vlan, mac=mac)


@pytest.mark.parametrize(
    "tags",
    [
        pytest.param(b"\x81\x00\x00\x2a", id="802.1q"),
        pytest.param(b"\x88\xa8\x00\x64\x81\x00\x00\x2a", id="qinq-88a8"),
        pytest.param(b"\x91\x00\x00\x64\x81\x00\x00\x2a", id="qinq-9100"),
        pytest.param(b"\x81\x00\x00\x64\x81\x00\x00\x2a", id="double-8100"),
    ],
)
@pytest.mark.parametrize("name", KINDS)
def test_vlan_tags(tags: bytes, name: str) -> None:
    """The advert is the same; the VLAN IDs of its tags, outermost first, come with it."""
    frame = bytes(kind(name))
    adv = decoded(frame[:12] + tags + frame[12:])
    vids = [struct.unpack("!H", tags[i + 2 : i + 4])[0] & 0xFFF for i in range(0, len(tags), 4)]
    assert adv.vlan == ".".join(map(str, vids))
    assert adv._replace(vlan="") == decoded(frame)


def test_priority_tag_is_no_vlan() -> None:
    """VID 0 carries only an 802.1p priority: the frame belongs to the untagged segment."""
    frame = bytes(kind("v3-ipv4"))
    assert decoded(segments.tagged(frame, 0)).vlan == ""
    assert decoded(segments.tagged(frame, 0, 7)).vlan == "7"


@pytest.mark.parametrize("name", KINDS)
def test_sll_with_reinserted_vlan_tag(name: str) -> None:
    """libpcap re-inserts a stripped 802.1Q tag into LINUX_SLL at the protocol field.

    (`set_vlan_offset`: vlan_offset = SLL_HDR_LEN - 2), so `tcpdump -i any` on a VLAN trunk
    writes SLL frames with protocol 0x8100, the TCI, then the real ethertype. Wireshark decodes
    them; the decoder must too.
    """
    frame = bytes(kind(name))
    sll, linktype = reframe(frame, "sll")
    tagged = sll[:14] + b"\x81\x00\x00\x2a" + sll[14:]
    assert decoded(tagged, linktype) == decoded(frame)._replace(vlan="42")


@pytest.mark.parametrize(
    "pkt",
    [
        pytest.param(advert(3, dst=UNICAST, ttl=64), id="v3-ipv4"),
        pytest.param(advert(2, dst=UNICAST, ttl=64), id="v2"),
        pytest.param(advert(3, "ipv6", dst="fe80::2", ttl=64), id="v3-ipv6"),
    ],
)
def test_unicast_advert_with_configured_ttl(pkt: Packet) -> None:
    """keepalived's `unicast_ttl`: unicast adverts may carry any TTL, keepalived skips the 255
    check for them (reference §4.1, checklist §6.3), so the decoder must not drop them; the TTL
    stays visible in `Advert.ttl`. Multicast adverts with TTL != 255 stay rejected (REJECTS)."""
    adv = decoded(bytes(pkt))
    assert adv.ttl == 64
    assert advert_fields(adv) == scapy_fields(bytes(pkt))


@pytest.mark.parametrize("proto", [112, 51], ids=["vrrp", "ah"])
def test_non_first_fragment(proto: int) -> None:
    """A non-first fragment has no upper-layer header: it is a fragment whatever its protocol."""
    ip = IP(src=SRC4, dst=GROUP4, ttl=255, proto=proto, frag=3)
    frame = bytes(Ether(src=SRC_MAC, dst="01:00:5e:00:00:12") / ip / Raw(bytes(32)))
    assert decode(frame, 0.0, ETH, KEY) is DropReason.FRAGMENT


@pytest.mark.parametrize(
    ("variant", "plain"),
    [
        pytest.param(_ip_fields(advert(3), flags="DF"), bytes(advert(3)), id="ipv4-df"),
        pytest.param(
            _ip_fields(advert(3), options=[IPOption_Router_Alert()]),
            bytes(advert(3)),
            id="ipv4-options",
        ),
        pytest.param(
            bytes(
                Ether(src=SRC_MAC, dst="33:33:00:00:00:12")
                / IPv6(src=SRC6, dst=GROUP6, hlim=255)
                / IPv6ExtHdrHopByHop()
                / IPv6ExtHdrDestOpt(nh=112)
                / Raw(message(advert(3, "ipv6")))
            ),
            V6,
            id="ipv6-extension-headers",
        ),
        pytest.param(V3.ljust(60, b"\0"), V3, id="ethernet-padding"),
        pytest.param(
            bytes(advert(3, addrlist=[])).ljust(60, b"\0"),
            bytes(advert(3, addrlist=[])),
            id="ethernet-padding-no-vips",
        ),
        pytest.param(V2 + bytes(4), V2, id="ethernet-fcs-like-tail"),
    ],
)
def test_transparent_envelopes(variant: bytes, plain: bytes) -> None:
    adv = decoded(variant)
    assert adv == decoded(plain)
    assert adv.trailer == 0


@pytest.mark.parametrize("size", [1, 4, 28])
@pytest.mark.parametrize("name", KINDS)
def test_trailer_inside_the_ip_payload(name: str, size: int) -> None:
    """keepalived >= 2.4 `auth_hmac` appends a 28-byte trailer after the message."""
    trailer = (b"\x01\x07\0\0" + bytes(range(24)))[:size]  # ext_type 1, key_id 7, ...
    adv = decoded(bytes(with_trailer(kind(name), trailer)).ljust(60, b"\0"))
    assert adv.trailer == size
    assert advert_fields(adv) | {"trailer": 0} == advert_fields(decoded(bytes(kind(name))))


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(
            bytes(advert(2, ah=True, authtype=2, vrid=55, addrlist=["192.0.2.55"])), id="built"
        ),
        pytest.param(
            next(p.frame for p in capture("vrrp-all.pcap") if p.frame[23] == 51), id="keepalived"
        ),
    ],
)
def test_ah_wrapped_v2(frame: bytes) -> None:
    adv = decoded(frame)
    assert adv.ah
    assert (adv.version, adv.auth_type, adv.vrid, adv.vips) == (2, 2, 55, ("192.0.2.55",))
    assert advert_fields(adv) == scapy_fields(frame)


def test_memo_keys_do_not_collide_across_key_lengths() -> None:
    """The validation memo concatenates key + src + dst + message without lengths, so a key one
    byte shorter, with src/dst/message shifted by one byte, gives the same memo key: frame B
    (version nibble 1) came back as frame A's advert (VRID 1 from 192.0.2.11)."""
    a = advert(3)
    frame_b = bytes(
        Ether(src=SRC_MAC, dst="02:00:00:00:00:0c")
        / IP(src="66.192.0.2", dst="11.224.0.0", ttl=255, proto=112)  # b"B" + src[:3], ...
        / Raw(b"\x12" + message(a))  # dst[3] + message: version 1
    )
    assert isinstance(decode(bytes(a), 0.0, ETH, b"AB"), Advert)
    assert decode(frame_b, 0.0, ETH, b"A") is DropReason.VERSION


# ---------------------------------------------------------------------------------------------
# PASS authentication: the password is fingerprinted, never exposed

PASSWORDS = [b"secret12", b"s3cr3t!", b"Zq9#xK2p", b"longerthan8"]


@pytest.mark.parametrize("password", PASSWORDS)
def test_password_never_appears_in_the_advert(password: bytes) -> None:
    adv = decoded(bytes(advert(2, authtype=1, auth=password)))
    wire = password[:8].rstrip(b"\0")
    shown = repr(adv) + repr(adv._asdict()) + str(adv)
    for form in (wire.decode(), wire.hex(), wire.hex().upper(), repr(wire)):
        assert form not in shown
    assert adv.auth_type == 1
    assert adv.auth_fingerprint


OTHER_KEY = bytes(32)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        pytest.param((b"secret12", KEY, 51), (b"secret12", KEY, 51), True, id="equal"),
        pytest.param((b"secret12", KEY, 51), (b"secret12", KEY, 52), True, id="equal-other-vrid"),
        pytest.param((b"secret", KEY, 51), (b"secret\0\0", KEY, 51), True, id="nul-padding"),
        pytest.param((b"secret12", KEY, 51), (b"secret13", KEY, 51), False, id="different"),
        pytest.param((b"secret12", KEY, 51), (b"secret12", OTHER_KEY, 51), False, id="other-key"),
    ],
)
def test_password_fingerprint(
    a: tuple[bytes, bytes, int], b: tuple[bytes, bytes, int], same: bool
) -> None:
    prints = [
        decode(bytes(advert(2, authtype=1, auth=pw, vrid=vrid)), 0.0, ETH, key).auth_fingerprint
        for pw, key, vrid in (a, b)
    ]
    assert (prints[0] == prints[1]) is same


@pytest.mark.parametrize(
    "pkt",
    [
        pytest.param(advert(2, authtype=0, auth=b"secret12"), id="v2-no-auth"),
        pytest.param(advert(2, authtype=2, auth=b"secret12"), id="v2-ah-type"),
        pytest.param(advert(3), id="v3"),
    ],
)
def test_no_fingerprint_without_pass(pkt: Packet) -> None:
    assert decoded(bytes(pkt)).auth_fingerprint == ""


# ---------------------------------------------------------------------------------------------
# Robustness: any input gives an Advert or a DropReason, never an exception

REAL_ADVERTS = [
    p.frame
    for name in ("vrrp-all.pcap", "vrrp-strict-vmac-fault.pcap")
    for p in capture(name)
    if isinstance(decode(p.frame, p.time, p.linktype, KEY), Advert)
]


def assert_sane(result: Advert | DropReason) -> None:
    if isinstance(result, DropReason):
        assert result in DropReason
        return
    assert isinstance(result, Advert)
    assert result.ttl == 255 or not ipaddress.ip_address(result.dst).is_multicast
    assert result.version in (2, 3)
    assert 1 <= result.vrid <= 255
    assert 0 < result.interval_cs <= 25500
    assert result.trailer >= 0
    assert result.checksum in Checksum


@FUZZ
@given(frame=st.binary(max_size=200), linktype=st.sampled_from(ALL_LINKTYPES))
def test_arbitrary_bytes_never_raise(frame: bytes, linktype: int) -> None:
    assert_sane(decode(frame, 0.0, linktype, KEY))


@st.composite
def mutated_adverts(draw: st.DrawFn) -> tuple[bytes, int]:
    frame, linktype = reframe(draw(st.sampled_from(REAL_ADVERTS)), draw(st.sampled_from(FRAMINGS)))
    buf = bytearray(frame)
    for _ in range(draw(st.integers(0, 4))):
        buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.one_of(st.none(), st.integers(0, len(buf))))
    linktype = draw(st.one_of(st.just(linktype), st.sampled_from(ALL_LINKTYPES)))
    return bytes(buf[:cut]), linktype


@FUZZ
@given(case=mutated_adverts())
def test_mutated_real_adverts_never_raise(case: tuple[bytes, int]) -> None:
    frame, linktype = case
    assert_sane(decode(frame, 0.0, linktype, KEY))


@pytest.mark.parametrize("linktype", ALL_LINKTYPES)
def test_every_prefix_of_a_real_advert(linktype: int) -> None:
    for frame in REAL_ADVERTS[:40]:
        for cut in range(len(frame) + 1):
            assert_sane(decode(frame[:cut], 0.0, linktype, KEY))


# ---------------------------------------------------------------------------------------------
# CARP


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_carp_is_named_as_carp_with_its_fields(family: str) -> None:
    frame = segments.carp(63, family, advskew=100, advbase=2, demote=3)
    result = decode(frame, 2.5, ETH, KEY)
    src, dst = (segments.CARP_SRC4, GROUP4) if family == "ipv4" else (segments.CARP_SRC6, GROUP6)
    assert result == Carp(2.5, family, src, dst, 63, 2, 100, 3, 255, "", "00:00:5e:00:01:01")
    assert result.interval == 2 + 100 / 256


def test_carp_on_a_vlan_carries_the_vlan() -> None:
    result = decode(segments.tagged(segments.carp(5), 100), 0.0, ETH, KEY)
    assert isinstance(result, Carp)
    assert result.vlan == "100"


def test_carp_vhid_zero_is_rejected() -> None:
    assert decode(segments.carp(0), 0.0, ETH, KEY) is DropReason.VRID


def test_vrrpv2_with_seven_addresses_stays_vrrp() -> None:
    """CARP's authlen 7 is VRRPv2's address count 7; the length tells them apart (44 vs 36)."""
    vips = [f"192.0.2.{50 + i}" for i in range(7)]
    pkt = advert(2, vrid=9, addrlist=vips)
    adv = decoded(bytes(pkt))
    assert adv.vips == tuple(vips)
    assert advert_fields(adv) == scapy_fields(bytes(pkt))


def test_carp_header_inside_a_longer_message_is_not_carp() -> None:
    """A CARP-looking header with bytes after it is neither CARP nor a valid VRRPv2 message."""
    body = segments.carp_message(7) + bytes(4)
    frame = bytes(replace_message(advert(2), body))
    assert decode(frame, 0.0, ETH, KEY) is DropReason.LENGTH


def test_carp_with_ttl_below_255_is_rejected() -> None:
    frame = bytes(replace_message(advert(2, ttl=64), segments.carp_message(7)))
    assert decode(frame, 0.0, ETH, KEY) is DropReason.TTL


# ---------------------------------------------------------------------------------------------
# Address announcements: gratuitous ARP, unsolicited NA

VIP_MAC = "00:00:5e:00:01:33"


def garp(op: int = 1, psrc: str = "192.0.2.51", pdst: str | None = None) -> bytes:
    arp = ARP(op=op, hwsrc=VIP_MAC, psrc=psrc, hwdst="ff:ff:ff:ff:ff:ff", pdst=pdst or psrc)
    return bytes(Ether(src=VIP_MAC, dst="ff:ff:ff:ff:ff:ff") / arp)


def unsolicited_na(
    target: str = "2001:db8::51", dst: str = "ff02::1", hlim: int = 255, override: int = 1
) -> bytes:
    na = ICMPv6ND_NA(tgt=target, R=0, S=0, O=override) / ICMPv6NDOptDstLLAddr(lladdr=VIP_MAC)
    ip = IPv6(src="fe80::11", dst=dst, hlim=hlim)
    return bytes(Ether(src="02:00:00:00:00:0b", dst="33:33:00:00:00:01") / ip / na)


@pytest.mark.parametrize("op", [1, 2], ids=["request", "reply"])
def test_gratuitous_arp_is_a_claim(op: int) -> None:
    assert decode(garp(op), 3.0, ETH, KEY) == Claim(3.0, "ipv4", "192.0.2.51", VIP_MAC)


def test_unsolicited_na_is_a_claim_by_its_target_link_layer_address() -> None:
    assert decode(unsolicited_na(), 3.0, ETH, KEY) == Claim(3.0, "ipv6", "2001:db8::51", VIP_MAC)


def test_an_announcement_on_a_vlan_carries_it() -> None:
    result = decode(segments.tagged(garp(), 100), 0.0, ETH, KEY)
    assert isinstance(result, Claim) and result.vlan == "100"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        pytest.param(garp(pdst="192.0.2.1"), DropReason.NOT_VRRP, id="ordinary-arp"),
        pytest.param(garp(psrc="0.0.0.0", pdst="192.0.2.51"), DropReason.NOT_VRRP, id="probe"),
        pytest.param(garp(op=3), DropReason.NOT_VRRP, id="rarp-op"),
        pytest.param(garp()[:30], DropReason.TRUNCATED, id="arp-truncated"),
        pytest.param(unsolicited_na(dst="fe80::2"), DropReason.NOT_VRRP, id="na-solicited"),
        pytest.param(unsolicited_na(override=0), DropReason.NOT_VRRP, id="na-no-override"),
        pytest.param(unsolicited_na(hlim=64), DropReason.TTL, id="na-hop-limit"),
        pytest.param(
            patch(unsolicited_na(), 14 + 40 + 2, b"\x00\x00"), DropReason.CHECKSUM, id="na-checksum"
        ),
    ],
)
def test_what_is_not_an_announcement(frame: bytes, reason: DropReason) -> None:
    assert decode(frame, 0.0, ETH, KEY) is reason
