"""`ka-exporter analyze`: replay a capture through the live core and tell its story.

Replay uses the same decoder and model as live capture, with packet timestamps as time, so a
capture taken during an incident shows exactly what the exporter would have said. Each
interface of a pcapng file is a segment of its own, and so is each VLAN whose tags the frames
carry (a trunk or mirror-port capture). The events fold into the status page's history, so the
HTML report draws the same timeline strips, over the whole capture.
"""

from __future__ import annotations

import html
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import BinaryIO, TextIO

from ka_exporter import pcap
from ka_exporter.history import History, Span, moments
from ka_exporter.model import (
    INFINITY,
    CarpView,
    ClaimView,
    Event,
    EventType,
    Model,
    ModelConfig,
    Router,
    Segment,
    VridKey,
    VridView,
)
from ka_exporter.page import stamp, wall
from ka_exporter.status import (
    LEGEND,
    STRIP_DEFS,
    STRIP_STYLE,
    STYLE,
    Names,
    colours,
    event_parts,
    events_table,
    keys,
    strip,
    vrid_name,
)

CAPTURE = "capture"  # segment name when the file does not name its interface (capture1, ...)
REPORT_STRIP = 480  # px: the report has room for a wider timeline than the status page
MAX_SPANS = 10_000  # per VRID: a capture of hours of flapping still ends in bounded memory


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
    history: History
    claims: list[ClaimView]


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
        model.advance(packet.time)  # what the live tick does: time passes between frames too
        model.ingest(Segment(name), packet.time, packet.frame, packet.linktype)
        events += model.pop_events()
    vrids = model.snapshot(end)
    carp = model.carp_snapshot(end)
    carp.sort(key=lambda g: (g.key.segment, g.key.family, g.key.vrid))
    claims = sorted(model.claims_snapshot(end), key=lambda c: c.key)
    events += model.pop_events()
    events.sort(key=lambda e: e.time)
    rejects: Counter[str] = Counter()
    for (_, reason), count in model.rejects.items():
        rejects[reason.value] += count
    vrids.sort(key=lambda v: (v.key.segment, v.key.family, v.key.vrid))
    history = History(window=INFINITY, max_spans=MAX_SPANS)
    history.feed(events, end)
    return Analysis(
        packets,
        start,
        end,
        vrids,
        events,
        dict(rejects),
        sum(model.untracked.values()),
        carp,
        history,
        claims,
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


def _event_json(e: Event, start: float, moment: int) -> dict[str, object]:
    return {
        "time": e.time,
        "offset": round(e.time - start, 6),
        "moment": moment,
        "type": e.type.value,
        **_segment_json(e.key.segment),
        "family": e.key.family,
        "vrid": e.key.vrid,
        "addresses": list(e.addresses),
        **e.detail,
    }


def _span_json(s: Span) -> dict[str, object]:
    return {
        "kind": s.kind.value,
        "start": s.start,
        "end": s.end,
        "addresses": list(s.addresses),
        **({"reason": s.reason} if s.reason else {}),
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
                "timeline": [_span_json(s) for s in a.history.track(v.key).spans],
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
        "vip_claims": [
            {
                **_segment_json(c.key.segment),
                "family": c.key.family,
                "vip": c.key.address,
                "vrid": c.vrid or None,
                "last_mac": c.last_mac,
                "conflict": c.conflict_since is not None,
                "conflicts": c.conflicts,
                "macs": [
                    {"mac": m.mac, "first": m.first, "last": m.last, "count": m.count}
                    for m in c.macs
                ],
            }
            for c in a.claims
        ],
        "events": [
            _event_json(e, a.start, i) for i, moment in enumerate(moments(a.events)) for e in moment
        ],
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
    EventType.VIP_CONFLICT_START: _RED,
    EventType.VIP_CONFLICT_END: _GREEN,
    EventType.ANNOUNCE_MISSING: _YELLOW,
}
_AUTH = {0: "none", 1: "PASS", 2: "AH"}


def use_colour(out: TextIO) -> bool:
    return out.isatty() and "NO_COLOR" not in os.environ


def to_table(
    a: Analysis,
    colour: bool = False,
    name: str = "",
    relative: bool = False,
    names: Names | None = None,
) -> str:
    def paint(text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if colour else text

    names = names or Names()

    rejected = sum(a.rejects.values())
    lines = [
        paint(f"{name or 'capture'}: ", _BOLD)
        + f"{a.packets} packets, {rejected} rejected"
        + (f" ({', '.join(f'{k} {v}' for k, v in sorted(a.rejects.items()))})" if rejected else "")
        + f", {a.end - a.start:.1f} s from {stamp(a.start)}"
        + (
            paint(f", {a.untracked} adverts from untracked routers", _YELLOW) if a.untracked else ""
        ),
        "",
    ]
    for v in a.vrids:
        state = paint(_state(v, names), _RED if v.split_brain else _GREEN if v.masters else _YELLOW)
        flags = [f"{v.transitions} transitions", f"{v.split_brain_events} split-brain episodes"]
        flags += [paint(f"{m} mismatch", _YELLOW) for m in sorted(v.mismatches)]
        if v.carp_collision:
            flags.append(paint(f"CARP vhid {v.key.vrid} on the same segment", _RED))
        head = f"{v.key.family} VRID {v.key.vrid} on {_where(v.key.segment)}"
        lines.append(paint(head, _BOLD) + f"  {state}  " + ", ".join(flags))
        for r in sorted(v.routers, key=lambda r: -r.priority):
            auth = _AUTH.get(r.auth_type, str(r.auth_type))
            lines.append(
                f"  {names.text(r.address):<28} prio {r.priority:>3}  {r.adverts:>6} adverts  "
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
    for c in a.claims:
        head = f"{c.key.family} {c.key.address} on {_where(c.key.segment)}"
        vrid = f" (VRID {c.vrid})" if c.vrid else ""
        state = paint(f"{c.conflicts} conflicts", _RED) if c.conflicts else paint("one MAC", _GREEN)
        lines.append(paint(head + vrid, _BOLD) + f"  {state}  announced last by {c.last_mac}")
        for m in sorted(c.macs, key=lambda m: m.first):
            lines.append(f"  {m.mac:<28} {m.count:>6} announcements")
        lines.append("")
    when = _clock(a.start, relative)
    lines.append(paint("timeline", _BOLD))
    for moment in moments(a.events):
        vrids = sorted({e.key.vrid for e in moment})
        if len(vrids) > 1:  # one cause, many VRIDs: one block
            spread = (moment[-1].time - moment[0].time) * 1000
            within = f"within {spread:.0f} ms" if spread >= 1 else "at once"
            on = " ".join(map(str, vrids))
            lines.append(
                f"  {when(moment[0].time)}  "
                + paint(f"{len(moment)} events {within} on VRIDs {on}", _BOLD)
            )
        for e in moment:
            after = f"+{(e.time - moment[0].time) * 1000:.0f} ms"  # into the block
            stamp_ = f"{after:>12}" if len(vrids) > 1 else when(e.time)
            routers, detail = event_parts(e, names, when)
            vlan = f" VLAN {e.key.segment.vlan}" if e.key.segment.vlan else ""
            lines.append(
                f"  {stamp_}  {e.key.family}{vlan} VRID {e.key.vrid:<3} "
                + paint(f"{e.type.value:<22} {routers}", _EVENT_COLOUR.get(e.type, _DIM))
                + (f"  {detail}" if detail else "")
            )
    return "\n".join(lines) + "\n"


def _clock(start: float, relative: bool) -> Callable[[float], str]:
    """Event times as the table shows them: UTC time of day, or seconds since the first frame."""
    if relative:
        return lambda t: f"{t - start:>+11.3f}s"
    return partial(wall, ms=True)


def _where(segment: Segment) -> str:
    return segment.interface + (f" VLAN {segment.vlan}" if segment.vlan else "")


# --- HTML ------------------------------------------------------------------------------------


def _state(v: VridView, names: Names) -> str:
    if v.split_brain:
        return "SPLIT-BRAIN " + " + ".join(map(names.text, v.masters))
    return f"master {names.text(v.masters[0])}" if v.masters else "no master"


def to_html(a: Analysis, name: str = "", relative: bool = False, names: Names | None = None) -> str:
    """A postmortem's attachment: one self-contained page (inline CSS and SVG, no scripts or
    external assets) with a timeline strip per VRID over the whole capture and every event."""
    names, esc = names or Names(), html.escape
    longest: dict[VridKey, float] = {}
    for ev in a.events:
        if "gap_seconds" in ev.detail:
            longest[ev.key] = max(float(ev.detail["gap_seconds"]), longest.get(ev.key, 0.0))
    routers = {
        v.key: {
            *(r.address for r in v.routers),
            *(x for s in a.history.track(v.key).spans for x in s.addresses),
        }
        for v in a.vrids
    }
    hues = colours({x for found in routers.values() for x in found}, names)
    rows = []
    for v in a.vrids:
        track = a.history.track(v.key)
        longest_gap = longest.get(v.key)
        reasons = ", ".join(f"{k} {n}" for k, n in sorted(v.reasons.items())) or "none"
        cells = [
            esc(vrid_name(v.key)),
            esc(_state(v, names)),
            f"{v.transitions} transitions, {v.split_brain_events} split-brain<br>"
            f'<span class="muted">{esc(reasons)}</span>',
            '<span class="muted">none</span>' if longest_gap is None else f"{longest_gap:.3f} s",
            strip(vrid_name(v.key), track.spans, a.start, a.end, hues, names, REPORT_STRIP)
            + keys({x: hues[x] for x in routers[v.key]}, names),
        ]
        css = "row-bad" if v.split_brain or not v.masters else ""
        rows.append(f'<tr class="{css}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    span = f"Timeline, {wall(a.start)} to {wall(a.end)}"
    head = "".join(
        f"<th>{h}</th>" for h in ("VRID", "At the end", "Changes (by reason)", "Longest gap", span)
    )
    when = _clock(a.start, relative)
    rejected = sum(a.rejects.values())
    title = f"{name or 'capture'}: VRRP from {stamp(a.start)}"
    times = "since the first frame" if relative else "UTC"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{STYLE}{STRIP_STYLE}</style></head>
<body>{STRIP_DEFS}<h1>{esc(title)}</h1>
<div class="sub">{a.packets} packets, {rejected} rejected, {a.end - a.start:.1f} s, from
{esc(stamp(a.start))} to {esc(stamp(a.end))}; times {times} ·
replayed by ka-exporter analyze</div>
{LEGEND}
<table id="vrids"><thead><tr>{head}</tr></thead><tbody>
{"".join(rows)}
</tbody></table>
<h2>Events</h2>
{events_table(moments(a.events), names, when, "Time" if relative else "Time (UTC)")}
</body></html>
"""
