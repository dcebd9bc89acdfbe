"""The keepalived lab behaves like a real cluster, and never leaves anything behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ka_exporter import pcap
from lab import Flavour, Instance, Lab, double_master, netns, render_config, wait_for

VRID = 51  # the `pair` fixture's instance


def converge(lab: Lab, vrid: int, master: int) -> None:
    inst = lab.instance(vrid)
    wait_for(
        lambda: lab.master_of(vrid) == master,
        inst.master_down_interval(master) + 2,
        what=f"n{master} sole master of VRID {vrid}",
    )


# -- configuration (no root needed) -----------------------------------------------------------


def _render(inst: Instance, node: int = 1) -> str:
    return render_config(
        node, [inst], fifo=Path("/f"), track_file=Path("/t"), track_weight=-60, notify="/n"
    )


@pytest.mark.parametrize(
    ("inst", "expected"),
    [
        (Instance(51, Flavour.V2_PASS), ["version 2", "auth_type PASS", "192.0.2.151/24"]),
        (Instance(55, Flavour.V2_AH), ["version 2", "auth_type AH"]),
        (Instance(52, Flavour.V3, advert_int=0.5), ["version 3", "advert_int 0.5"]),
        (Instance(54, Flavour.V3_V6), ["version 3", "2001:db8:0:1::1:54/64"]),
        (
            Instance(53, Flavour.V3_UNICAST, {1: 150, 2: 100, 3: 50}),
            ["unicast_src_ip 192.0.2.11", "unicast_peer {", "192.0.2.12", "192.0.2.13"],
        ),
    ],
    ids=lambda value: value.name if isinstance(value, Instance) else "",
)
def test_config_has_the_flavour_keywords(inst: Instance, expected: list[str]) -> None:
    lines = [line.strip() for line in _render(inst).splitlines()]
    assert set(expected) <= set(lines)
    assert "vrrp_notify_fifo /f" in lines
    assert "state BACKUP" in lines


def test_double_master_gives_each_node_one_vrid() -> None:
    a, b = double_master(10, 11)
    assert (dict(a.priorities), dict(b.priorities)) == ({1: 150, 2: 100}, {1: 100, 2: 150})
    assert "priority 150" in _render(a, 1)
    assert "priority 100" in _render(b, 1)


def test_config_rejects_what_keepalived_would_misread() -> None:
    with pytest.raises(ValueError, match="v2 advert_int"):
        Instance(51, Flavour.V2_PASS, advert_int=0.5)
    with pytest.raises(ValueError, match="no instance"):
        _render(Instance(51), node=3)


# -- behaviour of a running lab ------------------------------------------------------------------


@pytest.mark.lab
def test_high_priority_node_becomes_master_and_says_so(pair: Lab, tmp_path: Path) -> None:
    with pair.capture(tmp_path / "converge.pcap") as path:
        converge(pair, VRID, 1)
        wait_for(lambda: any("MASTER" in line for line in pair.notify_lines(1)), 2)
        time.sleep(0.6)  # one more advert
    vip = pair.instance(VRID).vip_addresses[0]
    assert vip in pair.vips(1)
    assert vip not in pair.vips(2)
    assert any(line.endswith("INSTANCE V3_51 MASTER 150") for line in pair.notify_lines(1))
    assert 'INSTANCE "V3_51" MASTER 150' in pair.fifo_lines(1)
    assert 'INSTANCE "V3_51" BACKUP 100' in pair.fifo_lines(2)
    with path.open("rb") as stream:
        sources = {packet.frame[26:30] for packet in pcap.read(stream)}
    assert socket.inet_aton("192.0.2.11") in sources  # the monitor hears the master's adverts


@pytest.mark.lab
def test_sigkill_of_master_fails_over_within_master_down_interval(pair: Lab) -> None:
    converge(pair, VRID, 1)
    limit = pair.instance(VRID).master_down_interval(2) + 1
    started = time.monotonic()
    pair.kill(1, signal.SIGKILL)
    wait_for(lambda: pair.master_of(VRID) == 2, limit + 1)
    assert time.monotonic() - started <= limit
    assert not pair.running(1)
    # a crash says no goodbye: the dead node's VIP stays configured, as on a real host
    assert pair.instance(VRID).vip_addresses[0] in pair.vips(1)
    pair.restart(1)  # drops the stale VIP, then preempts
    converge(pair, VRID, 1)


@pytest.mark.lab
def test_partition_gives_split_brain_and_heal_ends_it(pair: Lab) -> None:
    converge(pair, VRID, 1)
    pair.partition()
    wait_for(lambda: pair.holders(VRID) == {1, 2}, 4, what="split brain")
    pair.heal()
    converge(pair, VRID, 1)


@pytest.mark.lab
def test_firewall_dropping_vrrp_gives_split_brain(pair: Lab) -> None:
    converge(pair, VRID, 1)
    pair.firewall_drop_vrrp(2)
    wait_for(lambda: pair.holders(VRID) == {1, 2}, 4, what="split brain")
    pair.firewall_allow(2)
    converge(pair, VRID, 1)


@pytest.mark.lab
def test_priority_offset_hands_over_and_back(pair: Lab) -> None:
    converge(pair, VRID, 1)
    pair.set_priority_offset(1, True)  # 150 - 60 = 90 < 100
    converge(pair, VRID, 2)
    assert 'INSTANCE "V3_51" MASTER_PRIORITY 90' in pair.fifo_lines(1)
    pair.set_priority_offset(1, False)
    converge(pair, VRID, 1)


@pytest.mark.lab
def test_link_down_hands_over_and_link_up_takes_back(pair: Lab) -> None:
    converge(pair, VRID, 1)
    pair.link(1, up=False)
    converge(pair, VRID, 2)
    pair.link(1, up=True)
    converge(pair, VRID, 1)
    assert "2001:db8:0:1::11" in pair.vips(1)  # IPv6 addresses survive the link flap


@pytest.mark.lab
def test_rogue_node_with_higher_priority_takes_over(pair: Lab) -> None:
    converge(pair, VRID, 1)
    rogue = pair.rogue(VRID)
    assert rogue == 3
    converge(pair, VRID, 3)


@pytest.mark.lab
def test_every_flavour_converges_and_fails_over(make_lab: Callable[..., Lab]) -> None:
    instances = [
        Instance(51, Flavour.V2_PASS),
        Instance(52, Flavour.V3, advert_int=0.5),
        Instance(53, Flavour.V3_UNICAST),
        Instance(54, Flavour.V3_V6),
        Instance(55, Flavour.V2_AH),
        *double_master(10, 11),
    ]
    lab = make_lab(instances)
    lab.start_all()
    for inst in instances:
        converge(lab, inst.vrid, 1 if inst.vrid != 11 else 2)
    assert "Unknown keyword" not in lab.log_tail(1, 10_000)
    lab.kill(1, signal.SIGKILL)
    for inst in instances:
        converge(lab, inst.vrid, 2)


# -- cleanup ---------------------------------------------------------------------------------


@pytest.mark.lab
@pytest.mark.parametrize("raised", [None, RuntimeError, KeyboardInterrupt])
@pytest.mark.usefixtures("lab_host")
def test_exit_leaves_nothing_behind(raised: type[BaseException] | None) -> None:
    lab = Lab([Instance(VRID, Flavour.V3, advert_int=0.5)])
    try:
        with lab:
            lab.start_all()
            lab.exec_in("n1", ["sleep", "60"])
            assert len(lab.namespaces) == 4  # bridge, monitor, 2 nodes
            # 2 FIFO readers, 2 keepalived, 2 VRRP children, sleep
            assert len(lab.started_pids) == 7
            if raised is not None:
                raise raised("test body failed")
    except (RuntimeError, KeyboardInterrupt) as exc:
        assert str(exc) == "test body failed"
    assert lab.leftovers() == []
    assert not [ns for ns in netns.names() if ns.startswith(lab.prefix)]
    assert not os.path.exists(lab.workdir)


@pytest.mark.lab
@pytest.mark.usefixtures("lab_host")
def test_sigterm_to_the_lab_process_cleans_up() -> None:
    script = textwrap.dedent(
        f"""
        import time
        from lab import Flavour, Instance, Lab
        with Lab([Instance({VRID}, Flavour.V3, advert_int=0.5)]) as lab:
            lab.start_all()
            print(lab.prefix, *lab.started_pids, flush=True)
            time.sleep(60)
        """
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None
        prefix, *pids = child.stdout.readline().split()
        child.send_signal(signal.SIGTERM)
        assert child.wait(15) == 128 + signal.SIGTERM
    finally:
        child.kill()
        child.wait()
    assert not [ns for ns in netns.names() if ns.startswith(prefix)]
    assert not [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
