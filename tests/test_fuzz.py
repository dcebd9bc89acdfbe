"""The decoder under hostile input: a bounded atheris run, and targeted mutations of real adverts.

tests/test_decode.py covers random bytes and random byte flips (never raises). Here each mutation
of a real captured advert is aimed at one field, and the test knows which reason it must give.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ka_exporter.decode import Advert, DropReason, decode
from tests.frames import DATA, KEY, capture, patch, valid_checksums

ROOT = Path(__file__).resolve().parent.parent
PROPERTY = settings(max_examples=300, deadline=None)


@dataclass(frozen=True)
class Layout:
    """Where the fields of an untagged Ethernet advert sit."""

    frame: bytes
    family: str
    ip: int  # IP header
    p: int  # VRRP message
    size: int  # message without trailer
    end: int  # end of the IP payload

    @property
    def ttl_at(self) -> int:
        return self.ip + (8 if self.family == "ipv4" else 7)

    @property
    def length_at(self) -> int:
        return self.ip + (2 if self.family == "ipv4" else 4)

    @property
    def multicast(self) -> bool:
        dst = self.frame[self.ip + (16 if self.family == "ipv4" else 24)]
        return dst >> 4 == 0xE if self.family == "ipv4" else dst == 0xFF

    def decode(self, frame: bytes) -> Advert | DropReason:
        return decode(frame, 0.0, key=KEY)

    def checksums(self, frame: bytes) -> list[str]:
        """The checksum variants the message of `frame` satisfies, by an independent oracle."""
        advert = self.decode(self.frame)
        assert isinstance(advert, Advert)
        msg = frame[self.p : self.p + self.size]
        return [c.value for c in valid_checksums(advert.version, advert.src, advert.dst, msg)]


def layout(frame: bytes) -> Layout | None:
    """The layout of a plain advert (no VLAN tag, AH or IPv6 extension header), else None."""
    advert = decode(frame, 0.0, key=KEY)
    plain = frame[12:14] == b"\x08\x00" or (frame[12:14] == b"\x86\xdd" and frame[20] == 112)
    if not isinstance(advert, Advert) or advert.ah or not plain:
        return None
    if advert.family == "ipv4":
        p = 14 + (frame[14] & 0x0F) * 4
        end = 14 + int.from_bytes(frame[16:18])
    else:
        p, end = 54, 54 + int.from_bytes(frame[18:20])
    alen = 4 if advert.family == "ipv4" else 16
    size = 8 + alen * len(advert.vips) + (8 if advert.version == 2 else 0)
    return Layout(frame, advert.family, 14, p, size, end)


REAL = sorted(
    {
        found
        for pcap in sorted(DATA.glob("*.pcap"))
        for packet in capture(pcap.name)
        if (found := layout(packet.frame)) is not None
    },
    key=lambda x: x.frame,
)
adverts = st.sampled_from(REAL)


def test_real_adverts_cover_every_kind() -> None:
    advert_kinds = set()
    for x in REAL:
        a = x.decode(x.frame)
        assert isinstance(a, Advert)
        advert_kinds.add((a.family, a.version, x.multicast))
    assert advert_kinds == {("ipv4", 2, True), ("ipv4", 3, True), ("ipv4", 3, False),
                            ("ipv6", 3, True)}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# atheris


def test_bounded_atheris_run(tmp_path: Path) -> None:
    crashes = tmp_path / "crashes"
    run = subprocess.run(
        [sys.executable, "-m", "bench.fuzz", "--runs", "20000", "--crashes", str(crashes)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert re.search(r"^inputs run: 20000$", out, re.M), out
    assert re.search(r"^crashes: 0$", out, re.M), out
    assert int(re.search(r"^seeds: (\d+)$", out, re.M).group(1)) >= 7 * len(REAL)  # type: ignore[union-attr]
    assert int(re.search(r"^coverage: (\d+) edges", out, re.M).group(1)) > 0  # type: ignore[union-attr]
    results = dict(re.findall(r"^  (\w+): (\d+)$", out, re.M))
    assert sum(map(int, results.values())) == 20000
    assert set(results) <= {"advert", "carp", "claim", *DropReason}
    assert int(results["advert"]) > 0
    assert len(results) >= 6, results  # the seeds reach well past the first checks
    assert not crashes.exists()


def test_a_crash_is_saved_and_fails_the_run(tmp_path: Path) -> None:
    """The harness's crash path, with a decoder made to raise."""
    crashes = tmp_path / "crashes"
    script = textwrap.dedent(f"""
        import bench.fuzz as fuzz
        from pathlib import Path

        def broken(*_):
            raise IndexError("boom")

        fuzz.decode = broken
        work = Path({str(tmp_path / "work")!r})
        work.mkdir()
        fuzz.Harness(Path({str(crashes)!r}), 10, 0, work, 0)(b"\\x00frame")
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert run.returncode == 1
    assert "IndexError: boom" in run.stderr
    assert "crashes: 1" in run.stdout
    (saved,) = crashes.iterdir()
    assert saved.read_bytes() == b"\x00frame"
    assert not (tmp_path / "work").exists()


# ---------------------------------------------------------------------------------------------
# Field-targeted mutations of real adverts


@PROPERTY
@given(x=adverts, ttl=st.integers(0, 254))
def test_ttl_below_255(x: Layout, ttl: int) -> None:
    result = x.decode(patch(x.frame, x.ttl_at, bytes([ttl])))
    if x.multicast:
        assert result is DropReason.TTL
    else:  # keepalived's unicast_ttl: not checked
        assert isinstance(result, Advert)
        assert result.ttl == ttl


@PROPERTY
@given(x=adverts, version=st.integers(0, 15), vtype=st.integers(0, 15))
def test_version_and_type(x: Layout, version: int, vtype: int) -> None:
    original = x.frame[x.p]
    frame = patch(x.frame, x.p, bytes([version << 4 | vtype]))
    result = x.decode(frame)
    if version not in (2, 3) or (version == 2 and x.family == "ipv6"):
        assert result is DropReason.VERSION
    elif vtype != 1:
        assert result is DropReason.TYPE
    elif frame[x.p] == original:
        assert isinstance(result, Advert)
    else:  # the other valid version: the sum changed, or the v2/v3 sizes no longer fit
        assert result in (DropReason.CHECKSUM, DropReason.LENGTH, DropReason.INTERVAL)


@PROPERTY
@given(x=adverts, extra=st.integers(1, 255))
def test_address_count_beyond_the_payload(x: Layout, extra: int) -> None:
    count = x.frame[x.p + 3]
    alen = 4 if x.family == "ipv4" else 16
    room = (x.end - x.p - x.size) // alen  # whole addresses that would still fit
    if extra <= room or count + extra > 255:
        return
    assert x.decode(patch(x.frame, x.p + 3, bytes([count + extra]))) is DropReason.LENGTH


@PROPERTY
@given(x=adverts, value=st.integers(0, 0xFFFF))
def test_checksum_field(x: Layout, value: int) -> None:
    """Any checksum value gives exactly what the scapy-based oracle says it satisfies."""
    frame = patch(x.frame, x.p + 6, value.to_bytes(2))
    result = x.decode(frame)
    variants = x.checksums(frame)
    if variants:
        assert isinstance(result, Advert)
        assert result.checksum == variants[0]
    else:
        assert result is DropReason.CHECKSUM


@PROPERTY
@given(x=adverts, data=st.data())
def test_bit_flip_in_priority_or_addresses(x: Layout, data: st.DataObject) -> None:
    offset = data.draw(st.sampled_from([x.p + 2, *range(x.p + 8, x.p + x.size)]))
    bit = data.draw(st.integers(0, 7))
    frame = patch(x.frame, offset, bytes([x.frame[offset] ^ 1 << bit]))
    result = x.decode(frame)
    assert isinstance(result, Advert) == bool(x.checksums(frame))
    if isinstance(result, DropReason):
        assert result is DropReason.CHECKSUM


@PROPERTY
@given(x=adverts, data=st.data())
def test_ip_length_field(x: Layout, data: st.DataObject) -> None:
    """Shorter than the message: length; beyond the frame: truncated; into padding: trailer."""
    header = x.p - x.ip if x.family == "ipv4" else 40
    base = x.end - x.ip - (0 if x.family == "ipv4" else 40)  # the field's current value
    length = data.draw(st.integers(header if x.family == "ipv4" else 0, base + 64))
    padding = data.draw(st.integers(0, 64))
    frame = patch(x.frame + bytes(padding), x.length_at, length.to_bytes(2))
    result = x.decode(frame)
    end = x.ip + length + (0 if x.family == "ipv4" else 40)
    if end > len(frame):
        assert result is DropReason.TRUNCATED
    elif end < x.p + x.size:
        assert result is DropReason.LENGTH
    else:
        assert isinstance(result, Advert)
        assert result.trailer == end - x.p - x.size


@PROPERTY
@given(x=adverts, data=st.data())
def test_truncation_and_extension(x: Layout, data: st.DataObject) -> None:
    """Cut anywhere before the IP payload's end: truncated. Bytes after it: the same advert."""
    cut = data.draw(st.integers(0, x.end - 1))
    assert x.decode(x.frame[:cut]) is DropReason.TRUNCATED
    tail = data.draw(st.binary(min_size=1, max_size=64))
    assert x.decode(x.frame[: x.end] + tail) == x.decode(x.frame)


@PROPERTY
@given(x=adverts, vrid=st.just(0) | st.integers(1, 255), interval=st.integers(0, 0xFFF))
def test_vrid_and_interval_zero(x: Layout, vrid: int, interval: int) -> None:
    """VRID 0 and interval 0 are named before the checksum is looked at."""
    version = x.frame[x.p] >> 4
    frame = patch(x.frame, x.p + 1, bytes([vrid]))
    if version == 2:
        frame = patch(frame, x.p + 5, bytes([interval & 0xFF]))
        zero = interval & 0xFF == 0
    else:
        frame = patch(frame, x.p + 4, (x.frame[x.p + 4] & 0xF0 | interval >> 8).to_bytes())
        frame = patch(frame, x.p + 5, bytes([interval & 0xFF]))
        zero = interval == 0
    result = x.decode(frame)
    if vrid == 0:
        assert result is DropReason.VRID
    elif zero:
        assert result is DropReason.INTERVAL
    else:
        assert isinstance(result, Advert) == bool(x.checksums(frame))
