"""The L2 benchmark's frames: ordinary ARP and neighbour discovery among a few hosts (which
the kernel filter must keep out of user space), the announcements among them (which it must
pass), a storm of spoofed announcements and the VRRP adverts beside it; each set is checked
against the decoder before a measurement relies on it.

Addresses: 192.0.2.0/24, 198.51.100.0/24 and 2001:db8::/32 only; the multicast groups ND
uses (all-nodes, solicited-node); locally administered MACs.
"""

from __future__ import annotations

import random
import socket
import struct

HOSTS = 64  # hosts the background is among
STORM_V4 = [f"192.0.2.{i}" for i in range(1, 255)] + [f"198.51.100.{i}" for i in range(1, 255)]
STORM_V6 = [f"2001:db8:5::{i:x}" for i in range(1, 6_001 - len(STORM_V4))]
STORM_ADDRESSES = len(STORM_V4) + len(STORM_V6)  # 6,000
ADVERT_ROUTERS = 20  # the 500 adverts/s come from 10 IPv4 and 10 IPv6 masters
BROADCAST = b"\xff" * 6


# --- frames --------------------------------------------------------------------------------------


def _mac(rng: random.Random) -> bytes:
    """A random locally administered unicast MAC."""
    b = bytearray(rng.randbytes(6))
    b[0] = (b[0] & 0xFC) | 0x02
    return bytes(b)


def _host(i: int) -> tuple[str, str, str]:
    """Background host `i`: IPv4, IPv6, MAC."""
    return f"192.0.2.{i + 1}", f"2001:db8:1::{i + 1:x}", f"02:00:00:00:01:{i:02x}"


def _solicited_node(address: str) -> tuple[str, str]:
    """The solicited-node group of `address`, and its multicast MAC."""
    low = socket.inet_pton(socket.AF_INET6, address)[13:]
    group = socket.inet_ntop(socket.AF_INET6, bytes.fromhex("ff02" + "00" * 9 + "01ff") + low)
    return group, "33:33:ff:" + low.hex(":")


def ordinary_frames() -> list[bytes]:
    """ARP request and reply, NS and solicited NA between neighbours: none announces."""
    from scapy.layers.inet6 import (  # noqa: PLC0415
        ICMPv6ND_NA,
        ICMPv6ND_NS,
        ICMPv6NDOptDstLLAddr,
        ICMPv6NDOptSrcLLAddr,
        IPv6,
    )
    from scapy.layers.l2 import ARP, Ether  # noqa: PLC0415

    frames: list[bytes] = []
    for i in range(HOSTS):
        ip_i, ip6_i, mac_i = _host(i)
        ip_j, ip6_j, mac_j = _host((i + 1) % HOSTS)
        group, group_mac = _solicited_node(ip6_j)
        frames += [
            bytes(
                Ether(src=mac_i, dst="ff:ff:ff:ff:ff:ff")
                / ARP(op=1, hwsrc=mac_i, psrc=ip_i, hwdst="00:00:00:00:00:00", pdst=ip_j)
            ),
            bytes(
                Ether(src=mac_j, dst=mac_i)
                / ARP(op=2, hwsrc=mac_j, psrc=ip_j, hwdst=mac_i, pdst=ip_i)
            ),
            bytes(
                Ether(src=mac_i, dst=group_mac)
                / IPv6(src=ip6_i, dst=group, hlim=255)
                / ICMPv6ND_NS(tgt=ip6_j)
                / ICMPv6NDOptSrcLLAddr(lladdr=mac_i)
            ),
            bytes(
                Ether(src=mac_j, dst=mac_i)
                / IPv6(src=ip6_j, dst=ip6_i, hlim=255)
                / ICMPv6ND_NA(tgt=ip6_j, R=0, S=1, O=1)
                / ICMPv6NDOptDstLLAddr(lladdr=mac_j)
            ),
        ]
    return frames


def _templates() -> tuple[bytes, bytes]:
    """A gratuitous ARP request and an unsolicited NA to all-nodes, as keepalived sends them."""
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6  # noqa: PLC0415
    from scapy.layers.l2 import ARP, Ether  # noqa: PLC0415

    mac, ip, ip6 = "02:00:00:00:02:00", "192.0.2.1", "2001:db8:5::1"
    garp = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=mac, psrc=ip, hwdst="ff:ff:ff:ff:ff:ff", pdst=ip
    )
    na = (
        Ether(src=mac, dst="33:33:00:00:00:01")
        / IPv6(src=ip6, dst="ff02::1", hlim=255)
        / ICMPv6ND_NA(tgt=ip6, R=0, S=0, O=1)
        / ICMPv6NDOptDstLLAddr(lladdr=mac)
    )
    return bytes(garp), bytes(na)


def _garp(template: bytes, address: str, mac: bytes, op: int) -> bytes:
    b = bytearray(template)
    ip = socket.inet_aton(address)
    b[6:12] = b[22:28] = mac
    b[21] = op
    b[28:32] = b[38:42] = ip
    return bytes(b)


def _na(template: bytes, address: str, mac: bytes) -> bytes:
    """The unsolicited NA template for another target and MAC, from the target itself, its
    ICMPv6 checksum made anew."""
    from lab.frames import checksum  # noqa: PLC0415

    b = bytearray(template)
    ip6 = socket.inet_pton(socket.AF_INET6, address)
    b[6:12] = b[80:86] = mac  # Ethernet source, target link-layer address option
    b[22:38] = b[62:78] = ip6  # IPv6 source, NA target
    b[56:58] = bytes(2)
    pseudo = bytes(b[22:54]) + struct.pack("!I3xB", len(b) - 54, 58)
    b[56:58] = checksum(pseudo + bytes(b[54:])).to_bytes(2)
    return bytes(b)


def announce_frames() -> list[bytes]:
    """The background's hosts announcing themselves, one MAC each: no conflict."""
    garp, na = _templates()
    frames: list[bytes] = []
    for i in range(HOSTS):
        ip, ip6, mac = _host(i)
        frames += [_garp(garp, ip, bytes.fromhex(mac.replace(":", "")), 1 + i % 2)]
        frames += [_na(na, ip6, bytes.fromhex(mac.replace(":", "")))]
    return frames


def storm_frames(count: int, seed: int) -> list[bytes]:
    """Announcements of the storm's addresses in turn, each from a random MAC: gratuitous ARP
    (requests and replies alternating) for the IPv4 ones, unsolicited NA for the IPv6 ones."""
    rng = random.Random(seed)
    garp, na = _templates()
    frames = []
    for i in range(count):
        k, n4 = i % STORM_ADDRESSES, len(STORM_V4)
        if k < n4:
            frames.append(_garp(garp, STORM_V4[k], _mac(rng), 1 + i // STORM_ADDRESSES % 2))
        else:
            frames.append(_na(na, STORM_V6[k - n4], _mac(rng)))
    return frames


def advert_frames(count: int) -> tuple[list[bytes], list[bytes]]:
    """The masters' adverts played at 500/s, and `count` adverts cycled over as many spoofed
    routers as the storm has addresses, spread over the 255 VRIDs of each family."""
    from lab.frames import advert, respoof  # noqa: PLC0415

    v4 = bytes(advert(3, src="192.0.2.1", addrlist=["198.51.100.1"]))
    v6 = bytes(advert(3, "ipv6", src="2001:db8::1", addrlist=["2001:db8::1"]))
    half = ADVERT_ROUTERS // 2
    masters = [respoof(v4, f"192.0.2.{200 + i}", i + 1) for i in range(half)]
    masters += [respoof(v6, f"2001:db8:2::{i + 1:x}", i + 1) for i in range(half)]
    spoofed = []
    for i in range(STORM_ADDRESSES // 2):
        spoofed.append(respoof(v4, STORM_V4[i % len(STORM_V4)], 1 + i % 255))
        spoofed.append(respoof(v6, STORM_V6[i % len(STORM_V6)], 1 + i % 255))
    return masters, [spoofed[i % len(spoofed)] for i in range(count)]


def build_l2_frames(storm: int, seed: int) -> dict[str, list[bytes]]:
    """The frame sets, each checked against the decoder: the background decodes to nothing,
    the announcements to claims of the address and MAC they were built with, the adverts to
    adverts from as many distinct routers as wanted."""
    from ka_exporter.decode import Advert, Claim, decode  # noqa: PLC0415

    masters, spoofed = advert_frames(storm)
    sets = {
        "ordinary": ordinary_frames(),
        "announce": announce_frames(),
        "adverts": masters,
        "storm": storm_frames(storm, seed),
        "spoofed": spoofed,
    }
    for frame in sets["ordinary"]:
        if isinstance(decode(frame, 0.0), Advert | Claim):
            raise SystemExit(f"bench.live: a background frame decodes as {decode(frame, 0.0)}")
    keys = set()
    for frame in sets["announce"] + sets["storm"]:
        claim = decode(frame, 0.0)
        if not isinstance(claim, Claim) or claim.mac != frame[6:12].hex(":"):
            raise SystemExit(f"bench.live: an announcement does not decode: {claim}")
        keys.add(claim.address)
    hosts = {a for i in range(HOSTS) for a in _host(i)[:2]}
    stormed = (STORM_V4 + STORM_V6)[:storm]
    if keys != hosts | set(stormed):
        raise SystemExit(f"bench.live: the announcements claim {len(keys):,} addresses")
    for name, want in (("adverts", ADVERT_ROUTERS), ("spoofed", min(storm, STORM_ADDRESSES))):
        routers = set()
        for frame in sets[name]:
            decoded = decode(frame, 0.0)
            if not isinstance(decoded, Advert):
                raise SystemExit(f"bench.live: an advert does not decode: {decoded}")
            routers.add((decoded.family, decoded.vrid, decoded.src))
        if len(routers) != want:
            raise SystemExit(f"bench.live: {name} come from {len(routers):,} routers")
    return sets
