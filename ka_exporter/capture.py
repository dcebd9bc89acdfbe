"""Live capture: one AF_PACKET socket per interface, VRRP (and address announcements) only, by a
kernel BPF filter.

The kernel writes the frames the filter passes into a TPACKET_V3 ring mapped into this process,
stamped with their arrival time, and hands the ring over a block at a time: when a block is full
or `RETIRE_MS` after its first frame. So the event loop wakes at most ~50 times a second per
interface at usual advert rates, and once per ~1,600 adverts under a flood; it reads every frame
without a system call; and a burst waits in the ring, which holds 5 times as many small frames
as a socket receive buffer of the same size: a queued frame is charged its whole buffer
allocation there, ~830 bytes for a 62-byte advert, and takes ~160 bytes in the ring (measured:
docs/benchmarks.md, Burst). Sockets are read by the loop's reader callbacks, never by threads.
Frames this host sends are seen too, which on a unicast node is the only way to see its own
adverts.
"""

from __future__ import annotations

import asyncio
import ctypes
import mmap
import socket
import struct
from dataclasses import dataclass, field

from pyroute2 import netns as p2netns

from ka_exporter.decode import LinkType
from ka_exporter.model import Model, Segment

FILTER = (
    "ip proto 112 or ip6 proto 112 or (ip proto 51 and ip[((ip[0]&0xf)<<2)] = 112)"
    # a tag the NIC left in the frame: no VLAN offload, or QinQ's inner tag under an offloaded one
    " or ((ether[12:2] = 0x8100 or ether[12:2] = 0x88a8)"
    " and ((ether[16:2] = 0x0800 and ether[27] = 112)"
    " or (ether[16:2] = 0x86dd and ether[24] = 112)))"
    # what announces an address: gratuitous ARP, and unsolicited NA (override, to a group);
    # ordinary ARP and ND, which a busy segment is full of, never leave the kernel
    " or (arp and arp[14:4] = arp[24:4])"
    " or (ip6[6] = 58 and ip6[24] = 0xff and ip6[40] = 136 and ip6[44] & 0x20 != 0)"
)
# `tcpdump -dd FILTER` on Ethernet: compiled once here so the exporter needs no libpcap at run
# time; a test recompiles FILTER and compares, so the two cannot drift apart.
BPF_PROGRAM = (
    (0x28, 0, 0, 0x0000000C),
    (0x15, 0, 9, 0x00000800),
    (0x30, 0, 0, 0x00000017),
    (0x15, 40, 0, 0x00000070),
    (0x15, 0, 12, 0x00000033),
    (0x30, 0, 0, 0x0000000E),
    (0x54, 0, 0, 0x0000000F),
    (0x64, 0, 0, 0x00000002),
    (0x07, 0, 0, 0x00000003),
    (0x50, 0, 0, 0x0000000E),
    (0x15, 33, 6, 0x00000070),
    (0x15, 0, 5, 0x000086DD),
    (0x30, 0, 0, 0x00000014),
    (0x15, 30, 0, 0x00000070),
    (0x15, 0, 2, 0x0000002C),
    (0x30, 0, 0, 0x00000036),
    (0x15, 27, 0, 0x00000070),
    (0x28, 0, 0, 0x0000000C),
    (0x15, 1, 0, 0x00008100),
    (0x15, 0, 7, 0x000088A8),
    (0x28, 0, 0, 0x00000010),
    (0x15, 0, 2, 0x00000800),
    (0x30, 0, 0, 0x0000001B),
    (0x15, 20, 3, 0x00000070),
    (0x15, 0, 2, 0x000086DD),
    (0x30, 0, 0, 0x00000018),
    (0x15, 17, 0, 0x00000070),
    (0x28, 0, 0, 0x0000000C),
    (0x15, 0, 6, 0x00000806),
    (0x20, 0, 0, 0x0000001C),
    (0x02, 0, 0, 0x00000002),
    (0x20, 0, 0, 0x00000026),
    (0x07, 0, 0, 0x00000004),
    (0x60, 0, 0, 0x00000002),
    (0x1D, 9, 10, 0x00000000),
    (0x15, 0, 9, 0x000086DD),
    (0x30, 0, 0, 0x00000014),
    (0x15, 0, 7, 0x0000003A),
    (0x30, 0, 0, 0x00000026),
    (0x15, 0, 5, 0x000000FF),
    (0x30, 0, 0, 0x00000036),
    (0x15, 0, 3, 0x00000088),
    (0x30, 0, 0, 0x0000003A),
    (0x45, 0, 1, 0x00000020),
    (0x06, 0, 0, 0x00040000),
    (0x06, 0, 0, 0x00000000),
)
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
SO_ATTACH_FILTER = 26
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10  # the NIC (or veth) took the outer tag off: it is in tp_vlan_tci
VLAN_VID = 0x0FFF
# The ring, per interface: 8 MiB by default (--capture.ring-size), ~50k small adverts even if
# none is read meanwhile, far beyond what keepalived sends; its pages count in the process's
# RSS. Blocks of 256 KiB: one is handed over per wake-up, ~1,600 adverts, so a flood holds the
# event loop ~10 ms at a time; they are also small enough to allocate on a fragmented host.
BLOCK_SIZE = 256 << 10
DEFAULT_RING_SIZE = 8 << 20
FRAME_SIZE = 2048  # TPACKET_V3 packs frames tightly; this only has to divide BLOCK_SIZE
# A block with frames is handed over at most this long after its first one. Adverts keep their
# arrival time, but reach the model up to this late: harmless while it is well under half an
# advert interval (the model calls a master silent after 1.5), i.e. for intervals above ~40 ms.
RETIRE_MS = 20
# struct tpacket_block_desc: block_status at 8, num_pkts and offset_to_first_pkt after it.
BLOCK_STATUS = 8
# struct tpacket3_hdr up to hv1's tp_vlan_tci: next offset, seconds, nanoseconds, snaplen, len,
# status, mac, net, rxhash, vlan_tci.
FRAME_HEADER = struct.Struct("IIIIIIHHII")


class CaptureError(Exception):
    """Opening a capture failed; the message names the cause."""


class PrivilegeError(CaptureError):
    """The process lacks CAP_NET_RAW: no interface can be captured."""


def attach_filter(sock: socket.socket) -> None:
    code = b"".join(struct.pack("HBBI", *insn) for insn in BPF_PROGRAM)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(BPF_PROGRAM), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


_NO_CAPABILITY = (
    "capturing needs the CAP_NET_RAW capability (run as root, or grant it: "
    "setcap cap_net_raw+ep, or AmbientCapabilities=CAP_NET_RAW)"
)


def check_privilege() -> None:
    """Fails at start, not at the first interface, when packet sockets are not allowed."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except PermissionError:
        raise PrivilegeError(_NO_CAPABILITY) from None


def open_socket(interface: str, netns: str = "", ring_size: int = DEFAULT_RING_SIZE) -> Ring:
    """A filtered packet socket on `interface` inside `netns` ("" = ours), with its ring mapped.

    Created with protocol 0, which receives nothing until bound, so no unfiltered frame slips
    in before the filter is attached.
    """
    try:
        if netns:
            sock: socket.socket = p2netns.create_socket(
                netns, family=socket.AF_PACKET, socket_type=socket.SOCK_RAW, proto=0, flags=0
            )
        else:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except PermissionError:
        raise PrivilegeError(_NO_CAPABILITY) from None
    ring: mmap.mmap | None = None
    try:
        attach_filter(sock)
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        blocks = max(1, ring_size // BLOCK_SIZE)
        request = (BLOCK_SIZE, blocks, FRAME_SIZE, BLOCK_SIZE // FRAME_SIZE * blocks, RETIRE_MS)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack("7I", *request, 0, 0))
        ring = mmap.mmap(sock.fileno(), BLOCK_SIZE * blocks)
        sock.bind((interface, ETH_P_ALL))
        sock.setblocking(False)
    except OSError as exc:
        if ring is not None:
            ring.close()
        sock.close()
        where = f" in network namespace {netns}" if netns else ""
        raise CaptureError(f"cannot capture on {interface}{where}: {exc.strerror}") from None
    return Ring(sock, ring, blocks)


@dataclass(slots=True)
class Ring:
    """A packet socket and its mapped ring; blocks are handed back in order, so the next one to
    read is always `block`."""

    sock: socket.socket
    ring: mmap.mmap
    blocks: int
    block: int = 0

    def handed_over(self) -> tuple[int, int] | None:
        """(offset of its first frame, frame count) of the next block, once the kernel has
        handed it over."""
        base = self.block * BLOCK_SIZE
        status, count, offset = struct.unpack_from("III", self.ring, base + BLOCK_STATUS)
        return (base + offset, count) if status & TP_STATUS_USER else None

    def give_back(self) -> None:
        """The block read is the kernel's again (TP_STATUS_KERNEL); the next one is due."""
        struct.pack_into("I", self.ring, self.block * BLOCK_SIZE + BLOCK_STATUS, 0)
        self.block = (self.block + 1) % self.blocks

    def close(self) -> None:
        self.ring.close()
        self.sock.close()


@dataclass(slots=True)
class Tap:
    """One captured interface. `segment` is where its untagged frames belong (a VLAN
    subinterface's segment carries its VLAN); a frame whose tag the kernel moved into the
    metadata belongs to that VLAN's segment, unless a subinterface of that VLAN is captured
    too (`elsewhere`), which then reports it: once, not twice."""

    segment: Segment
    ring: Ring
    elsewhere: frozenset[int] = frozenset()
    packets: int = 0
    drops: int = 0
    wakeups: int = 0  # callbacks run: what the ring saves the event loop
    vlans: dict[int, Segment | None] = field(default_factory=dict)  # VID -> segment; None: skip

    def vlan(self, vid: int) -> Segment | None:
        segment = self.vlans.get(vid, self.segment)
        if segment is self.segment:
            segment = None if vid in self.elsewhere else self.segment.tagged(str(vid))
            self.vlans[vid] = segment
        return segment

    def read_statistics(self) -> None:
        """PACKET_STATISTICS resets on read, so accumulate."""
        sock = self.ring.sock
        packets, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self.packets += packets
        self.drops += drops


class Capture:
    """The set of open taps, fed to one model."""

    def __init__(
        self, model: Model, loop: asyncio.AbstractEventLoop, ring_size: int = DEFAULT_RING_SIZE
    ) -> None:
        self.ring_size = ring_size
        self.model = model
        self.loop = loop
        self.taps: dict[Segment, Tap] = {}  # by link: Segment(interface, netns)
        self.failed: set[Segment] = set()  # wanted, but could not be opened

    def open(self, link: Segment, vlan: str = "") -> None:
        """Captures the interface `link`; `vlan` when it is a VLAN subinterface."""
        if link in self.taps:
            return
        try:
            ring = open_socket(link.interface, link.netns, self.ring_size)
        except CaptureError:
            self.failed.add(link)
            raise
        self.failed.discard(link)
        tap = self.taps[link] = Tap(link._replace(vlan=vlan), ring)
        self.loop.add_reader(ring.sock.fileno(), self._drain, tap)

    def elsewhere(self, link: Segment, vids: frozenset[int]) -> None:
        """The VLANs of `link` whose subinterfaces are captured: their frames are left to them."""
        tap = self.taps.get(link)
        if tap is not None and tap.elsewhere != vids:
            tap.elsewhere = vids
            tap.vlans.clear()

    def close(self, segment: Segment) -> None:
        self.failed.discard(segment)
        tap = self.taps.pop(segment, None)
        if tap is not None:
            self.loop.remove_reader(tap.ring.sock.fileno())
            tap.ring.close()

    def close_all(self) -> None:
        for segment in list(self.taps):
            self.close(segment)

    def statistics(self) -> list[Tap]:
        for tap in self.taps.values():
            tap.read_statistics()
        return list(self.taps.values())

    def horizon(self, now: float) -> float:
        """How far the model may be advanced: `now`, or the arrival time of the oldest frame
        handed over and not yet read. Past it, a master whose adverts still wait in a ring (a
        flood, a long scrape) would look silent and be called lost."""
        oldest = now
        for tap in self.taps.values():
            block = tap.ring.handed_over()
            if block is not None and block[1]:
                _, seconds, nanoseconds = FRAME_HEADER.unpack_from(tap.ring.ring, block[0])[:3]
                oldest = min(oldest, seconds + nanoseconds * 1e-9)
        return oldest

    def _drain(self, tap: Tap) -> None:
        """Reads one block, if the kernel has handed one over, and gives it back. More waiting
        blocks keep the socket readable, so the loop calls again after its other work."""
        tap.wakeups += 1
        block = tap.ring.handed_over()
        if block is None:
            # Woken with no block: an error such as ENETDOWN (link down) is pending, and would
            # keep waking the loop until read; netlink tells us whether to close.
            tap.ring.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            return
        ring, ingest, untagged = tap.ring.ring, self.model.ingest, tap.segment
        header, ethernet = FRAME_HEADER.unpack_from, LinkType.ETHERNET
        offset, count = block
        for _ in range(count):
            step, seconds, nanoseconds, length, _, status, mac, _, _, tci = header(ring, offset)
            segment: Segment | None = untagged
            if status & TP_STATUS_VLAN_VALID and tci & VLAN_VID:
                segment = tap.vlan(tci & VLAN_VID)
            if segment is not None:
                start = offset + mac
                frame = ring[start : start + length]
                ingest(segment, seconds + nanoseconds * 1e-9, frame, ethernet)
            offset += step
        tap.ring.give_back()
