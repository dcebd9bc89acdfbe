"""The status page: one row per segment and VRID, problems first, readable at a glance.

Pure rendering of a snapshot: no I/O, every value escaped, and nothing of an advert's
authentication beyond its type. CARP neighbours get a table of their own: they are not VRRP
routers, but one whose vhid is a VRID on the segment is a problem of that VRID.
"""

from __future__ import annotations

import html
import time as clock
from collections.abc import Collection, Mapping

from ka_exporter.model import CarpView, Segment, VridView
from ka_exporter.ownership import Ownership, ownership

REFRESH_SECONDS = 5
_AUTH = {0: "none", 1: "PASS", 2: "AH"}
COLLISION_HELP = (
    "A CARP group uses this VRID as its vhid on the same segment. keepalived reads its adverts "
    "as malformed VRRP and restarts its own advert timer on each: when CARP advertises more "
    "often, the master goes quiet and the backup takes over again and again. carp(4) also "
    "claims the same virtual MAC, 00:00:5e:00:01:{vrid}. Give one of them another ID."
)

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d1d1f;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .2em} .sub{color:#666;margin-bottom:1em}
.summary{padding:.6em 1em;border-radius:6px;margin-bottom:1em;font-weight:600}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:.45em .6em;border-bottom:1px solid #e3e3e3;text-align:left;vertical-align:top}
th{background:#f0f0f0;font-weight:600} code{font-size:.95em} h2{font-size:1.1em;margin:1.5em 0 .2em}
.badge{display:inline-block;padding:.1em .5em;border-radius:4px;font-weight:700;font-size:.85em}
.ok{background:#dff5e1;color:#11632a} .bad{background:#fde2e1;color:#a11a12}
.warn{background:#fff3cd;color:#7a5800} .muted{color:#888}
tr.row-bad td{background:#fff5f5} tr.row-warn td{background:#fffcf0}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _ago(t: float | None, now: float) -> str:
    if t is None:
        return '<span class="muted">none yet</span>'
    seconds = max(0, int(now - t))
    text = (
        f"{seconds} s"
        if seconds < 120
        else f"{seconds // 60} min"
        if seconds < 7200
        else f"{seconds // 3600} h"
    )
    stamp = clock.strftime("%Y-%m-%d %H:%M:%S UTC", clock.gmtime(t))
    return f'<span title="{stamp}">{text} ago</span>'


def _where(segment: Segment) -> str:
    out = _e(segment.interface)
    if segment.vlan:
        out += f" <b>VLAN {_e(segment.vlan)}</b>"
    if segment.netns:
        out += f' <span class="muted">netns {_e(segment.netns)}</span>'
    return out


def _badge(severity: str, text: str, title: str = "") -> str:
    hint = f' title="{_e(title)}"' if title else ""
    return f'<span class="badge {severity}"{hint}>{_e(text)}</span>'


def _problems(view: VridView, own: Ownership | None) -> list[tuple[str, str, str]]:
    """(severity, text, explanation) for each thing wrong with the VRID."""
    found = []
    if view.link_down:
        found.append(("warn", "LINK DOWN", "the interface is down: shown as last heard"))
    if view.carp_collision:
        found.append(("bad", "CARP COLLISION", COLLISION_HELP.format(vrid=f"{view.key.vrid:02x}")))
    if view.split_brain:
        found.append(("bad", "SPLIT-BRAIN", ""))
    if not view.masters and not view.link_down:
        found.append(("bad", "NO MASTER", ""))
    if own is not None and own.duplicate:
        found.append(("bad", "DUPLICATE VIP", ""))
    if own is not None and own.orphan:
        found.append(("bad", "ORPHAN VIP", ""))
    found += [("warn", f"{name} mismatch", "") for name in sorted(view.mismatches)]
    return found


def _row(
    view: VridView, own: Ownership | None, local: frozenset[str], now: float
) -> tuple[int, str]:
    problems = _problems(view, own)
    severity = 0 if any(s == "bad" for s, _, _ in problems) else 1 if problems else 2
    css = ("row-bad", "row-warn", "")[severity]
    badges = " ".join(_badge(*problem) for problem in problems) or _badge("ok", "OK")
    routers = {r.address: r for r in view.routers}

    def router(address: str) -> str:
        r = routers[address]
        here = " <b>(this host)</b>" if address in local else ""
        return f"<code>{_e(address)}</code> prio {r.priority}{here}"

    masters = "<br>".join(router(a) for a in view.masters) or '<span class="muted">none</span>'
    backups = [r for r in view.routers if r.address not in view.masters]
    heard = (
        "<br>".join(
            f"{router(r.address)} <span class='muted'>last {_ago(r.last_seen, now)}</span>"
            for r in sorted(backups, key=lambda r: -r.priority)
        )
        or '<span class="muted">none heard</span>'
    )
    vips = sorted({v for r in view.routers for v in r.vips})
    held = own.vips if own else {}
    vip_cells = "<br>".join(
        f"<code>{_e(v)}</code>" + (" <b>held here</b>" if held.get(v) else "") for v in vips
    )
    first = view.routers[0] if view.routers else None
    auth = _AUTH.get(first.auth_type, str(first.auth_type)) if first else ""
    detail = f"v{first.version}, every {first.interval:g} s, auth {auth}" if first else ""
    cells = [
        _where(view.key.segment),
        _e(view.key.family),
        f"<b>{view.key.vrid}</b>",
        badges,
        masters,
        heard,
        vip_cells,
        _e(detail),
        f"{_ago(view.last_transition, now)}<br><span class='muted'>{view.transitions} transitions, "
        f"{view.split_brain_events} split-brain</span>",
    ]
    return severity, f'<tr class="{css}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _carp_table(groups: list[CarpView], now: float, collisions: set[tuple[object, ...]]) -> str:
    if not groups:
        return ""
    rows = []
    for g in sorted(groups, key=lambda g: g.key):
        colliding = tuple(g.key) in collisions
        state = (
            _badge("bad", "CARP COLLISION", COLLISION_HELP.format(vrid=f"{g.key.vrid:02x}"))
            if colliding
            else _badge("warn", "LINK DOWN")
            if g.link_down
            else _badge("ok", "master")
            if len(g.masters) == 1
            else _badge("bad", f"{len(g.masters)} masters")
            if g.masters
            else _badge("warn", "no master heard")
        )
        speakers = "<br>".join(
            f"<code>{_e(s.address)}</code> advbase {s.advbase} advskew {s.advskew}"
            + (f" demote {s.demote}" if s.demote else "")
            + (" <b>master</b>" if s.address in g.masters else "")
            + f" <span class='muted'>last {_ago(s.last_seen, now)}</span>"
            for s in sorted(g.speakers, key=lambda s: s.advskew)
        )
        cells = [_where(g.key.segment), _e(g.key.family), f"<b>{g.key.vrid}</b>", state, speakers]
        css = ' class="row-bad"' if colliding else ""
        rows.append(f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("Segment", "Family", "vhid", "State", "Speakers"))
    return (
        "<h2>CARP neighbours</h2>"
        '<div class="sub">CARP (carp(4), pfSense, OPNsense, ucarp) shares VRRP\'s protocol '
        "number and virtual MACs; it is not VRRP and never counted as such.</div>"
        f'<table id="carp"><thead><tr>{head}</tr></thead><tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table>"
    )


def render(
    views: list[VridView],
    addresses: Mapping[str, frozenset[str]],
    now: float,
    host: str,
    version: str,
    telemetry_path: str,
    carp: list[CarpView] | None = None,
    links_down: Collection[Segment] = (),
) -> str:
    rows = []
    for view in views:
        held = addresses.get(view.key.segment.netns)
        own = ownership(view, held) if held is not None else None
        rows.append((_row(view, own, held or frozenset(), now), view.key))
    rows.sort(key=lambda item: (item[0][0], item[1]))
    bad = sum(1 for (severity, _), _ in rows if severity == 0)
    warn = sum(1 for (severity, _), _ in rows if severity == 1)
    if links_down:
        down = ", ".join(sorted(s.interface for s in links_down))
        kept = sum(1 for v in views if v.link_down)
        summary = ("warn", f"Link down: {down}; its {kept} VRIDs are held as last heard.")
    elif not rows:
        summary = ("warn", "No VRRP adverts heard yet.")
    elif bad:
        summary = ("bad", f"{bad} of {len(rows)} VRIDs need attention.")
    elif warn:
        summary = ("warn", f"{warn} of {len(rows)} VRIDs have configuration mismatches.")
    else:
        summary = ("ok", f"All {len(rows)} VRIDs have exactly one master.")
    head = "".join(
        f"<th>{h}</th>"
        for h in ("Segment", "Family", "VRID", "State", "Master", "Backups heard", "VIPs",
                  "Protocol", "Last transition")
    )  # fmt: skip
    body = "\n".join(row for (_, row), _ in rows)
    collisions = {tuple(v.key) for v in views if v.carp_collision}
    carp_html = _carp_table(carp or [], now, collisions)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>ka-exporter on {_e(host)}</title><style>{_STYLE}</style></head>
<body><h1>ka-exporter on {_e(host)}</h1>
<div class="sub">VRRP as seen on the wire · refreshes every {REFRESH_SECONDS} s ·
<a href="{_e(telemetry_path)}">metrics</a> · version {_e(version)}</div>
<div class="summary {summary[0]}" id="summary">{_e(summary[1])}</div>
<table id="vrids"><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table>
{carp_html}</body></html>
"""
