"""pcapng files written block by block, for the reader's and the replay's tests."""

from __future__ import annotations

import struct


def block(endian: str, block_type: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    length = struct.pack(endian + "I", 12 + len(body))
    return struct.pack(endian + "I", block_type) + length + body + length


def option(endian: str, code: int, value: bytes) -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value + bytes(-len(value) % 4)


def options(endian: str, *items: tuple[int, bytes]) -> bytes:
    if not items:
        return b""
    return b"".join(option(endian, code, value) for code, value in items) + bytes(4)


def shb(endian: str, *opts: tuple[int, bytes]) -> bytes:
    body = struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1) + options(endian, *opts)
    return block(endian, 0x0A0D0D0A, body)


def idb(endian: str, linktype: int, name: str | None = None, tsresol: int | None = None) -> bytes:
    opts = []
    if name is not None:
        opts.append((2, name.encode()))
    if tsresol is not None:
        opts.append((9, bytes([tsresol])))
    body = struct.pack(endian + "HHI", linktype, 0, 262144) + options(endian, *opts)
    return block(endian, 1, body)


def epb(endian: str, ifid: int, ticks: int, frame: bytes, orig: int | None = None) -> bytes:
    head = struct.pack(
        endian + "IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), orig or len(frame)
    )
    return block(endian, 6, head + frame + bytes(-len(frame) % 4))


def spb(endian: str, frame: bytes) -> bytes:
    return block(endian, 3, struct.pack(endian + "I", len(frame)) + frame)
