"""The status page: one row per segment and VRID, problems first, readable at a glance.

Pure rendering of a snapshot and of the history (ka_exporter.history): no I/O, every value
escaped, and nothing of an advert's authentication beyond its type. The present answers "what
is wrong", the history "since when, and what happened before": the banner's start times, a
timeline strip per VRID, the recent events. CARP neighbours get a table of their own: they are
not VRRP routers, but one whose vhid is a VRID on the segment is a problem of that VRID. The
strip and the event table are shared with analyze's HTML report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from ka_exporter.history import (
    COLLISION,
    HELD_WRONGLY,
    NO_MASTER,
    SPLIT_BRAIN,
    VIP_CONFLICT,
    Departure,
    History,
    Kind,
    Span,
    Track,
    moments,
)
from ka_exporter.model import (
    CarpView,
    ClaimView,
    Event,
    EventType,
    Router,
    Segment,
    VridKey,
    VridView,
)
from ka_exporter.ownership import Ownership, ownership
from ka_exporter.page import COLLISION_HELP, ago, badge, esc, stamp, wall, where
from ka_exporter.status_segment import carp_table, claims_table

REFRESH_SECONDS = 5
_AUTH = {0: "none", 1: "PASS", 2: "AH"}
CONFIRMING_HELP = (
    "Two routers advertise as master. It is split-brain once they overlap for the debounce "
    "(--vrrp.split-brain-debounce intervals); a backup taking over from a live master shows "
    "this only for an advert or two."
)
BANNER_ITEMS = 12  # problems named in the banner; the table has the rest

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d1d1f;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .2em} .sub{color:#666;margin-bottom:1em}
.summary{padding:.6em 1em;border-radius:6px;margin-bottom:.6em;font-weight:600}
#problems{margin:.3em 0 0;padding-left:1.2em;font-weight:500}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:.45em .6em;border-bottom:1px solid #e3e3e3;text-align:left;vertical-align:top}
th{background:#f0f0f0;font-weight:600} code{font-size:.95em} h2{font-size:1.1em;margin:1.5em 0 .2em}
.badge{display:inline-block;padding:.1em .5em;border-radius:4px;font-weight:700;font-size:.85em}
.ok{background:#dff5e1;color:#11632a} .bad{background:#fde2e1;color:#a11a12}
.warn{background:#fff3cd;color:#7a5800} .muted{color:#888}
tr.row-bad td{background:#fff5f5} tr.row-warn td{background:#fffcf0}
"""


def vrid_name(key: VridKey) -> str:
    """`VRID 51 (eth0 VLAN 100)`: the VRID as the banner and the report name it, in text."""
    family = "IPv6 " if key.family == "ipv6" else ""
    where = (f"{key.segment.netns}/" if key.segment.netns else "") + key.segment.interface
    vlan = f" VLAN {key.segment.vlan}" if key.segment.vlan else ""
    return f"{family}VRID {key.vrid} ({where}{vlan})"


class Names:
    """Operator-given names of router addresses (`--vrrp.peer-name ADDRESS=NAME`)."""

    def __init__(self, names: Mapping[str, str] | None = None) -> None:
        self.names = dict(names or {})

    def text(self, address: str) -> str:
        name = self.names.get(address)
        return f"{name} ({address})" if name else address

    def html(self, address: str) -> str:
        name = self.names.get(address)
        code = f"<code>{esc(address)}</code>"
        return f"<b>{esc(name)}</b> {code}" if name else code


# --- the timeline strip, shared with analyze's HTML report ------------------------------------

STRIP_WIDTH, STRIP_HEIGHT = 240, 16
PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#bcbd22", "#e377c2")
NO_MASTER_FILL, UNKNOWN_FILL = "#d62728", "#e6e6e6"
SAID = 6  # spans a strip's aria-label tells in words (each has its own tooltip)
# Defined once per page: the split-brain hatch every strip refers to.
STRIP_DEFS = (
    '<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>'
    '<pattern id="ka-split" width="6" height="6" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(45)"><rect width="6" height="6" fill="#7a0000"/>'
    '<rect width="3" height="6" fill="#ff9896"/></pattern></defs></svg>'
)
STRIP_STYLE = """
.strip{display:block} .legend{font-size:.8em;color:#555} .key{white-space:nowrap;margin-right:.6em}
.legend i{display:inline-block;width:.8em;height:.8em;margin:0 .25em 0 .6em;
vertical-align:-.05em;border-radius:2px} .legend i:first-child,.key i{margin-left:0}
i.split{background:repeating-linear-gradient(45deg,#7a0000 0 2px,#ff9896 2px 4px)}
.gone{color:#888} .gone code{text-decoration:line-through} tbody.moment{border-top:2px solid #ccc}
"""


def colours(addresses: Iterable[str], names: Names) -> dict[str, str]:
    """A colour per router, the same in every strip of the page and kept on refresh (in order
    of name, then address); addresses given one name (a node's IPv4 and IPv6) share it."""
    found, named = set(addresses), names.names
    order = sorted({(a not in named, named.get(a, a)) for a in found})
    return {
        a: PALETTE[order.index((a not in named, named.get(a, a))) % len(PALETTE)]
        for a in sorted(found)
    }


def _duration(seconds: float) -> str:
    if seconds == 3600:
        return "hour"
    if seconds < 10:
        return f"{seconds:.3f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def span_text(span: Span, until: float, names: Names) -> str:
    """What a span of the strip says in words: its tooltip and its part of the aria-label."""
    end = span.until(until)
    when = f"{wall(span.start)} to {wall(end) if span.end is not None else 'now'}"
    if span.kind is Kind.MASTER:
        what = f"master {names.text(span.addresses[0])}"
    elif span.kind is Kind.SPLIT:
        what = "split-brain: " + " + ".join(map(names.text, span.addresses))
    else:
        what = "no master" + (f" ({span.reason})" if span.reason else "")
    return f"{what}, {when} ({_duration(end - span.start)})"


def strip(
    title: str, spans: Sequence[Span], start: float, end: float, hues: Mapping[str, str],
    names: Names, width: int = STRIP_WIDTH,
) -> str:  # fmt: skip
    """An inline SVG of [start, end]: masters in their colours, no master red, split-brain
    hatched, grey while unknown. A short gap or split still gets 2 px, to be seen at all."""
    scale = width / max(end - start, 1e-9)
    rects, said = [], []
    for span in spans:
        a, b = max(span.start, start), min(span.until(end), end)
        if b < a:
            continue
        wide = (b - a) * scale
        if span.kind is Kind.MASTER:
            fill = hues.get(span.addresses[0], PALETTE[0])
        else:
            wide = max(wide, 2.0)
            fill = "url(#ka-split)" if span.kind is Kind.SPLIT else NO_MASTER_FILL
        text = span_text(span, end, names)
        said.append(text)
        x = min((a - start) * scale, width - wide)
        rects.append(
            f'<rect class="span {span.kind}" x="{x:.2f}" width="{wide:.2f}" '
            f'height="{STRIP_HEIGHT}" fill="{fill}" data-start="{span.start:.3f}" '
            f'data-end="{span.until(end):.3f}">'
            f"<title>{esc(text)}</title></rect>"
        )
    earlier = f"{len(said) - SAID} earlier spans, then " if len(said) > SAID else ""
    told = earlier + ("; ".join(said[-SAID:]) or "nothing heard")
    label = f"{title}, {wall(start)} to {wall(end)}: {told}"
    return (
        f'<svg class="strip" role="img" aria-label="{esc(label)}" width="{width}" '
        f'height="{STRIP_HEIGHT}" viewBox="0 0 {width} {STRIP_HEIGHT}">'
        f"<title>{esc(title)}</title>"
        f'<rect class="unknown" width="{width}" height="{STRIP_HEIGHT}" '
        f'fill="{UNKNOWN_FILL}"/>' + "".join(rects) + "</svg>"
    )


def keys(hues: Mapping[str, str], names: Names) -> str:
    """The strip's colour key: which router each colour is."""
    return (
        '<div class="keys legend">'
        + "".join(
            f'<span class="key"><i style="background:{c}"></i>{esc(names.text(a))}</span>'
            for a, c in sorted(hues.items(), key=lambda item: names.text(item[0]))
        )
        + "</div>"
    )


LEGEND = (
    '<div class="legend"><i style="background:#e6e6e6"></i>not heard'
    f'<i style="background:{NO_MASTER_FILL}"></i>no master (VIPs unattended)'
    '<i class="split"></i>split-brain; each master in its own colour</div>'
)


# --- events, shared with analyze -------------------------------------------------------------


_TOLD = frozenset(
    ("reason", "gap_seconds", "old_priority", "new_priority", "old", "new", "since", "field",
     "returning", "vip", "vips", "after_seconds")
)  # fmt: skip


def event_parts(e: Event, names: Names, when: Callable[[float], str]) -> tuple[str, str]:
    """(routers, detail) of an event in words: `old → new` for a change, then the reason,
    the failover gap and the priorities."""
    d = e.detail
    if e.type is EventType.MASTER_CHANGED:
        routers = f"{names.text(e.addresses[1])} → {names.text(e.addresses[0])}"
    else:
        routers = ", ".join(map(names.text, e.addresses))
    bits = [str(d["reason"])] if "reason" in d else []
    if "gap_seconds" in d:
        gap = float(d["gap_seconds"])
        bits.append(f"gap {gap:.3f} s" if gap else "no gap")
    if "old_priority" in d and "new_priority" in d:
        bits.append(f"priority {d['old_priority']} → {d['new_priority']}")
    elif "old_priority" in d:
        bits.append(f"last priority {d['old_priority']}")
    if "old" in d and "new" in d:
        bits.append(f"priority {d['old']} → {d['new']}")
    if "since" in d:
        bits.append(f"two masters since {when(float(d['since']))}")
    if "field" in d:
        bits.append(f"{d['field']}")
    if "returning" in d:
        bits.append("heard again")
    if "vip" in d or "vips" in d:
        bits.append(f"VIP {d.get('vip', d.get('vips'))}")
    if "after_seconds" in d:
        bits.append(f"announced after {float(d['after_seconds']):.3f} s")
    bits += [f"{k}={v}" for k, v in d.items() if k not in _TOLD]
    return routers, ", ".join(bits)


def events_table(
    moments: Sequence[Sequence[Event]],
    names: Names,
    when: Callable[[float], str],
    clock_label: str = "Time (UTC)",
) -> str:
    """The events, one tbody per moment: what happened at once across VRIDs reads as one."""
    bodies = []
    for moment in moments:
        rows = []
        for e in moment:
            routers, detail = event_parts(e, names, when)
            cells = (when(e.time), vrid_name(e.key), e.type.value, routers, detail)
            rows.append(
                f'<tr data-type="{e.type.value}">' + "".join(f"<td>{esc(c)}</td>" for c in cells)
                + "</tr>"
            )  # fmt: skip
        bodies.append(f'<tbody class="moment" data-size="{len(moment)}">' + "".join(rows))
    head = "".join(f"<th>{h}</th>" for h in (clock_label, "VRID", "Event", "Routers", "Detail"))
    return (
        f'<table id="events"><thead><tr>{head}</tr></thead>'
        + ("</tbody>".join(bodies) + "</tbody>" if bodies else "")
        + "</table>"
    )


# --- the VRID table ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Page:
    now: float
    names: Names
    history: History
    hues: Mapping[str, str]  # the routers' colours, page-wide
    down: Mapping[Segment, float | None]  # links down, since when (None: since before we knew)


def _problems(
    view: VridView, own: Ownership | None, since: Mapping[str, float], down: float | None
) -> list[tuple[str, str, str, float | None]]:
    """(severity, text, explanation, since) for each thing wrong with the VRID."""
    found: list[tuple[str, str, str, float | None]] = []
    if view.link_down:
        found.append(("warn", "LINK DOWN", "the interface is down: shown as last heard", down))
    if view.carp_collision:
        help_text = COLLISION_HELP.format(vrid=f"{view.key.vrid:02x}")
        found.append(("bad", COLLISION, help_text, since.get(COLLISION)))
    if view.split_brain:
        found.append(("bad", SPLIT_BRAIN, "", since.get(SPLIT_BRAIN)))
    elif len(view.masters) > 1:
        acting = [r.acting_since for r in view.routers if r.address in view.masters]
        text = f"{len(view.masters)} MASTERS, CONFIRMING…"
        found.append(("warn", text, CONFIRMING_HELP, max(acting, default=None)))
    if not view.masters and not view.link_down:
        found.append(("bad", NO_MASTER, "", since.get(NO_MASTER)))
    if own is not None:
        names = [HELD_WRONGLY[kind] for kind in own.wrongly]
        found += [("bad", name, "", since.get(name)) for name in names]
    found += [
        ("warn", f"{name} mismatch", "", since.get(f"{name} mismatch"))
        for name in sorted(view.mismatches)
    ]
    found += [("bad", name, "", t) for name, t in since.items() if name.startswith(VIP_CONFLICT)]
    return found


def _departure(r: Router, track: Track) -> Departure | None:
    """Why a router that is not master is no backup either, if it is not: it resigned, or fell
    silent without yielding to a better master (a backup never advertises, so silence says
    nothing of one that yielded)."""
    if r.address in track.gone:
        return track.gone[r.address]
    if r.priority == 0:
        return Departure(r.last_seen, "resigned")
    if r.silent and r.address not in track.yielded:
        return Departure(r.last_seen, "silent")
    return None


def _row(
    view: VridView, own: Ownership | None, local: frozenset[str], page: _Page
) -> tuple[int, str, list[tuple[str, str, float | None]]]:
    now, names = page.now, page.names
    track = page.history.track(view.key)
    problems = _problems(view, own, track.problems, page.down.get(view.key.segment.link))
    severity = 0 if any(p[0] == "bad" for p in problems) else 1 if problems else 2
    css = ("row-bad", "row-warn", "")[severity]
    badges = " ".join(badge(*p[:3]) for p in problems) or badge("ok", "OK")
    routers = {r.address: r for r in view.routers}
    changes: dict[str, list[str]] = {}
    for c in reversed(track.priorities):
        if len(changes.setdefault(c.address, [])) < 3:
            changes[c.address].append(f"{c.old} → {c.new} at {wall(c.time)}")

    def router(address: str) -> str:
        r = routers[address]
        here = " <b>(this host)</b>" if address in local else ""
        was = changes.get(address)
        history = f' <span class="muted prio">({esc("; ".join(was))})</span>' if was else ""
        return f"{names.html(address)} prio {r.priority}{here}{history}"

    masters = "<br>".join(router(a) for a in view.masters) or '<span class="muted">none</span>'

    quiet = sorted(
        (r for r in view.routers if r.address not in view.masters), key=lambda r: -r.priority
    )
    departed = {r.address: d for r in quiet if (d := _departure(r, track)) is not None}
    departed |= {a: d for a, d in track.gone.items() if a not in routers}  # forgotten since
    backups = [
        f"{router(r.address)} <span class='muted'>last {ago(r.last_seen, now)}</span>"
        for r in quiet
        if r.address not in departed
    ]
    backups += [
        f'<span class="gone">{names.html(a)} gone since '
        f'<span title="{stamp(d.time)}">{wall(d.time)}</span> ({esc(d.reason)})</span>'
        for a, d in sorted(departed.items(), key=lambda item: item[1].time)
    ]
    heard = "<br>".join(backups) or '<span class="muted">none heard</span>'
    vips = sorted({v for r in view.routers for v in r.vips})
    held = own.vips if own else {}
    vip_cells = "<br>".join(
        f"<code>{esc(v)}</code>" + (" <b>held here</b>" if held.get(v) else "") for v in vips
    )
    first = view.routers[0] if view.routers else None
    auth = _AUTH.get(first.auth_type, str(first.auth_type)) if first else ""
    detail = f"v{first.version}, every {first.interval:g} s, auth {auth}" if first else ""
    hues = {
        a: page.hues[a] for a in sorted({*routers, *(a for s in track.spans for a in s.addresses)})
    }
    timeline = strip(
        vrid_name(view.key), track.spans, now - page.history.window, now, hues, names
    ) + keys(hues, names)
    cells = [
        where(view.key.segment),
        esc(view.key.family),
        f"<b>{view.key.vrid}</b>",
        badges,
        masters,
        heard,
        vip_cells,
        esc(detail),
        f"{ago(view.last_transition, now)}<br><span class='muted'>{view.transitions} transitions, "
        f"{view.split_brain_events} split-brain</span>",
        timeline,
    ]
    row = f'<tr class="{css}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
    return severity, row, [(p[0], p[1], p[3]) for p in problems]


# (severity, problem, the VRID it is of, or what it is on when no VRID is heard, since)
Problem = tuple[str, str, VridKey | str, float | None]


def _banner(problems: list[Problem]) -> str:
    """Each problem by name, VRID and start: what the on-call reads first."""
    if not problems:
        return ""
    problems.sort(key=lambda p: (p[0] != "bad", p[3] is None, p[3] or 0.0, str(p[2])))
    items = [
        f'<li data-severity="{severity}">{esc(text)} on '
        + esc(key if isinstance(key, str) else vrid_name(key))
        + (f' since <span title="{stamp(since)}">{wall(since)}</span>' if since else "")
        + "</li>"
        for severity, text, key, since in problems[:BANNER_ITEMS]
    ]
    if len(problems) > BANNER_ITEMS:
        items.append(f"<li>and {len(problems) - BANNER_ITEMS} more, in the table</li>")
    return '<ul id="problems">' + "".join(items) + "</ul>"


def render(
    views: list[VridView],
    addresses: Mapping[str, frozenset[str]],
    now: float,
    host: str,
    version: str,
    telemetry_path: str,
    carp: list[CarpView] | None = None,
    links_down: Mapping[Segment, float | None] | None = None,
    history: History | None = None,
    names: Mapping[str, str] | None = None,
    claims: Sequence[ClaimView] = (),
    across_hosts: Sequence[tuple[str, float]] = (),
) -> str:
    """`claims`: the announced addresses that matter; `across_hosts`: split-brains the peers'
    pages show (what they are on, since when)."""
    history = history or History()
    heard = [r.address for v in views for r in v.routers]
    spans = [a for v in views for s in history.track(v.key).spans for a in s.addresses]
    links_down = links_down or {}
    page = _Page(now, Names(names), history, colours([*heard, *spans], Names(names)), links_down)
    rows: list[tuple[tuple[int, str], VridKey]] = []
    problems: list[Problem] = [("bad", "SPLIT-BRAIN ACROSS HOSTS", on, t) for on, t in across_hosts]
    problems += [
        ("bad", f"{VIP_CONFLICT} {c.key.address}", f"{c.key.segment.interface} (no VRID heard)",
         c.conflict_since)
        for c in claims
        if c.conflict_since is not None and not c.vrid
    ]  # fmt: skip
    for view in views:
        held = addresses.get(view.key.segment.netns)
        own = ownership(view, held) if held is not None else None
        severity, row, found = _row(view, own, held or frozenset(), page)
        rows.append(((severity, row), view.key))
        problems += [(sev, text, view.key, since) for sev, text, since in found]
    rows.sort(key=lambda item: (item[0][0], item[1]))
    bad = sum(1 for (severity, _), _ in rows if severity == 0)
    warn = sum(1 for (severity, _), _ in rows if severity == 1)
    if links_down:
        down = ", ".join(
            s.interface + (f" since {wall(t)}" if t is not None else "")
            for s, t in sorted(links_down.items())
        )
        kept = sum(1 for v in views if v.link_down)
        summary = ("warn", f"Link down: {down}; its {kept} VRIDs are held as last heard.")
    elif not rows and not problems:
        summary = ("warn", "No VRRP adverts heard yet.")
    elif bad or problems:
        needing = f"{bad} of {len(rows)} VRIDs need attention." if bad else ""
        beyond = "Two hosts claim one VRID." if across_hosts else "Two MACs answer for one VIP."
        summary = ("bad", needing or beyond)
    elif warn:
        summary = ("warn", f"{warn} of {len(rows)} VRIDs need a look.")
    else:
        summary = ("ok", f"All {len(rows)} VRIDs have exactly one master.")
    head = "".join(
        f"<th>{h}</th>"
        for h in ("Segment", "Family", "VRID", "State", "Master", "Backups / gone", "VIPs",
                  "Protocol", "Last transition", f"Last {_duration(page.history.window)}")
    )  # fmt: skip
    body = "\n".join(row for (_, row), _ in rows)
    collisions = {tuple(v.key) for v in views if v.carp_collision}
    carp_html = carp_table(carp or [], now, collisions) + claims_table(list(claims), now)
    recent = list(page.history.recent)
    stamped = partial(wall, ms=True)
    events = events_table(moments(recent)[::-1], page.names, stamped) if recent else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>ka-exporter on {esc(host)}</title><style>{STYLE}{STRIP_STYLE}</style></head>
<body>{STRIP_DEFS}<h1>ka-exporter on {esc(host)}</h1>
<div class="sub">VRRP as seen on the wire · times UTC, now {wall(now)} · refreshes every
{REFRESH_SECONDS} s · <a href="{esc(telemetry_path)}">metrics</a> · version {esc(version)}</div>
<div class="summary {summary[0]}" id="summary">{esc(summary[1])}{_banner(problems)}</div>
{LEGEND}
<table id="vrids"><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table>
{"<h2>Recent events</h2>" + events if events else ""}
{carp_html}</body></html>
"""
