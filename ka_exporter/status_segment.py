"""The status page's tables of what else the segment carries: CARP neighbours, and who answers
for each VIP (its announcements). Pure rendering, every value escaped."""

from __future__ import annotations

from ka_exporter.model import CarpView, ClaimView
from ka_exporter.page import COLLISION_HELP, ago, badge, esc, where


def carp_table(groups: list[CarpView], now: float, collisions: set[tuple[object, ...]]) -> str:
    if not groups:
        return ""
    rows = []
    for g in sorted(groups, key=lambda g: g.key):
        colliding = tuple(g.key) in collisions
        state = (
            badge("bad", "CARP COLLISION", COLLISION_HELP.format(vrid=f"{g.key.vrid:02x}"))
            if colliding
            else badge("warn", "LINK DOWN")
            if g.link_down
            else badge("ok", "master")
            if len(g.masters) == 1
            else badge("bad", f"{len(g.masters)} masters")
            if g.masters
            else badge("warn", "no master heard")
        )
        speakers = "<br>".join(
            f"<code>{esc(s.address)}</code> advbase {s.advbase} advskew {s.advskew}"
            + (f" demote {s.demote}" if s.demote else "")
            + (" <b>master</b>" if s.address in g.masters else "")
            + f" <span class='muted'>last {ago(s.last_seen, now)}</span>"
            for s in sorted(g.speakers, key=lambda s: s.advskew)
        )
        cells = [where(g.key.segment), esc(g.key.family), f"<b>{g.key.vrid}</b>", state, speakers]
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


def claims_table(claims: list[ClaimView], now: float) -> str:
    """The announced addresses that matter (VIPs, or any two MACs announced), conflicts first."""
    if not claims:
        return ""
    rows = []
    for c in sorted(claims, key=lambda c: (c.conflict_since is None, c.key)):
        conflict = c.conflict_since is not None
        state = (
            badge("bad", "VIP CONFLICT", "two MACs announce it in turns: both hold it")
            if conflict
            else badge("ok", "one MAC")
        )
        macs = "<br>".join(
            f"<code>{esc(m.mac)}</code> {m.count} times"
            + (" <b>last</b>" if m.mac == c.last_mac else "")
            + f" <span class='muted'>{ago(m.last, now)}</span>"
            for m in sorted(c.macs, key=lambda m: -m.last)
        )
        vrid = f"<b>{c.vrid}</b>" if c.vrid else '<span class="muted">not heard</span>'
        cells = [where(c.key.segment), esc(c.key.family), f"<code>{esc(c.key.address)}</code>",
                 vrid, state, macs]  # fmt: skip
        css = ' class="row-bad"' if conflict else ""
        rows.append(f"<tr{css}>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>" for h in ("Segment", "Family", "Address", "VRID", "State", "Announced by")
    )
    return (
        "<h2>Who answers for each VIP</h2>"
        '<div class="sub">From gratuitous ARP and unsolicited neighbour advertisements: what '
        "switches and clients learn, heard even where unicast VRRP is not.</div>"
        f'<table id="claims"><thead><tr>{head}</tr></thead><tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table>"
    )
