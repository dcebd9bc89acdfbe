"""Reads pcap and pcapng files into (time, linktype, frame) for replay through the live core.

A small reader of our own rather than scapy's: replay then runs at decoder speed, and every way a
file can be wrong becomes one `PcapError` with a sentence a person can act on.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_MAX_BLOCK = 64 << 20  # larger is corruption, not a packet: refuse before allocating it


class PcapError(Exception):
    """The file cannot be read as a capture; the message says why."""


class Packet(NamedTuple):
    time: float
    linktype: int
    frame: bytes
    interface: str  # pcapng interface name, "" when the file does not say
    interface_id: int = 0  # pcapng: which of the section's interfaces; pcap: always 0


def read(stream: BinaryIO) -> Iterator[Packet]:
    head = stream.read(4)
    if len(head) == 0:
        raise PcapError("empty file")
    if head in _PCAP_MAGIC:
        yield from _pcap(stream, *_PCAP_MAGIC[head])
    elif head == _PCAPNG_SHB:
        yield from _pcapng(stream)
    else:
        raise PcapError("not a pcap or pcapng file")


def _exact(stream: BinaryIO, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise PcapError(f"truncated capture: the file ends inside {what}")
    return data


def _pcap(stream: BinaryIO, endian: str, unit: float) -> Iterator[Packet]:
    header = _exact(stream, 20, "the file header")
    linktype = struct.unpack(endian + "16xI", header)[0] & 0x0FFFFFFF
    record = struct.Struct(endian + "IIII")
    while True:
        head = stream.read(16)
        if not head:
            return
        if len(head) != 16:
            raise PcapError("truncated capture: the file ends inside a packet header")
        sec, frac, caplen, _ = record.unpack(head)
        if caplen > _MAX_BLOCK:
            raise PcapError(f"corrupt capture: a packet claims {caplen} bytes")
        yield Packet(sec + frac * unit, linktype, _exact(stream, caplen, "a packet"), "")


class _Interface(NamedTuple):
    linktype: int
    unit: float
    name: str


def _pcapng(stream: BinaryIO) -> Iterator[Packet]:
    endian = "<"
    interfaces: list[_Interface] = []
    block_type = 0x0A0D0D0A
    while True:
        if block_type == 0x0A0D0D0A:
            endian, interfaces = _section(stream), []
        else:
            length = struct.unpack(endian + "I", _exact(stream, 4, "a block header"))[0]
            if length < 12 or length % 4 or length > _MAX_BLOCK:
                raise PcapError(f"corrupt pcapng: a block claims {length} bytes")
            body = _exact(stream, length - 8, "a block")[:-4]
            packet = _block(block_type, body, endian, interfaces)
            if packet is not None:
                yield packet
        head = stream.read(4)
        if not head:
            return
        if len(head) != 4:
            raise PcapError("truncated capture: the file ends inside a block header")
        block_type = struct.unpack(endian + "I", head)[0]


def _section(stream: BinaryIO) -> str:
    raw = _exact(stream, 8, "the section header")
    endian = "<" if struct.unpack("<I", raw[4:8])[0] == _BYTE_ORDER_MAGIC else ">"
    if struct.unpack(endian + "I", raw[4:8])[0] != _BYTE_ORDER_MAGIC:
        raise PcapError("corrupt pcapng: bad byte-order magic")
    length = struct.unpack(endian + "I", raw[:4])[0]
    if length < 28 or length % 4:
        raise PcapError(f"corrupt pcapng: section header claims {length} bytes")
    _exact(stream, length - 12, "the section header")
    return endian


def _block(
    block_type: int, body: bytes, endian: str, interfaces: list[_Interface]
) -> Packet | None:
    if block_type == 1:  # interface description
        if len(body) < 8:
            raise PcapError("corrupt pcapng: short interface block")
        linktype = struct.unpack(endian + "H", body[:2])[0]
        interfaces.append(_Interface(linktype, *_if_options(body[8:], endian)))
        return None
    if block_type == 6:  # enhanced packet
        if len(body) < 20:
            raise PcapError("corrupt pcapng: short packet block")
        ifid, hi, lo, caplen = struct.unpack(endian + "IIII", body[:16])
        if ifid >= len(interfaces) or 20 + caplen > len(body):
            raise PcapError("corrupt pcapng: packet block does not match its interface or length")
        iface = interfaces[ifid]
        return Packet(
            (hi << 32 | lo) * iface.unit, iface.linktype, body[20 : 20 + caplen], iface.name, ifid
        )
    if block_type == 3:  # simple packet: no timestamp
        if not interfaces or len(body) < 4:
            raise PcapError("corrupt pcapng: simple packet block without an interface")
        size = struct.unpack(endian + "I", body[:4])[0]
        return Packet(0.0, interfaces[0].linktype, body[4 : 4 + size], interfaces[0].name)
    return None


def _if_options(options: bytes, endian: str) -> tuple[float, str]:
    unit, name, i = 1e-6, "", 0
    while i + 4 <= len(options):
        code, size = struct.unpack(endian + "HH", options[i : i + 4])
        value = options[i + 4 : i + 4 + size]
        if code == 0:
            break
        if code == 2:  # if_name
            name = value.decode("utf-8", "replace")
        elif code == 9 and value:  # if_tsresol
            exp = value[0]
            unit = 2.0 ** -(exp & 0x7F) if exp & 0x80 else 10.0**-exp
        i += 4 + (size + 3) // 4 * 4
    return unit, name
