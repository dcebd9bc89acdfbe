from __future__ import annotations

import re

from ka_exporter.decode import LinkType
from ka_exporter.model import Model, Segment
from ka_exporter.status import render
from tests import segments
from tests.states import model_at

NODE1 = {"": frozenset({"192.0.2.11", "192.0.2.51", "192.0.2.52", "192.0.2.152", "192.0.2.53"})}
NODE2 = {"": frozenset({"192.0.2.12", "192.0.2.51"})}


ETH0 = Segment("eth0")


def page(
    offset: float, segment: Segment = ETH0, addresses: dict[str, frozenset[str]] = NODE2
) -> str:
    model, now = model_at("vrrp-all.pcap", offset, segment)
    return render(model.snapshot(now), addresses, now, "node2", "1.2.3", "/metrics")


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
    html = page(90.5, Segment("<script>x</script>", "ns&1"))
    assert "<script>x" not in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html
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
    html = render(views, {}, now, "h", "v", "/metrics", model.carp_snapshot(now), [ETH0])
    assert "Link down: eth0; its 3 VRIDs are held as last heard." in html
    assert "No VRRP adverts heard yet." not in html
    assert "NO MASTER" not in html
    assert html.count(">LINK DOWN<") == 3 + 1  # every VRID, and the CARP group not colliding
