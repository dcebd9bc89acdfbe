"""CARP beside VRRP on one segment: ucarp and keepalived in the lab, the exporter watching.

CARP (ucarp here; pfSense, OPNsense and FreeBSD elsewhere) sends its adverts to 224.0.0.18 on IP
protocol 112 with VRRPv2's first byte. A vhid different from every VRID is a harmless neighbour
that the exporter must name as CARP, not count as malformed VRRP. A vhid equal to a VRID is a
real conflict, and what keepalived makes of it is checked here on its log and on the wire: it
reads each CARP advert as a VRRPv2 one with 7 addresses ("vrrp packet too short, length 56 and
expect 64") and, as master, restarts its advert timer on each. While CARP adverts come more
often than keepalived's advert interval, its master sends none of its own: the backup times out
and takes over, the master wins the election back at once, and so on every master-down
interval. At equal intervals (1 s each, both defaults) it is a race decided by microseconds:
some of the master's adverts get through, at irregular gaps, and the backup takes over now and
then; that case is not asserted.

The oracle for the CARP fields is tshark with `ip.try_heuristic_first`: by default it decodes
CARP as VRRP, which a test shows so that a change of its default reading is noticed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from lab import Flavour, Instance, Lab, unavailable, wait_for
from lab.addressing import host_ipv4, node_host
from lab.exporter import NsExporter, Scrape
from lab.ucarp import Carp, Ucarp
from lab.ucarp import unavailable as ucarp_unavailable
from tests.lab_fixtures import MakeLab

pytestmark = pytest.mark.lab

EXPORTER = str(Path(sys.executable).with_name("ka-exporter"))
HEURISTIC = ("-o", "ip.try_heuristic_first:TRUE")  # tshark reads CARP as CARP only with this

# keepalived VRID A with ucarp vhid B beside it; the colliding case uses VHID == VRID
VRID_A, VHID_B, SKEW_B = 61, 62, 40
COLLIDING = 63
EXPIRE_AFTER = 2  # master-down intervals: the exporter forgets a silent CARP speaker in 6 s
FORGET_FAST = ("--vrrp.expire-after", str(EXPIRE_AFTER))  # live and in analyze

TOO_SHORT = "vrrp packet too short, length 56 and expect 64"


def skip_unless_carp(*tools: str) -> None:
    reasons = [r for r in (unavailable(), ucarp_unavailable()) if r]
    missing = [tool for tool in ("curl", *tools) if shutil.which(tool) is None]
    if missing:
        reasons.append(f"not installed: {', '.join(missing)}")
    if reasons:
        pytest.skip("; ".join(reasons))


def address(node: int) -> str:
    return host_ipv4(node_host(node))


def carp_key(vhid: int) -> dict[str, str]:
    return {"interface": "eth0", "family": "ipv4", "vhid": str(vhid)}


def rejected(scrape: Scrape) -> dict[str, float]:
    return {ls.get("reason", ""): v for ls, v in scrape.find("vrrp_packets_rejected_total") if v}


def colliding(scrape: Scrape, inst: Instance) -> bool:
    return scrape.of("vrrp_carp_collision", inst) == 1


def log_lines(lab: Lab, node: int) -> list[str]:
    return lab.node(node).file("log").read_text(errors="replace").splitlines()


# -- the status page -------------------------------------------------------------------------


@dataclass
class Row:
    cells: list[str]
    badges: list[str]

    def text(self) -> str:
        return " ".join(self.cells)


@dataclass
class Table:
    head: list[str]
    rows: list[Row]

    def column(self, name: str) -> int:
        return self.head.index(name)


class Tables(HTMLParser):
    """Every table of the page with an id: its header cells, and each row's cells and badges."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, Table] = {}
        self._table: Table | None = None
        self._cell: list[str] | None = None
        self._badge: list[str] | None = None
        self._head = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table" and found.get("id"):
            self._table = self.tables[str(found["id"])] = Table([], [])
        elif self._table is None:
            return
        elif tag == "thead":
            self._head = True
        elif tag == "tr" and not self._head:
            self._table.rows.append(Row([], []))
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "span" and "badge" in (found.get("class") or "").split():
            self._badge = []

    def handle_endtag(self, tag: str) -> None:
        if self._table is None:
            return
        if tag == "table":
            self._table = None
        elif tag == "thead":
            self._head = False
        elif tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).strip()
            if self._head:
                self._table.head.append(text)
            elif self._table.rows:
                self._table.rows[-1].cells.append(text)
            self._cell = None
        elif tag == "span" and self._badge is not None:
            if self._table.rows:
                self._table.rows[-1].badges.append("".join(self._badge).strip())
            self._badge = None

    def handle_data(self, data: str) -> None:
        for part in (self._cell, self._badge):
            if part is not None:
                part.append(data)


def vrid_row(page: Tables, vrid: int) -> Row:
    table = page.tables["vrids"]
    column = table.column("VRID")
    (row,) = [r for r in table.rows if len(r.cells) > column and r.cells[column] == str(vrid)]
    return row


def carp_rows(page: Tables, vhid: int) -> list[Row]:
    """Rows of the CARP table naming `vhid` in a cell of their own."""
    return [r for r in page.tables["carp"].rows if str(vhid) in r.cells]


# -- captures: tshark, the analyzer, and pcap records ------------------------------------------


def tshark(pcap: Path, display: str, fields: Sequence[str], *options: str) -> list[list[str]]:
    argv = ["tshark", "-n", *options, "-r", str(pcap), "-Y", display, "-T", "fields"]
    argv += [arg for field in fields for arg in ("-e", field)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


CARP_FIELDS = (
    "frame.time_epoch",
    "ip.src",
    "carp.vhid",
    "carp.advskew",
    "carp.adver_int",
    "carp.demotion",
    "carp.checksum",
    "carp.checksum.status",
)


@dataclass(frozen=True)
class CarpFrame:
    """One CARP advert as tshark reads it with its heuristic first."""

    time: float
    src: str
    vhid: int
    advskew: int
    advbase: int
    demote: int
    checksum: int
    good: bool


def carp_frames(pcap: Path) -> list[CarpFrame]:
    return [
        CarpFrame(
            float(t), src, int(vhid), int(skew), int(base), int(demote), int(csum, 0), status == "1"
        )
        for t, src, vhid, skew, base, demote, csum, status in tshark(
            pcap, "carp", CARP_FIELDS, *HEURISTIC
        )
    ]


def vrrp_adverts(pcap: Path) -> list[tuple[float, str, int]]:
    """(time, source, priority) of every VRRP advert, CARP read as CARP."""
    rows = tshark(pcap, "vrrp", ("frame.time_epoch", "ip.src", "vrrp.prio"), *HEURISTIC)
    return [(float(t), src, int(prio)) for t, src, prio in rows]


def analyze(pcap: Path, *args: str) -> dict[str, Any]:
    argv = [EXPORTER, "analyze", str(pcap), "--format", "json", *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def carp_entries(doc: dict[str, Any], vhid: int) -> list[dict[str, Any]]:
    return [c for c in doc["carp"] if c["vhid"] == vhid]


def vrid_entry(doc: dict[str, Any], vrid: int) -> dict[str, Any]:
    entries: list[dict[str, Any]] = [v for v in doc["vrids"] if v["vrid"] == vrid]
    assert len(entries) == 1, entries
    return entries[0]


@dataclass
class Pcap:
    """A classic pcap file as its header and records (record header, frame bytes)."""

    header: bytes
    records: list[tuple[bytes, bytes]]
    endian: str

    @classmethod
    def read(cls, path: Path) -> Pcap:
        data = path.read_bytes()
        endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">"}.get(data[:4])
        endian = endian or {b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}[data[:4]]
        records, off = [], 24
        while off + 16 <= len(data):
            (length,) = struct.unpack_from(f"{endian}I", data, off + 8)
            if off + 16 + length > len(data):
                break  # a record still being written
            records.append((data[off : off + 16], data[off + 16 : off + 16 + length]))
            off += 16 + length
        return cls(data[:24], records, endian)

    def write(self, path: Path, records: Sequence[tuple[bytes, bytes]] | None = None) -> Path:
        chosen = self.records if records is None else records
        path.write_bytes(self.header + b"".join(h + frame for h, frame in chosen))
        return path

    def seconds(self, record: tuple[bytes, bytes]) -> int:
        (secs,) = struct.unpack_from(f"{self.endian}I", record[0], 0)
        return int(secs)


def carp_offset(frame: bytes) -> int | None:
    """Where the CARP header starts in an untagged Ethernet frame, or None if not IPv4 CARP."""
    if frame[12:14] != b"\x08\x00" or frame[23] != 112:
        return None
    p = 14 + (frame[14] & 0x0F) * 4
    return p if len(frame) - p == 36 and frame[p] == 0x21 and frame[p + 3] == 7 else None


def internet_checksum(data: bytes) -> int:
    total: int = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# -- (1) and (3): a CARP neighbour with its own vhid ------------------------------------------


@dataclass
class Beside:
    lab: Lab
    monitor: NsExporter
    ucarp: Ucarp
    inst: Instance
    pcap: Path
    capturing: contextlib.ExitStack

    def stop_capture(self) -> Path:
        self.capturing.close()
        return self.pcap


@pytest.fixture(scope="module")
def beside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Beside]:
    """keepalived VRID A on n1 (master) and n2, ucarp vhid B on n3, an exporter and a capture on
    the monitor port: n1 the VRID's master (the exporter says so), ucarp the vhid's."""
    skip_unless_carp()
    pcap = tmp_path_factory.mktemp("carp") / "beside.pcap"
    inst = Instance(VRID_A, Flavour.V3)
    with Lab([inst], nodes=3) as lab, contextlib.ExitStack() as capturing:
        capturing.enter_context(lab.capture(pcap))
        lab.start_all()
        ucarp = Ucarp(lab, Carp(VHID_B, 3, advskew=SKEW_B))
        monitor = NsExporter(lab, "mon")
        monitor.wait_ready()
        wait_for(lambda: lab.master_of(VRID_A) == 1, 10, what="n1 master of VRID A")

        wait_for(ucarp.master, 10, what="ucarp master of vhid B")
        wait_for(lambda: monitor.scrape().masters(inst) == {address(1)}, 5, what="exporter")
        yield Beside(lab, monitor, ucarp, inst, pcap, capturing)
    assert not lab.leftovers()


def test_carp_neighbour_is_named_carp_and_leaves_vrrp_alone(beside: Beside) -> None:
    lab, monitor, inst = beside.lab, beside.monitor, beside.inst
    assert beside.ucarp.running() and beside.ucarp.master(), beside.ucarp.describe()
    try:
        wait_for(
            lambda: monitor.scrape().value("carp_masters", **carp_key(VHID_B)) == 1,
            3 * beside.ucarp.carp.interval,
            what="carp_masters 1 for vhid B",
        )
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{monitor.describe()}\n{beside.ucarp.describe()}") from None
    time.sleep(1.2 * beside.ucarp.carp.interval)  # one more CARP advert at least
    scrape = monitor.scrape()
    ucarp_at = address(3)

    # CARP, named as CARP: one master, the ucarp node, with its advbase and advskew
    assert scrape.value("carp_masters", **carp_key(VHID_B)) == 1
    speaker = {**carp_key(VHID_B), "address": ucarp_at}
    adverts = scrape.value("carp_speaker_advertisements_total", **speaker)
    assert adverts is not None and adverts >= 2, scrape.find("carp_speaker_advertisements_total")
    assert scrape.value("carp_speaker_advbase_seconds", **speaker) == 1
    assert scrape.value("carp_speaker_advskew", **speaker) == SKEW_B
    assert {ls["address"] for ls, _ in scrape.find("carp_speaker_advskew")} == {ucarp_at}

    # ... and never as VRRP: no reject, no router, no VRID of the vhid's number
    assert rejected(scrape) == {}
    assert not [(n, ls) for n, ls, _ in scrape.samples if ls.get("vrid") == str(VHID_B)]
    assert not scrape.find("vrrp_router_priority", address=ucarp_at)

    # VRID A as if CARP were not there
    assert scrape.masters(inst) == {address(1)}
    assert scrape.of("vrrp_masters", inst) == 1
    assert scrape.of("vrrp_split_brain", inst) == 0
    assert scrape.of("vrrp_master_transitions_total", inst) == 0
    assert not colliding(scrape, inst)
    assert not [v for _, v in scrape.find("vrrp_carp_collision") if v]

    # keepalived does not even log the other vhid's adverts; its backup never took over
    for node in (1, 2):
        lines = log_lines(lab, node)
        assert not [line for line in lines if "too short" in line], lab.log_tail(node)
    assert not [line for line in log_lines(lab, 2) if "Entering MASTER STATE" in line]
    assert lab.master_of(VRID_A) == 1

    # the status page lists the CARP group and has no CARP badge on VRID A
    page = Tables(monitor.get("/"))
    rows = carp_rows(page, VHID_B)
    assert len(rows) == 1 and ucarp_at in rows[0].text(), page.tables.get("carp")
    row = vrid_row(page, VRID_A)
    assert not [b for b in row.badges if "CARP" in b.upper()], row


def test_analyze_agrees_with_tshark_reading_carp_as_carp(beside: Beside, tmp_path: Path) -> None:
    skip_unless_carp("tshark")
    lab = beside.lab
    wait_for(
        lambda: sum(carp_offset(f) is not None for _, f in Pcap.read(beside.pcap).records) >= 3,
        10,
        what="three CARP adverts in the capture",
    )
    pcap = beside.stop_capture()
    frames = carp_frames(pcap)
    ucarp_at = address(3)

    # the oracle: tshark, heuristics first, sees ucarp's adverts as CARP with its settings
    assert len(frames) >= 3
    assert {(f.src, f.vhid, f.advbase, f.advskew, f.demote) for f in frames} == {
        (ucarp_at, VHID_B, 1, SKEW_B, 0)
    }
    assert all(f.good for f in frames), frames
    # the checksum, recomputed here over the 36 bytes as carp(4) does, is the one tshark read
    recorded = Pcap.read(pcap)
    headers = [f[p : p + 36] for _, f in recorded.records if (p := carp_offset(f)) is not None]
    assert len(headers) == len(frames)
    assert [int.from_bytes(h[6:8]) for h in headers] == [f.checksum for f in frames]
    assert all(internet_checksum(h) == 0 for h in headers)
    # the keepalived adverts stay VRRP in that reading
    vrrp = vrrp_adverts(pcap)
    assert vrrp and {src for _, src, _ in vrrp} <= {address(1), address(2)}

    # tshark's default reading calls the same frames VRRPv2 adverts of VRID vhid with 7
    # addresses (CARP's authlen) and no CARP at all: it cannot be the oracle
    fields = ("vrrp.version", "vrrp.virt_rtr_id", "vrrp.addr_count", "carp.vhid")
    default = tshark(pcap, "ip.src == " + ucarp_at, fields)
    assert len(default) == len(frames)
    assert {tuple(row) for row in default} == {("2", str(VHID_B), "7", "")}

    # the analyzer agrees with the oracle, and keeps CARP out of the VRRP view
    doc = analyze(pcap)
    assert not any(doc["rejects"].values()), doc["rejects"]
    (group,) = carp_entries(doc, VHID_B)
    # a classic pcap names no interface: the CARP group is on the VRID's segment
    assert (group["interface"], group["family"]) == (vrid_entry(doc, VRID_A)["interface"], "ipv4")
    assert "vlan" not in group and "netns" not in group
    (speaker,) = group["speakers"]
    assert speaker["address"] == ucarp_at
    assert (speaker["advbase"], speaker["advskew"], speaker["demote"]) == (1, SKEW_B, 0)
    assert speaker["adverts"] == len(frames)
    assert speaker["first_seen"] == pytest.approx(frames[0].time, abs=1e-5)
    assert speaker["last_seen"] == pytest.approx(frames[-1].time, abs=1e-5)
    assert group["masters"] == [ucarp_at]
    assert [v["vrid"] for v in doc["vrids"]] == [VRID_A]
    entry = vrid_entry(doc, VRID_A)
    assert entry["carp_collision"] is False
    assert entry["masters"] == [address(1)]
    assert {r["address"] for r in entry["routers"]} <= {address(1), address(2)}
    assert not [e for e in doc["events"] if "collision" in e["type"]]

    # one CARP advert with a broken checksum: tshark says so, the analyzer does not count it
    header, frame = next(r for r in reversed(recorded.records) if carp_offset(r[1]) is not None)
    p = carp_offset(frame)
    assert p is not None
    broken = bytearray(frame)
    broken[p + 6] ^= 0xFF  # the checksum's first byte
    secs = recorded.seconds(recorded.records[-1]) + 1  # after every other record
    later = struct.pack(f"{recorded.endian}I", secs) + header[4:]
    corrupt = recorded.write(tmp_path / "corrupt.pcap", [*recorded.records, (later, bytes(broken))])
    bad = [f for f in carp_frames(corrupt) if not f.good]
    assert len(bad) == 1 and bad[0].vhid == VHID_B
    doc = analyze(corrupt)
    (group,) = carp_entries(doc, VHID_B)
    assert [s["adverts"] for s in group["speakers"]] == [len(frames)]
    reasons = {reason: n for reason, n in doc["rejects"].items() if n}
    assert len(reasons) == 1 and "checksum" in next(iter(reasons)), reasons
    assert lab.master_of(VRID_A) == 1


# -- (2): a CARP vhid equal to a keepalived VRID ----------------------------------------------


def test_colliding_vhid_silences_keepalived_master_and_exporter_flags_it(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    skip_unless_carp("tshark")
    # keepalived's advert interval above CARP's 1 s, so that every CARP advert comes before
    # the master's timer runs out; at 1 s each it would be a race, decided by microseconds
    inst = Instance(COLLIDING, Flavour.V3, advert_int=1.2)
    lab: Lab = make_lab([inst], nodes=3)
    pcap = tmp_path / "collision.pcap"
    with lab.capture(pcap):
        lab.start_all()
        monitor = NsExporter(lab, "mon", args=FORGET_FAST)
        monitor.wait_ready()
        wait_for(lambda: lab.master_of(COLLIDING) == 1, 10, what="n1 master")
        wait_for(lambda: monitor.scrape().masters(inst) == {address(1)}, 5, what="exporter")
        assert not colliding(monitor.scrape(), inst)
        before = {node: len(log_lines(lab, node)) for node in (1, 2)}

        ucarp = Ucarp(lab, Carp(COLLIDING, 3))
        try:
            wait_for(lambda: colliding(monitor.scrape(), inst), 10, what="collision flagged")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{monitor.describe()}\n{ucarp.describe()}") from None
        assert ucarp.master(), ucarp.describe()
        scrape = monitor.scrape()
        assert scrape.value("carp_masters", **carp_key(COLLIDING)) == 1
        assert scrape.find("carp_speaker_advertisements_total", address=address(3))
        assert rejected(scrape) == {}
        page = Tables(monitor.get("/"))
        row = vrid_row(page, COLLIDING)
        assert [b for b in row.badges if "CARP" in b.upper()], row
        rows = carp_rows(page, COLLIDING)
        assert len(rows) == 1 and address(3) in rows[0].text(), page.tables.get("carp")

        # let the backup time out and take over twice while CARP speaks
        def takeovers() -> int:
            lines = log_lines(lab, 2)[before[2] :]
            return sum(f"(V3_{COLLIDING}) Receive advertisement timeout" in line for line in lines)

        try:
            wait_for(lambda: takeovers() >= 2, 12, what="two takeovers by n2")
        except TimeoutError as exc:
            tails = "\n".join(f"n{n}:\n{lab.log_tail(n)}" for n in (1, 2))
            raise AssertionError(f"{exc}\n{tails}\n{ucarp.describe()}") from None
        assert colliding(monitor.scrape(), inst)
        stopped = time.monotonic()
        ucarp.stop()

        # the exporter forgets the silent speaker after EXPIRE_AFTER master-down intervals
        forget = EXPIRE_AFTER * 3 * ucarp.carp.interval
        wait_for(
            lambda: not colliding(monitor.scrape(), inst), forget + 3, what="collision cleared"
        )
        cleared = time.monotonic() - stopped
        assert cleared >= forget - 1.5, f"collision cleared {cleared:.1f} s after ucarp stopped"
        scrape = monitor.scrape()
        assert (scrape.value("carp_masters", **carp_key(COLLIDING)) or 0) == 0
        assert scrape.masters(inst) == {address(1)}
        assert rejected(scrape) == {}
        row = vrid_row(Tables(monitor.get("/")), COLLIDING)
        assert not [b for b in row.badges if "CARP" in b.upper()], row
        time.sleep(1.2 * inst.advert_int)  # an advert after the expiry, for the replay to see it
    assert lab.master_of(COLLIDING) == 1  # n1 never lost it for long

    # keepalived's log: every CARP advert read as a short VRRPv2 advert, on master and backup
    frames = carp_frames(pcap)
    assert frames and {(f.src, f.vhid, f.good) for f in frames} == {(address(3), COLLIDING, True)}
    logs = {node: log_lines(lab, node)[before[node] :] for node in (1, 2)}
    for node, lines in logs.items():
        short = [line for line in lines if f"(V3_{COLLIDING}) {TOO_SHORT}" in line]
        assert abs(len(short) - len(frames)) <= 1, (node, len(short), len(frames))
    assert [line for line in logs[1] if "forcing new election" in line]
    assert not [line for line in logs[1] if "Entering BACKUP STATE" in line]

    # the wire: while CARP speaks, n1 (master throughout) sends none of its periodic adverts;
    # it only answers the takeover adverts of n2, whose master-down interval runs out again
    # and again. (At equal intervals, 1 s each, it is a race: some adverts get through.)
    adverts = vrrp_adverts(pcap)
    n1 = [t for t, src, _ in adverts if src == address(1)]
    n2 = [t for t, src, _ in adverts if src == address(2)]
    first, last = frames[0].time, frames[-1].time

    def answer(t: float) -> bool:
        return any(0 <= t - u < 0.1 for u in n2)

    end = last + ucarp.carp.interval  # ucarp was stopped before its next advert was due
    suppressed = [t for t in n1 if first + inst.advert_int + 0.05 < t < end]
    takeovers_seen = [t for t in n2 if first < t < end]
    assert len(takeovers_seen) >= 2, (takeovers_seen, first, last)
    assert [t for t in suppressed if not answer(t)] == [], (suppressed, takeovers_seen)
    assert len(suppressed) == len(takeovers_seen), (suppressed, takeovers_seen)
    mdi = inst.master_down_interval(2)
    for a, b in itertools.pairwise(takeovers_seen):
        assert b - a == pytest.approx(mdi, abs=0.25), (takeovers_seen, mdi)
    # ... and resumes one advert interval after the last CARP advert (or its last answer):
    # that advert had restarted its timer, as each one did. Then it keeps time, n2 a backup.
    after = [t for t in n1 if t > last and not answer(t)]
    assert after, "n1 silent after CARP stopped"
    previous = max([last, *(t for t in n1 if t < after[0])])
    assert after[0] - previous == pytest.approx(inst.advert_int, abs=0.1), (after[:2], last)
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert len(gaps) >= 3 and max(gaps) <= inst.advert_int + 0.1, gaps
    assert not [t for t in n2 if t > end], "n2 still taking over after CARP stopped"

    # analyze of the capture: the collision starts with CARP's first advert and ends once the
    # silent speaker is forgotten, with the same expiry as live
    doc = analyze(pcap, *FORGET_FAST)
    assert not any(doc["rejects"].values()), doc["rejects"]
    entry = vrid_entry(doc, COLLIDING)
    assert entry["carp_collision"] is False  # over by the capture's end
    assert entry["masters"] == [address(1)]
    events = [e for e in doc["events"] if "collision" in e["type"]]
    assert [e["type"] for e in events] == ["collision_start", "collision_end"], events
    for event in events:
        where = (event["vrid"], event["family"], event["interface"])
        assert where == (COLLIDING, "ipv4", entry["interface"]), event
    assert events[0]["time"] == pytest.approx(first, abs=1e-5), (events[0], first)
    assert last + forget - 1.5 <= events[1]["time"] <= doc["end"], (events[1], last)
    for group in carp_entries(doc, COLLIDING):  # if the forgotten group is still listed
        assert [(s["address"], s["adverts"]) for s in group["speakers"]] == [
            (address(3), len(frames))
        ]

    # ... and a capture cut while CARP still spoke ends in collision, ucarp its CARP master
    recorded = Pcap.read(pcap)
    cut = int((first + last) / 2)
    head = [r for r in recorded.records if recorded.seconds(r) <= cut]
    doc = analyze(recorded.write(tmp_path / "during.pcap", head), *FORGET_FAST)
    assert vrid_entry(doc, COLLIDING)["carp_collision"] is True
    types = [e["type"] for e in doc["events"] if "collision" in e["type"]]
    assert types == ["collision_start"], types
    (group,) = carp_entries(doc, COLLIDING)
    assert group["masters"] == [address(3)]
    (speaker,) = group["speakers"]
    heard = sum(carp_offset(frame) is not None for _, frame in head)
    assert (speaker["address"], speaker["adverts"], speaker["advbase"]) == (address(3), heard, 1)
