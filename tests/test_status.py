from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from ka_exporter.alerter import owned
from ka_exporter.decode import Claim, LinkType
from ka_exporter.history import History
from ka_exporter.model import Event, EventType, Model, Segment, VridKey
from ka_exporter.page import wall
from ka_exporter.status import render
from lab import Flavour, Instance, wait_for
from lab.addressing import host_ipv4, node_host
from lab.exporter import NsExporter
from tests import segments
from tests.browser import browse
from tests.frames import advert
from tests.lab_fixtures import MakeLab
from tests.states import model_at

NODE1 = {"": frozenset({"192.0.2.11", "192.0.2.51", "192.0.2.52", "192.0.2.152", "192.0.2.53"})}
NODE2 = {"": frozenset({"192.0.2.12", "192.0.2.51"})}


ETH0 = Segment("eth0")


NAMES = {"192.0.2.11": "lb-a", "192.0.2.12": "lb-b"}


def replayed(
    offset: float, segment: Segment = ETH0, capture: str = "vrrp-all.pcap", window: float = 3600
) -> tuple[Model, History, float, list[Event]]:
    """The model at `offset` into the capture, and the history of its events so far."""
    model, now = model_at(capture, offset, segment)
    history, events = History(window), model.pop_events()
    history.feed(events, now)
    return model, history, now, events


def page(
    offset: float,
    segment: Segment = ETH0,
    addresses: dict[str, frozenset[str]] = NODE2,
    names: dict[str, str] | None = None,
    window: float = 3600,
) -> str:
    model, history, now, _ = replayed(offset, segment, window=window)
    return render(
        model.snapshot(now), addresses, now, "node2", "1.2.3", "/metrics", None, (), history, names
    )


def row_of(html: str, vrid: int) -> tuple[str, str]:
    (found,) = [(css, cells) for css, cells in rows(html) if f"<b>{vrid}</b>" in cells]
    return found


def rows(html: str) -> list[str]:
    return re.findall(r"<tr class=\"(?:row-)?([\w-]*)\">(.*?)</tr>", html, re.DOTALL)  # type: ignore[return-value]


def test_converged_cluster_is_all_ok() -> None:
    html = page(10.0, addresses=NODE1)
    assert "All 5 VRIDs have exactly one master." in html
    assert [css for css, _ in rows(html)] == [""] * 5
    assert 'http-equiv="refresh"' in html


def test_backup_holding_a_vip_is_a_duplicate() -> None:
    found = rows(page(10.0, addresses=NODE2))  # node 1 is master, yet node 2 holds VIP 51
    assert [css for css, _ in found] == ["bad", "", "", "", ""]
    assert "DUPLICATE VIP" in found[0][1]
    assert "<b>51</b>" in found[0][1]


def test_a_duplicate_vip_says_since_when() -> None:
    model, history, now, _ = replayed(10.0)
    views = model.snapshot(now)
    history.own(owned(views, NODE2), now - 3)
    html = render(views, NODE2, now, "node2", "1.2.3", "/metrics", None, (), history)
    banner = html.split('<ul id="problems">')[1].split("</ul>")[0]
    assert "DUPLICATE VIP on VRID 51 (eth0) since <span" in banner
    assert f">{wall(now - 3)}</span>" in banner


def test_split_brain_rows_come_first_and_say_so() -> None:
    html = page(90.5)
    assert "5 of 5 VRIDs need attention." in html
    found = rows(html)
    assert [css for css, _ in found] == ["bad"] * 5
    assert all("SPLIT-BRAIN" in cells for _, cells in found)
    vrid51 = next(cells for _, cells in found if "<b>51</b>" in cells)
    assert "<code>192.0.2.51</code> <b>held here</b>" in vrid51
    assert "192.0.2.12</code> prio 100 <b>(this host)</b>" in vrid51
    assert "192.0.2.11</code> prio 150<br>" in vrid51  # the other master is not this host


def test_lost_master_after_the_last_resignation() -> None:
    found = rows(page(125.0))  # both nodes stopped: nobody advertises
    assert all("NO MASTER" in cells for _, cells in found)


def test_values_are_escaped_and_no_secret_shown() -> None:
    names = {"192.0.2.11": "<img src=x onerror=alert(1)>", "192.0.2.12": 'b"&'}
    html = page(110.0, Segment("<script>x</script>", "ns&1"), names=names)
    assert 'id="events"' in html and 'class="strip"' in html  # the history is on the page too
    assert "<script>x" not in html and "<img" not in html and 'b"&' not in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "b&quot;&amp;" in html
    assert "ns&amp;1" in html
    for secret in ("secret12", "ahsecret"):
        assert secret not in html
    assert "auth PASS" in html


def test_nothing_heard_yet() -> None:
    assert "No VRRP adverts heard yet." in render([], {}, 0.0, "h", "v", "/metrics")


def trunk_model(down: bool = False) -> tuple[Model, float]:
    model = Model()
    records = segments.trunk()
    for t, frame in records:
        model.ingest(ETH0, t, frame, LinkType.ETHERNET)
    now = records[-1][0]
    if down:
        model.link(ETH0, False, now)
        now += 600
    return model, now


def test_vlans_carp_and_a_collision() -> None:
    model, now = trunk_model()
    html = render(model.snapshot(now), {}, now, "h", "v", "/metrics", model.carp_snapshot(now), ())
    found = rows(html.split('<table id="carp">')[0])
    assert len(found) == 3
    colliding = [cells for css, cells in found if "CARP COLLISION" in cells]
    assert len(colliding) == 1 and "<b>VLAN 100</b>" in colliding[0]
    assert "00:00:5e:00:01:33" in colliding[0]  # VRID 51 in hex, in the explanation
    assert sum("<b>VLAN 200</b>" in cells and ">OK<" in cells for _, cells in found) == 1
    assert "<b>VLAN 300.52</b>" in html
    carp = html[html.index('<table id="carp">') :]
    assert carp.count("<tr") == 3  # the head and two CARP groups
    assert "<code>192.0.2.31</code> advbase 1 advskew 10 <b>master</b>" in carp
    assert "1 of 3 VRIDs need attention." in html


def test_link_down_is_said_and_no_vrid_of_it_has_no_master() -> None:
    model, now = trunk_model(down=True)
    views = model.snapshot(now)
    html = render(views, {}, now, "h", "v", "/metrics", model.carp_snapshot(now), model.down)
    went = wall(now - 600)  # the moment the model was told, not when the page is drawn
    assert f"Link down: eth0 since {went}; its 3 VRIDs are held as last heard." in html
    assert "No VRRP adverts heard yet." not in html
    assert "NO MASTER" not in html
    assert html.count(">LINK DOWN<") == 3 + 1  # every VRID, and the CARP group not colliding
    banner = html[html.index('id="summary"') : html.index("</div>", html.index('id="summary"'))]
    assert banner.count(f">{went}</span>") == 3  # each VRID's LINK DOWN in the list, since then


# --- history: banner, timeline, events, priorities, gone routers -------------------------------


def test_banner_names_each_problem_and_since_when() -> None:
    _, _, _, events = replayed(90.5)
    html = page(90.5)
    banner = html[html.index('id="summary"') : html.index("</div>", html.index('id="summary"'))]
    for e in events:
        if e.type is EventType.SPLIT_BRAIN_START:
            since = wall(float(e.detail["since"]))
            name = f"IPv6 VRID {e.key.vrid}" if e.key.family == "ipv6" else f"VRID {e.key.vrid}"
            assert f"SPLIT-BRAIN on {name} (eth0) since <span" in banner
            assert f">{since}</span>" in banner
    assert banner.count("<li") == 5


def test_two_masters_confirming_before_the_debounce() -> None:
    """VRID 52 (0.5 s adverts): node 2 advertises from 86.35 s, split-brain is called at 87.35 s;
    in between two masters must not show under an OK badge."""
    model, _, now, _ = replayed(86.8)
    (view,) = [v for v in model.snapshot(now) if v.key.vrid == 52]
    assert len(view.masters) == 2 and not view.split_brain
    html = page(86.8)
    css, cells = row_of(html, 52)
    assert css == "warn" and "2 MASTERS, CONFIRMING…" in cells and ">OK<" not in cells
    assert "2 MASTERS, CONFIRMING… on VRID 52 (eth0) since" in html
    assert "SPLIT-BRAIN" not in html


def test_dead_routers_are_gone_not_backups() -> None:
    """At 110 s node 1 has stopped (priority 0): gone, not a backup of VRID 51."""
    html = page(110.0, names=NAMES)
    _, cells = row_of(html, 51)
    backups = cells.split("</td><td>")[5]
    assert '<span class="gone"><b>lb-a</b> <code>192.0.2.11</code> gone since' in backups
    assert "(resigned)" in backups and "prio" not in backups


def test_events_say_old_to_new_with_reason_and_gap() -> None:
    html = page(110.0, names=NAMES)
    events = html[html.index('<table id="events">') :]
    changed = re.findall(r'<tr data-type="master_changed">(.*?)</tr>', events)
    assert any(
        "VRID 51 (eth0)" in row
        and "lb-a (192.0.2.11) → lb-b (192.0.2.12)" in row
        and "resigned, gap 0.610 s, priority 0 → 100" in row
        for row in changed
    ), changed
    assert '<tbody class="moment" data-size="8">' in events  # one stop, four VRIDs at once
    assert re.search(r"<td>\d\d:\d\d:\d\d\.\d{3}</td>", events)  # wall clock


def test_strip_draws_masters_split_brain_and_the_gap() -> None:
    html = page(110.0, names=NAMES)
    _, cells = row_of(html, 51)
    svg = cells[cells.index("<svg") : cells.index("</svg>")]
    kinds = re.findall(r'<rect class="span (\w+)"', svg)
    assert kinds == ["master", "split", "master", "none", "master"]
    assert 'role="img"' in svg and "split-brain: lb-a (192.0.2.11) + lb-b (192.0.2.12)" in svg
    assert "no master (resigned)" in svg  # the failover gap, in the tooltip and aria-label
    assert "Last hour" in html


def test_priority_history_beside_the_router() -> None:
    model, history, now, events = replayed(7.0, capture="vrrp-prio-change.pcap")
    html = render(model.snapshot(now), {}, now, "h", "v", "/metrics", history=history)
    first, second = [e.time for e in events if e.type is EventType.PRIORITY_CHANGED]
    assert f"(140 → 200 at {wall(second)}; 200 → 140 at {wall(first)})" in html


def test_page_stays_small_for_50_flapping_vrids() -> None:
    model, history = Model(), History()
    events = []
    for vrid in range(1, 51):
        key = VridKey(ETH0, "ipv4", vrid)
        for t in range(0, 3600, 30):  # a change every 30 s, all hour long
            new, old = ("192.0.2.11", "192.0.2.12")[:: 1 if t % 60 else -1]
            detail = {"reason": "silent", "gap_seconds": 3.6, "old_priority": 100}
            events.append(Event(float(t), EventType.MASTER_CHANGED, key, (new, old), detail))
        frame = bytes(advert(3, vrid=vrid, priority=100, src="192.0.2.11"))
        model.ingest(ETH0, 3600.0, frame, LinkType.ETHERNET)
    events.sort(key=lambda e: e.time)
    history.feed(events, 3600.0)
    html = render(model.snapshot(3600.0), {}, 3600.0, "h", "v", "/metrics", history=history)
    assert html.count('class="strip"') == 50
    assert len(html.encode()) < 600_000  # a strip holds 40 spans at most: ~470 kB


# --- in a browser --------------------------------------------------------------------------------


def test_status_page_in_chromium(tmp_path: Path) -> None:
    """Chromium builds the page's DOM as written: the banner, an SVG strip per VRID with its
    spans, the events with their reasons, the confirming state; screenshots for a person."""
    confirming = browse(page(86.8, names=NAMES, window=120), tmp_path, "status-confirming")
    assert "2 MASTERS, CONFIRMING… on VRID 52 (eth0) since" in confirming
    split = browse(page(90.5, names=NAMES, window=120), tmp_path, "status-split-brain")
    summary = re.search(r'<div class="summary bad" id="summary">(.*?)</div>', split, re.DOTALL)
    assert summary is not None and "5 of 5 VRIDs need attention." in summary.group(1)
    assert len(re.findall(r"<li[^>]*>SPLIT-BRAIN on ", summary.group(1))) == 5
    dom = browse(page(110.0, names=NAMES, window=120), tmp_path, "status-after-failover")
    strips = re.findall(r'<svg class="strip" role="img" aria-label="([^"]*)"(.*?)</svg>', dom)
    assert len(strips) == 5
    for label, body in strips:
        assert "split-brain" in label and "no master (resigned)" in label
        assert re.findall(r'<rect class="span (\w+)"', body)[:2] == ["master", "split"]
        assert "<title>" in body
    changed = re.findall(r'<tr data-type="master_changed">(.*?)</tr>', dom, re.DOTALL)
    assert sum("→" in row and "resigned, gap" in row for row in changed) == 5
    assert dom.count('class="gone"') == 5


@pytest.mark.lab
def test_a_live_failover_on_the_page_in_chromium(make_lab: MakeLab, tmp_path: Path) -> None:
    """Real keepalived: the master (node 1, priority 150) is SIGKILLed; the page the exporter
    serves says who took over, why and after how long, and draws the unattended gap."""
    inst = Instance(51, Flavour.V3, advert_int=0.5)
    lab = make_lab([inst])
    lab.start_all()
    n1, n2 = (host_ipv4(node_host(node), inst.segment) for node in (1, 2))
    names = ["--vrrp.peer-name", f"{n1}=node1", "--vrrp.expected-peer", f"{n2}=node2"]
    exporter = NsExporter(lab, "mon", args=names)
    exporter.wait_ready()
    wait_for(lambda: exporter.scrape().masters(inst) == {n1}, 10, what="node 1 master")
    time.sleep(1.0)  # a few of its adverts: a master span that lasted, before the crash
    lab.kill(1, signal.SIGKILL)
    wait_for(lambda: exporter.scrape().masters(inst) == {n2}, 10, what="node 2 master")
    dom = browse(exporter.get("/"), tmp_path, "status-live-failover")
    changed = re.findall(r'<tr data-type="master_changed">(.*?)</tr>', dom, re.DOTALL)
    assert f"node1 ({n1}) → node2 ({n2})" in changed[0] and "silent, gap " in changed[0]
    (svg,) = re.findall(r'<svg class="strip".*?</svg>', dom, re.DOTALL)
    assert re.findall(r'<rect class="span (\w+)"', svg)[-3:] == ["master", "none", "master"]
    assert f"<b>node1</b> <code>{n1}</code> gone since" in dom and "(silent)" in dom


def test_who_answers_for_each_vip_and_a_conflict_no_vrid_explains() -> None:
    """A unicast pair seen from a third host: no VRRP heard, only the announcements."""
    model = Model()
    a_mac, b_mac = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
    for t, mac in ((0.0, a_mac), (0.3, b_mac), (5.0, a_mac), (5.3, b_mac)):
        model.observe_claim(ETH0, Claim(t, "ipv4", "192.0.2.51", mac))
    model.observe_claim(ETH0, Claim(1.0, "ipv4", "192.0.2.77", a_mac))  # a host's own, once
    html = render([], {}, 6.0, "h", "v", "/metrics", claims=model.claims_snapshot(6.0))
    assert "No VRRP adverts heard yet." not in html
    assert "Two MACs answer for one VIP." in html
    assert "VIP CONFLICT 192.0.2.51 on eth0 (no VRID heard) since" in html
    claims = html[html.index('<table id="claims">') :]
    assert claims.count("<tr") == 2 and "192.0.2.77" not in claims
    assert "<code>02:00:00:00:00:0b</code> 2 times <b>last</b>" in claims


def test_a_split_brain_across_hosts_is_in_the_banner() -> None:
    html = render([], {}, 100.0, "h", "v", "/metrics", across_hosts=[("VRID 10 (ipv4): a, b", 90)])
    assert "Two hosts claim one VRID." in html
    assert "SPLIT-BRAIN ACROSS HOSTS on VRID 10 (ipv4): a, b since" in html
