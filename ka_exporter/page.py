"""The pieces of HTML the status page, its tables and the analyze report share: escaping, wall
times, ages, segments and badges."""

from __future__ import annotations

import html
import time as clock

from ka_exporter.model import Segment

COLLISION_HELP = (
    "A CARP group uses this VRID as its vhid on the same segment. keepalived reads its adverts "
    "as malformed VRRP and restarts its own advert timer on each: when CARP advertises more "
    "often, the master goes quiet and the backup takes over again and again. carp(4) also "
    "claims the same virtual MAC, 00:00:5e:00:01:{vrid}. Give one of them another ID."
)


def esc(value: object) -> str:
    return html.escape(str(value))


def wall(t: float, ms: bool = False) -> str:
    """Wall-clock time of day, UTC: what an operator compares with logs and chat."""
    text = clock.strftime("%H:%M:%S", clock.gmtime(t))
    return f"{text}.{int(t * 1000) % 1000:03d}" if ms else text


def stamp(t: float) -> str:
    return clock.strftime("%Y-%m-%d %H:%M:%S UTC", clock.gmtime(t))


def ago(t: float | None, now: float) -> str:
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
    return f'<span title="{stamp(t)}">{text} ago</span>'


def where(segment: Segment) -> str:
    out = esc(segment.interface)
    if segment.vlan:
        out += f" <b>VLAN {esc(segment.vlan)}</b>"
    if segment.netns:
        out += f' <span class="muted">netns {esc(segment.netns)}</span>'
    return out


def badge(severity: str, text: str, title: str = "") -> str:
    hint = f' title="{esc(title)}"' if title else ""
    return f'<span class="badge {severity}"{hint}>{esc(text)}</span>'
