from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

from ka_exporter import capture
from ka_exporter.model import Model, Segment
from tests import frames
from tests.conftest import send


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
def test_embedded_bpf_is_the_filter_compiled() -> None:
    out = subprocess.run(
        ["tcpdump", "-y", "EN10MB", "-dd", capture.FILTER],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    compiled = [
        tuple(int(x, 0) for x in line.strip(" {},").split(","))
        for line in out.splitlines()
        if line.startswith("{")
    ]
    assert compiled == list(capture.BPF_PROGRAM)


def vrrp_frames() -> list[bytes]:
    return [
        bytes(frames.advert(3, vrid=1, priority=150)),
        bytes(frames.advert(2, vrid=2, authtype=1, auth=b"secret12")),
        bytes(frames.advert(2, vrid=3, authtype=2, ah=True)),
        bytes(frames.advert(3, "ipv6", vrid=4)),
    ]


def noise() -> list[bytes]:
    return [
        bytes(Ether() / IP(src="192.0.2.9", dst="192.0.2.10") / UDP(dport=112)),
        bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="192.0.2.9", pdst="192.0.2.10")),
    ]


async def captured(listen_ns: str, send_ns: str, payload: list[bytes]) -> tuple[Model, int]:
    model = Model()
    cap = capture.Capture(model, asyncio.get_running_loop())
    segment = Segment("eth0", listen_ns)
    cap.open(segment)
    try:
        await asyncio.to_thread(send, send_ns, payload)
        for _ in range(50):
            await asyncio.sleep(0.02)
            if sum(r.adverts for v in model.vrids.values() for r in v.routers.values()) >= 4:
                break
        (tap,) = cap.statistics()
        return model, tap.packets
    finally:
        cap.close_all()


def test_kernel_filter_passes_vrrp_only(wire: tuple[str, str]) -> None:
    a, b = wire
    model, packets = asyncio.run(captured(b, a, noise() + vrrp_frames() + noise()))
    assert sorted(k.vrid for k in model.vrids) == [1, 2, 3, 4]
    assert not model.rejects
    assert packets == 4  # the UDP and ARP frames never left the kernel


def test_own_outgoing_adverts_are_seen(wire: tuple[str, str]) -> None:
    """On a unicast node, capturing its own sends is the only way to see its adverts."""
    a, _ = wire
    model, _ = asyncio.run(captured(a, a, vrrp_frames()))
    assert sorted(k.vrid for k in model.vrids) == [1, 2, 3, 4]


def test_unknown_interface_is_a_clear_error(wire: tuple[str, str]) -> None:
    with pytest.raises(capture.CaptureError, match=r"cannot capture on nope0 in network namespace"):
        capture.open_socket("nope0", wire[0])
