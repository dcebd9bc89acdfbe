"""`ka-exporter analyze`: replay a capture through the live core and tell its story.

Replay uses the same decoder and model as live capture, with packet timestamps as time, so a
capture taken during an incident shows exactly what the exporter would have said. Each
interface of a pcapng file is a segment of its own, and so is each VLAN whose tags the frames
carry (a trunk or mirror-port capture).
"""

from __future__ import annotations

import json
import os
import time as clock
from collections import Counter
from dataclasses import dataclass
from typing import BinaryIO, TextIO

from ka_exporter import pcap
from ka_exporter.model import (
    CarpView,
    Event,
    EventType,
    Model,
    ModelConfig,
    Router,
    Segment,
    VridView,
)

CAPTURE = "capture"  # segment name when the file does not name its interface (capture1, ...)


@dataclass(frozen=True, slots=True)
class Analysis:
    packets: int
    start: float
    end: float
    vrids: list[VridView]
    events: list[Event]
    rejects: dict[str, int]
    untracked: int
    carp: list[CarpView]


def replay(stream: BinaryIO, config: ModelConfig | None = None) -> Analysis:
    model = Model(config)
    packets, start, end = 0, 0.0, 0.0
    events: list[Event] = []
    for packet in pcap.read(stream):
        if packets == 0:
            start = packet.time
        packets += 1
        end = max(end, packet.time)
        name = packet.interface or f"{CAPTURE}{packet.interface_id or ''}"
        model.ingest(Segment(name), packet.time, packet.frame, packet.linktype)
        events += model.pop_events()
    vrids = model.snapshot(end)
    carp = model.carp_snapshot(end)
    carp.sort(key=lambda g: (g.key.segment, g.key.family, g.key.vrid))
    events += model.pop_events()
    events.sort(key=lambda e: e.time)
    rejects: Counter[str] = Counter()
    for (_, reason), count in model.rejects.items():
        rejects[reason.value] += count
    vrids.sort(key=lambda v: (v.key.segment, v.key.family, v.key.vrid))
    return Analysis(
        packets, start, end, vrids, events, dict(rejects), sum(model.untracked.values()), carp
    )


# --- JSON ------------------------------------------------------------------------------------


def _router_json(r: Router) -> dict[str, object]:
    return {
        "address": r.address,
        "priority": r.priority,
        "adverts": r.adverts,
        "advert_interval_seconds": r.interval,
        "version": r.version,
        "auth_type": r.auth_type,
        "auth_fingerprint": r.auth_fingerprint or None,
        "ah": r.ah,
        "checksum_variant": r.checksum.value,
        "vips": list(r.vips),
        "resignations": r.resignations,
        "first_seen": r.first_seen,
        "last_seen": r.last_seen,
    }


def _segment_json(segment: Segment) -> dict[str, object]:
    return {
        "interface": segment.interface,
        **({"netns": segment.netns} if segment.netns else {}),
        **({"vlan": segment.vlan} if segment.vlan else {}),
    }


def _event_json(e: Event, start: float) -> dict[str, object]:
    return {
        "time": e.time,
        "offset": round(e.time - start, 6),
        "type": e.type.value,
        **_segment_json(e.key.segment),
        "family": e.key.family,
        "vrid": e.key.vrid,
        "addresses": list(e.addresses),
        **e.detail,
    }


def to_json(a: Analysis) -> str:
    doc = {
        "packets": a.packets,
        "start": a.start,
        "end": a.end,
        "vrids": [
            {
                **_segment_json(v.key.segment),
                "family": v.key.family,
                "vrid": v.key.vrid,
                "masters": list(v.masters),
                "split_brain": v.split_brain,
                "split_brain_events": v.split_brain_events,
                "master_transitions": v.transitions,
                "config_mismatch": sorted(v.mismatches),
                "carp_collision": v.carp_collision,
                "routers": [_router_json(r) for r in v.routers],
            }
            for v in a.vrids
        ],
        "carp": [
            {
                **_segment_json(g.key.segment),
                "family": g.key.family,
                "vhid": g.key.vrid,
                "masters": list(g.masters),
                "speakers": [
                    {
                        "address": s.address,
                        "advbase": s.advbase,
                        "advskew": s.advskew,
                        "demote": s.demote,
                        "adverts": s.adverts,
                        "first_seen": s.first_seen,
                        "last_seen": s.last_seen,
                    }
                    for s in g.speakers
                ],
            }
            for g in a.carp
        ],
        "events": [_event_json(e, a.start) for e in a.events],
        "rejects": a.rejects,
        "untracked_adverts": a.untracked,
    }
    return json.dumps(doc, indent=2)


# --- table -----------------------------------------------------------------------------------

_RED, _YELLOW, _GREEN, _CYAN, _DIM, _BOLD = "31", "33", "32", "36", "2", "1"
_EVENT_COLOUR = {
    EventType.SPLIT_BRAIN_START: _RED,
    EventType.MASTER_LOST: _RED,
    EventType.CONFIG_MISMATCH_START: _YELLOW,
    EventType.MASTER_CHANGED: _YELLOW,
    EventType.MASTER_RESIGNED: _CYAN,
    EventType.PRIORITY_CHANGED: _CYAN,
    EventType.SPLIT_BRAIN_END: _GREEN,
    EventType.CONFIG_MISMATCH_END: _GREEN,
    EventType.MASTER_ELECTED: _GREEN,
    EventType.ROUTER_APPEARED: _DIM,
    EventType.ROUTER_SILENT: _DIM,
    EventType.COLLISION_START: _RED,
    EventType.COLLISION_END: _GREEN,
}
_AUTH = {0: "none", 1: "PASS", 2: "AH"}


def use_colour(out: TextIO) -> bool:
    return out.isatty() and "NO_COLOR" not in os.environ


def to_table(a: Analysis, colour: bool = False, name: str = "") -> str:
    def paint(text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if colour else text

    rejected = sum(a.rejects.values())
    lines = [
        paint(f"{name or 'capture'}: ", _BOLD)
        + f"{a.packets} packets, {rejected} rejected"
        + (f" ({', '.join(f'{k} {v}' for k, v in sorted(a.rejects.items()))})" if rejected else "")
        + f", {a.end - a.start:.1f} s from {_wall(a.start)}"
        + (
            paint(f", {a.untracked} adverts from untracked routers", _YELLOW) if a.untracked else ""
        ),
        "",
    ]
    for v in a.vrids:
        if v.split_brain:
            state = paint("SPLIT-BRAIN " + " + ".join(v.masters), _RED)
        elif v.masters:
            state = paint("master " + v.masters[0], _GREEN)
        else:
            state = paint("no master", _YELLOW)
        flags = [f"{v.transitions} transitions", f"{v.split_brain_events} split-brain episodes"]
        flags += [paint(f"{m} mismatch", _YELLOW) for m in sorted(v.mismatches)]
        if v.carp_collision:
            flags.append(paint(f"CARP vhid {v.key.vrid} on the same segment", _RED))
        head = f"{v.key.family} VRID {v.key.vrid} on {_where(v.key.segment)}"
        lines.append(paint(head, _BOLD) + f"  {state}  " + ", ".join(flags))
        for r in sorted(v.routers, key=lambda r: -r.priority):
            auth = _AUTH.get(r.auth_type, str(r.auth_type))
            lines.append(
                f"  {r.address:<28} prio {r.priority:>3}  {r.adverts:>6} adverts  "
                f"every {r.interval:g} s  v{r.version}  auth {auth}  "
                f"checksum {r.checksum.value}  VIPs {' '.join(r.vips) or '-'}"
            )
        lines.append("")
    for g in a.carp:
        head = f"{g.key.family} CARP vhid {g.key.vrid} on {_where(g.key.segment)}"
        state = paint("master " + g.masters[0], _GREEN) if g.masters else "no master heard"
        lines.append(paint(head, _BOLD) + f"  {state}")
        for s in sorted(g.speakers, key=lambda s: s.advskew):
            lines.append(
                f"  {s.address:<28} advbase {s.advbase} advskew {s.advskew:>3}  "
                f"demote {s.demote}  {s.adverts:>6} adverts"
            )
        lines.append("")
    lines.append(paint("timeline", _BOLD))
    for e in a.events:
        text = f"{e.type.value:<22} {' '.join(e.addresses)}"
        detail = " ".join(f"{k}={_fmt(k, val, a.start)}" for k, val in e.detail.items())
        vlan = f" VLAN {e.key.segment.vlan}" if e.key.segment.vlan else ""
        lines.append(
            f"  {e.time - a.start:>+10.3f}s  {e.key.family}{vlan} VRID {e.key.vrid:<3} "
            + paint(text, _EVENT_COLOUR[e.type])
            + (f"  {detail}" if detail else "")
        )
    return "\n".join(lines) + "\n"


def _where(segment: Segment) -> str:
    return segment.interface + (f" VLAN {segment.vlan}" if segment.vlan else "")


def _fmt(key: str, value: str | int | float, start: float) -> str:
    return f"{value - start:+.3f}s" if key == "since" and isinstance(value, float) else str(value)


def _wall(t: float) -> str:
    return clock.strftime("%Y-%m-%d %H:%M:%S UTC", clock.gmtime(t))
