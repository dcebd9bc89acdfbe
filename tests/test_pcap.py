"""Tests of `ka_exporter.pcap.read` on small pcap and pcapng files written byte by byte."""

from __future__ import annotations

import itertools
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ka_exporter.pcap import Packet, PcapError, read
from tests.frames import capture, pcap_bytes
from tests.pcapng import block, epb, idb, option, shb, spb

FRAMES = [b"", b"\x01", bytes(range(42)), bytes(range(60)), bytes(range(61))]
ENDIANS = pytest.mark.parametrize("endian", ["<", ">"], ids=["little", "big"])


Reader = Callable[[bytes], list[Packet]]


@pytest.fixture
def read_all(tmp_path: Path) -> Reader:
    """Writes the bytes to a file in tmp_path and reads it back the way the exporter does."""

    def read_all(data: bytes) -> list[Packet]:
        path = tmp_path / "capture"
        path.write_bytes(data)
        with path.open("rb") as f:
            return list(read(f))

    return read_all


# ---------------------------------------------------------------------------------------------
# Classic pcap

TIMES = [0.0, 1000.000001, 1795317178.491829]


@ENDIANS
@pytest.mark.parametrize("nano", [False, True], ids=["usec", "nsec"])
def test_pcap(endian: str, nano: bool, read_all: Reader) -> None:
    records = list(zip(TIMES * 2, FRAMES, strict=False))
    packets = read_all(pcap_bytes(records, 1, endian=endian, nano=nano))
    assert [(p.linktype, p.frame, p.interface) for p in packets] == [
        (1, frame, "") for _, frame in records
    ]
    assert [p.time for p in packets] == pytest.approx([t for t, _ in records], abs=1e-6)


@ENDIANS
def test_pcap_nanosecond_resolution(endian: str, read_all: Reader) -> None:
    data = pcap_bytes([(0.0, b"x")], 1, endian=endian, nano=True)
    data = data[:24] + struct.pack(endian + "II", 1000, 123456789) + data[32:]
    [packet] = read_all(data)
    assert packet.time == pytest.approx(1000.123456789, abs=1e-9)


@pytest.mark.parametrize(
    ("field", "linktype"),
    [(1, 1), (113, 113), (276, 276), (101, 101), (228, 228), (0x10000001, 1)],
    ids=["ethernet", "sll", "sll2", "raw", "ipv4", "ethernet-with-fcs-bits"],
)
def test_pcap_linktype(field: int, linktype: int, read_all: Reader) -> None:
    [packet] = read_all(pcap_bytes([(1.0, b"frame")], field))
    assert packet.linktype == linktype


def test_pcap_reference_capture() -> None:
    packets = capture("vrrp-all.pcap")
    assert len(packets) == 751
    assert {p.linktype for p in packets} == {1}
    assert packets[0].time == pytest.approx(1795317178.491829, abs=1e-6)
    assert all(a.time <= b.time for a, b in itertools.pairwise(packets))


# ---------------------------------------------------------------------------------------------
# pcapng


@ENDIANS
@pytest.mark.parametrize(
    ("tsresol", "ticks", "time"),
    [
        pytest.param(None, 1795317178_491829, 1795317178.491829, id="default-usec"),
        pytest.param(6, 1795317178_491829, 1795317178.491829, id="usec"),
        pytest.param(9, 1000_123456789, 1000.123456789, id="nsec"),
        pytest.param(3, 1795317178_491, 1795317178.491, id="msec"),
        pytest.param(0x80 | 20, 3 << 20 | 1 << 19, 3.5, id="binary-2^-20"),
    ],
)
def test_pcapng_timestamp_resolution(
    endian: str, tsresol: int | None, ticks: int, time: float, read_all: Reader
) -> None:
    data = shb(endian) + idb(endian, 1, tsresol=tsresol) + epb(endian, 0, ticks, b"abc")
    [packet] = read_all(data)
    assert packet == Packet(pytest.approx(time, abs=1e-9), 1, b"abc", "")


@ENDIANS
def test_pcapng_interfaces(endian: str, read_all: Reader) -> None:
    data = (
        shb(endian, (1, b"comment"))
        + idb(endian, 1, name="eth0")
        + idb(endian, 276, name="any", tsresol=9)
        + block(endian, 4, b"\0\0\0\0")  # name resolution block: skipped
        + epb(endian, 0, 2_000000, FRAMES[2])
        + epb(endian, 1, 3_000000000, FRAMES[4])
        + block(endian, 5, struct.pack(endian + "III", 0, 0, 0))  # interface statistics
        + epb(endian, 0, 4_000000, FRAMES[1], orig=1500)
    )
    assert read_all(data) == [
        Packet(2.0, 1, FRAMES[2], "eth0"),
        Packet(3.0, 276, FRAMES[4], "any", 1),
        Packet(4.0, 1, FRAMES[1], "eth0"),
    ]


def test_pcapng_sections_reset_interfaces_and_byte_order(read_all: Reader) -> None:
    first = shb("<") + idb("<", 1, name="eth0") + epb("<", 0, 1_000000, b"one")
    second = shb(">") + idb(">", 113, name="lo", tsresol=9) + epb(">", 0, 2_000000000, b"two")
    third = shb("<") + idb("<", 101) + epb("<", 0, 3_000000, b"three")
    assert read_all(first + second + third) == [
        Packet(1.0, 1, b"one", "eth0"),
        Packet(2.0, 113, b"two", "lo"),
        Packet(3.0, 101, b"three", ""),
    ]


@ENDIANS
def test_pcapng_packet_options_are_not_frame_bytes(endian: str, read_all: Reader) -> None:
    packet = epb(endian, 0, 0, b"abcde")
    flags = option(endian, 2, struct.pack(endian + "I", 1)) + bytes(4)  # epb_flags, end of options
    length = struct.pack(endian + "I", len(packet) + len(flags))
    packet = packet[:4] + length + packet[8:-4] + flags + length
    [read_back] = read_all(shb(endian) + idb(endian, 1) + packet)
    assert read_back.frame == b"abcde"


@ENDIANS
@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: f"{len(f)}-bytes")
def test_pcapng_simple_packet_block(endian: str, frame: bytes, read_all: Reader) -> None:
    """A simple packet block's data is padded to 32 bits; the frame is original-length bytes."""
    data = shb(endian) + idb(endian, 1, name="eth0") + spb(endian, frame)
    assert read_all(data) == [Packet(0.0, 1, frame, "eth0")]


def test_pcapng_of_a_reference_capture(read_all: Reader) -> None:
    """Our writer and the classic reader agree on a real capture, frame for frame."""
    packets = capture("vrrp-prio-change.pcap")
    data = shb("<") + idb("<", 1, name="br0", tsresol=9)
    data += b"".join(epb("<", 0, round(p.time * 1e9), p.frame) for p in packets)
    again = read_all(data)
    assert [p.frame for p in again] == [p.frame for p in packets]
    assert [p.time for p in again] == pytest.approx([p.time for p in packets], abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Errors: every way a file can end early or lie about a length


def pcap_header(endian: str = "<") -> bytes:
    return pcap_bytes([], 1, endian=endian)


GOOD_PCAP = pcap_bytes([(1.0, bytes(50)), (2.0, bytes(50))], 1)
GOOD_PCAPNG = shb("<") + idb("<", 1) + epb("<", 0, 1, bytes(50)) + epb("<", 0, 2, bytes(50))


def _length(data: bytes, at: int, value: int, endian: str = "<") -> bytes:
    return data[:at] + struct.pack(endian + "I", value) + data[at + 4 :]


ERRORS = [
    pytest.param(b"", "^empty file$", id="empty"),
    pytest.param(b"hello, world", "^not a pcap or pcapng file$", id="text"),
    pytest.param(b"\x1f\x8b\x08\x00" + bytes(20), "not a pcap", id="gzip"),
    pytest.param(b"\xd4\xc3", "not a pcap", id="two-bytes"),
    pytest.param(pcap_header()[:10], "ends inside the file header", id="pcap-header"),
    pytest.param(pcap_header()[:4], "ends inside the file header", id="pcap-magic-only"),
    pytest.param(GOOD_PCAP[: 24 + 8], "ends inside a packet header", id="pcap-record-header"),
    pytest.param(GOOD_PCAP[: 24 + 16 + 10], "ends inside a packet$", id="pcap-packet"),
    pytest.param(GOOD_PCAP[:-1], "ends inside a packet$", id="pcap-second-packet"),
    pytest.param(_length(GOOD_PCAP, 24 + 8, 0x7FFFFFFF), "claims 2147483647 bytes", id="caplen"),
    pytest.param(GOOD_PCAPNG[:4], "ends inside the section header", id="pcapng-magic-only"),
    pytest.param(GOOD_PCAPNG[:20], "ends inside the section header", id="pcapng-shb"),
    pytest.param(
        GOOD_PCAPNG[:8] + b"\xde\xad\xbe\xef" + GOOD_PCAPNG[12:], "byte-order magic", id="bom"
    ),
    pytest.param(_length(GOOD_PCAPNG, 4, 24), "section header claims 24", id="shb-short"),
    pytest.param(_length(GOOD_PCAPNG, 4, 30), "section header claims 30", id="shb-unaligned"),
    pytest.param(GOOD_PCAPNG[:30], "ends inside a block header", id="block-type"),
    pytest.param(GOOD_PCAPNG[:32], "ends inside a block header", id="block-length"),
    pytest.param(GOOD_PCAPNG[:40], "ends inside a block$", id="block-body"),
    pytest.param(GOOD_PCAPNG[:-1], "ends inside a block$", id="last-block"),
    pytest.param(_length(GOOD_PCAPNG, 32, 8), "a block claims 8 bytes", id="block-short"),
    pytest.param(_length(GOOD_PCAPNG, 32, 22), "a block claims 22 bytes", id="block-unaligned"),
    pytest.param(
        _length(GOOD_PCAPNG, 32, 0xFFFFFFFC), "a block claims 4294967292 bytes", id="block-huge"
    ),
    pytest.param(shb("<") + block("<", 1, bytes(4)), "short interface block", id="idb-short"),
    pytest.param(
        shb("<") + idb("<", 1) + block("<", 6, bytes(16)), "short packet block", id="epb-short"
    ),
    pytest.param(shb("<") + epb("<", 0, 0, b"x"), "does not match its interface", id="no-idb"),
    pytest.param(
        shb("<") + idb("<", 1) + epb("<", 1, 0, b"x"), "does not match its interface", id="ifid"
    ),
    pytest.param(
        shb("<") + idb("<", 1) + block("<", 6, struct.pack("<5I", 0, 0, 0, 99, 99) + bytes(8)),
        "does not match its interface or length",
        id="epb-caplen",
    ),
    pytest.param(shb("<") + spb("<", b"abcd"), "simple packet block without", id="spb-no-idb"),
]


@pytest.mark.parametrize(("data", "message"), ERRORS)
def test_errors(data: bytes, message: str, read_all: Reader) -> None:
    with pytest.raises(PcapError, match=message):
        read_all(data)


@pytest.mark.parametrize(
    "data",
    [pytest.param(GOOD_PCAP[:-1], id="pcap"), pytest.param(GOOD_PCAPNG[:-1], id="pcapng")],
)
def test_packets_before_the_damage_are_delivered(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "capture"
    path.write_bytes(data)
    with path.open("rb") as f:
        packets: Iterator[Packet] = read(f)
        assert next(packets).frame == bytes(50)
        with pytest.raises(PcapError):
            next(packets)


@pytest.mark.parametrize(
    ("data", "whole_files"),
    [
        pytest.param(GOOD_PCAP, {24: 0, 90: 1}, id="pcap"),
        pytest.param(GOOD_PCAPNG, {28: 0, 48: 0, 132: 1}, id="pcapng"),
    ],
)
def test_every_truncation(data: bytes, whole_files: dict[int, int], read_all: Reader) -> None:
    """Cut anywhere: a PcapError, unless the cut falls between records (then the packets left)."""
    for cut in range(1, len(data)):
        try:
            packets = read_all(data[:cut])
        except PcapError as error:
            assert cut not in whole_files
            assert re.match("truncated capture: the file ends inside |not a pcap", str(error)), cut
        else:
            assert whole_files.get(cut) == len(packets), cut


@pytest.mark.parametrize("delta", [-8, -4, 4, 8, 16])
@pytest.mark.parametrize("endian", ["<", ">"])
def test_corrupt_leading_block_length(endian: str, delta: int, read_all: Reader) -> None:
    packet = epb(endian, 0, 0, bytes(8))
    packet = _length(packet, 4, len(packet) + delta, endian)
    data = shb(endian) + idb(endian, 1) + packet + epb(endian, 0, 1, bytes(range(8))) * 2
    with pytest.raises(PcapError, match=r"^corrupt pcapng"):
        read_all(data)
