"""Live capture: one AF_PACKET socket per interface, VRRP-only by a kernel BPF filter.

Sockets are read by the asyncio loop's reader callbacks, never by threads: the kernel filter
leaves only adverts, which arrive at ~1/s per VRID, so a non-blocking drain per wake-up is
plenty, and bursts wait in a large receive buffer. Frames this host sends are seen too, which on
a unicast node is the only way to see its own adverts.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import socket
import struct
import time
from dataclasses import dataclass

from pyroute2 import netns as p2netns

from ka_exporter.decode import LinkType
from ka_exporter.model import Model, Segment

FILTER = "ip proto 112 or ip6 proto 112 or (ip proto 51 and ip[((ip[0]&0xf)<<2)] = 112)"
# `tcpdump -dd FILTER` on Ethernet: compiled once here so the exporter needs no libpcap at run
# time; a test recompiles FILTER and compares, so the two cannot drift apart.
BPF_PROGRAM = (
    (0x28, 0, 0, 0x0000000C),
    (0x15, 0, 9, 0x00000800),
    (0x30, 0, 0, 0x00000017),
    (0x15, 13, 0, 0x00000070),
    (0x15, 0, 13, 0x00000033),
    (0x30, 0, 0, 0x0000000E),
    (0x54, 0, 0, 0x0000000F),
    (0x64, 0, 0, 0x00000002),
    (0x07, 0, 0, 0x00000003),
    (0x50, 0, 0, 0x0000000E),
    (0x15, 6, 7, 0x00000070),
    (0x15, 0, 6, 0x000086DD),
    (0x30, 0, 0, 0x00000014),
    (0x15, 3, 0, 0x00000070),
    (0x15, 0, 3, 0x0000002C),
    (0x30, 0, 0, 0x00000036),
    (0x15, 0, 1, 0x00000070),
    (0x06, 0, 0, 0x00040000),
    (0x06, 0, 0, 0x00000000),
)
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
RECEIVE_BUFFER = 4 << 20  # ~50k adverts of burst
SNAPLEN = 65535
BATCH = 256  # frames per wake-up, so one busy interface cannot starve the loop


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


def open_socket(interface: str, netns: str = "") -> socket.socket:
    """A filtered, non-blocking packet socket on `interface` inside `netns` ("" = ours).

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
    try:
        attach_filter(sock)
        for option, size in ((SO_RCVBUFFORCE, RECEIVE_BUFFER), (socket.SO_RCVBUF, RECEIVE_BUFFER)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, size)
                break
            except PermissionError:  # SO_RCVBUFFORCE needs CAP_NET_ADMIN
                continue
        sock.bind((interface, ETH_P_ALL))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        where = f" in network namespace {netns}" if netns else ""
        raise CaptureError(f"cannot capture on {interface}{where}: {exc.strerror}") from None
    return sock


@dataclass(slots=True)
class Tap:
    segment: Segment
    sock: socket.socket
    packets: int = 0
    drops: int = 0

    def read_statistics(self) -> None:
        """PACKET_STATISTICS resets on read, so accumulate."""
        packets, drops = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self.packets += packets
        self.drops += drops


class Capture:
    """The set of open taps, fed to one model."""

    def __init__(self, model: Model, loop: asyncio.AbstractEventLoop) -> None:
        self.model = model
        self.loop = loop
        self.taps: dict[Segment, Tap] = {}
        self.failed: set[Segment] = set()  # wanted, but could not be opened

    def open(self, segment: Segment) -> None:
        if segment in self.taps:
            return
        try:
            sock = open_socket(segment.interface, segment.netns)
        except CaptureError:
            self.failed.add(segment)
            raise
        self.failed.discard(segment)
        tap = self.taps[segment] = Tap(segment, sock)
        self.loop.add_reader(sock.fileno(), self._drain, tap)

    def close(self, segment: Segment) -> None:
        self.failed.discard(segment)
        tap = self.taps.pop(segment, None)
        if tap is not None:
            self.loop.remove_reader(tap.sock.fileno())
            tap.sock.close()

    def close_all(self) -> None:
        for segment in list(self.taps):
            self.close(segment)

    def statistics(self) -> list[Tap]:
        for tap in self.taps.values():
            tap.read_statistics()
        return list(self.taps.values())

    def _drain(self, tap: Tap) -> None:
        recv, ingest, segment, now = tap.sock.recv, self.model.ingest, tap.segment, time.time
        for _ in range(BATCH):
            try:
                frame = recv(SNAPLEN)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.ENETDOWN, errno.ENXIO, errno.ENODEV):
                    return  # link went down or away; netlink tells us whether to close
                raise
            ingest(segment, now(), frame, LinkType.ETHERNET)
