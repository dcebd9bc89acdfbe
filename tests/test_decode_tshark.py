"""Field-by-field agreement with tshark on the reference captures and on rewrites of them.

Every frame tshark dissects as VRRP must be an Advert for us with the same fields, and every frame
we decode must be VRRP for tshark; but CARP, which tshark's default reading takes for VRRPv2 with
seven addresses (tests/test_carp.py checks it against tshark's CARP dissector). The captures are
also rewritten as pcapng (by tshark) and into other framings (by us: VLAN tags, Linux SLL/SLL2,
raw IP) so both the reader and the link-layer parsing are checked against an independent
implementation.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from ka_exporter.decode import Advert, Carp, Checksum, decode
from ka_exporter.pcap import Packet, read
from tests.frames import DATA, KEY, pcap_bytes, reframe

TSHARK = shutil.which("tshark")
EDITCAP = shutil.which("editcap")
pytestmark = pytest.mark.skipif(
    TSHARK is None, reason="tshark is not installed (Debian package `tshark`)"
)

FIELDS = (
    "frame.number",
    "frame.time_epoch",
    "frame.cap_len",
    "vrrp.version",
    "vrrp.virt_rtr_id",
    "vrrp.prio",
    "vrrp.addr_count",
    "vrrp.auth_type",
    "vrrp.adver_int",
    "vrrp.short_adver_int",
    "vrrp.ip_addr",
    "vrrp.ipv6_addr",
    "vrrp.checksum.status",
    "ip.src",
    "ipv6.src",
    "ip.dst",
    "ipv6.dst",
    "ip.ttl",
    "ipv6.hlim",
    "ah.spi",
)
CHECKSUM_GOOD = "1"  # Wireshark's PROTO_CHECKSUM_E_GOOD
CAPTURES = sorted(DATA.glob("*.pcap"))


@cache
def tshark(path: Path) -> list[dict[str, str]]:
    """One dict of FIELDS per frame, values as tshark prints them (lists joined with ',')."""
    assert TSHARK is not None
    command = [TSHARK, "-n", "-r", str(path), "-o", "vrrp.v3_checksum_as_in_v2:FALSE"]
    command += ["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for field in FIELDS:
        command += ["-e", field]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    return [dict(zip(FIELDS, line.split("\t"), strict=True)) for line in out.stdout.splitlines()]


def from_tshark(row: dict[str, str]) -> dict[str, object]:
    v4 = bool(row["ip.src"])
    v2 = row["vrrp.version"] == "2"
    return {
        "version": int(row["vrrp.version"]),
        "vrid": int(row["vrrp.virt_rtr_id"]),
        "priority": int(row["vrrp.prio"]),
        "interval_cs": int(row["vrrp.adver_int"]) * 100 if v2 else int(row["vrrp.short_adver_int"]),
        "vips": tuple(filter(None, row["vrrp.ip_addr" if v4 else "vrrp.ipv6_addr"].split(","))),
        "count": int(row["vrrp.addr_count"]),
        "auth_type": int(row["vrrp.auth_type"]) if v2 else 0,
        "checksum_good": row["vrrp.checksum.status"] == CHECKSUM_GOOD,
        "family": "ipv4" if v4 else "ipv6",
        "src": row["ip.src" if v4 else "ipv6.src"],
        "dst": row["ip.dst" if v4 else "ipv6.dst"],
        "ttl": int(row["ip.ttl" if v4 else "ipv6.hlim"]),
        "ah": bool(row["ah.spi"]),
    }


def from_decoder(adv: Advert) -> dict[str, object]:
    return {
        "version": adv.version,
        "vrid": adv.vrid,
        "priority": adv.priority,
        "interval_cs": adv.interval_cs,
        "vips": adv.vips,
        "count": len(adv.vips),
        "auth_type": adv.auth_type,
        # tshark verifies v3 with the pseudo-header (its default) and v2 over the message
        "checksum_good": adv.version == 2 or adv.checksum is Checksum.PSEUDO_HEADER,
        "family": adv.family,
        "src": adv.src,
        "dst": adv.dst,
        "ttl": adv.ttl,
        "ah": adv.ah,
    }


def assert_agree(path: Path, dissected: Path | None = None) -> int:
    """Compare the decoder on every frame of `path` with tshark's dissection of `dissected`
    (a copy with the same frames, `path` itself by default); return the number of adverts."""
    with path.open("rb") as f:
        packets: list[Packet] = list(read(f))
    rows = tshark(dissected or path)
    assert len(rows) == len(packets)
    adverts = 0
    for number, (row, pkt) in enumerate(zip(rows, packets, strict=True), start=1):
        assert int(row["frame.number"]) == number
        assert int(row["frame.cap_len"]) == len(pkt.frame), number
        assert float(row["frame.time_epoch"]) == pytest.approx(pkt.time, abs=1e-6), number
        result = decode(pkt.frame, pkt.time, pkt.linktype, KEY)
        is_vrrp = bool(row["vrrp.version"])
        if isinstance(result, Carp):  # tshark's default reading calls CARP VRRPv2, 7 addresses
            assert (row["vrrp.version"], row["vrrp.addr_count"]) == ("2", "7"), number
            continue
        assert isinstance(result, Advert) == is_vrrp, f"frame {number}: {result!r} vs tshark {row}"
        if is_vrrp:
            assert isinstance(result, Advert)
            assert from_decoder(result) == from_tshark(row), f"frame {number}"
            adverts += 1
    return adverts


IPV4, IPV6 = b"\x08\x00", b"\x86\xdd"
REWRITES = {  # name: (framing, ethertypes kept; None keeps every frame)
    "dot1q": ("dot1q", None),
    "qinq": ("qinq", None),
    "sll": ("sll", None),
    "sll2": ("sll2", None),
    "raw-101": ("raw", {IPV4, IPV6}),
    "ipv4-228": ("raw_family", {IPV4}),
    "ipv6-229": ("raw_family", {IPV6}),
}


def rewrite(source: Path, target: Path, framing: str, ethertypes: set[bytes] | None) -> Path:
    """`source` with its frames (those of `ethertypes`) moved into `framing`."""
    with source.open("rb") as f:
        packets = [p for p in read(f) if ethertypes is None or p.frame[12:14] in ethertypes]
    frames = [(pkt.time, *reframe(pkt.frame, framing)) for pkt in packets]
    assert len({linktype for _, _, linktype in frames}) == 1
    target.write_bytes(pcap_bytes([(t, frame) for t, frame, _ in frames], frames[0][2], nano=True))
    return target


@pytest.fixture(params=CAPTURES, ids=lambda p: p.stem)
def capture_path(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


def test_original(capture_path: Path) -> None:
    assert assert_agree(capture_path) > 0


def test_pcapng(capture_path: Path, tmp_path: Path) -> None:
    """The same frames written as pcapng by Wireshark's own writer (editcap, or tshark -w)."""
    target = tmp_path / f"{capture_path.stem}.pcapng"
    if EDITCAP is not None:
        command = [EDITCAP, "-F", "pcapng", str(capture_path), str(target)]
    else:
        assert TSHARK is not None
        command = [TSHARK, "-r", str(capture_path), "-w", str(target), "-F", "pcapng"]
    subprocess.run(command, capture_output=True, check=True, timeout=120)
    assert target.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    assert assert_agree(target, dissected=capture_path) > 0


@pytest.mark.parametrize("name", REWRITES)
def test_rewritten(name: str, tmp_path: Path) -> None:
    target = rewrite(DATA / "vrrp-all.pcap", tmp_path / f"{name}.pcap", *REWRITES[name])
    assert assert_agree(target) > 0
