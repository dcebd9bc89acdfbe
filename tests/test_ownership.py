from __future__ import annotations

import pytest

from ka_exporter.decode import Checksum
from ka_exporter.model import Router, Segment, VridKey, VridView
from ka_exporter.ownership import ownership

KEY = VridKey(Segment("eth0"), "ipv4", 51)
A, B = "192.0.2.11", "192.0.2.12"
VIP = "192.0.2.51"


def view(masters: tuple[str, ...]) -> VridView:
    routers = tuple(
        Router(a, 100, 100, (VIP,), 0, "", 3, Checksum.PSEUDO_HEADER, False, 0.0, 1.0)
        for a in (A, B)
    )
    return VridView(KEY, masters, masters[0] if masters else None, len(masters) > 1, 0, 0, None,
                    frozenset(), routers)  # fmt: skip


@pytest.mark.parametrize(
    ("masters", "local", "expected"),
    [
        # (held, local_master, duplicate, orphan)
        ((A,), {A, VIP}, (True, True, False, False)),  # the healthy master node
        ((A,), {B}, (False, False, False, False)),  # the healthy backup node
        ((A,), {B, VIP}, (True, False, True, False)),  # backup still holds the VIP
        ((), {B, VIP}, (True, False, False, True)),  # nobody advertises, but we hold it
        ((), {B}, (False, False, False, False)),  # nobody advertises, nothing held
        ((A, B), {B, VIP}, (True, True, False, False)),  # split-brain: we are one of the masters
        ((A,), set(), (False, False, False, False)),  # a passive monitor
    ],
)
def test_ownership(
    masters: tuple[str, ...], local: set[str], expected: tuple[bool, bool, bool, bool]
) -> None:
    own = ownership(view(masters), frozenset(local))
    assert (own.holds, own.local_master, own.duplicate, own.orphan) == expected
    assert own.vips == {VIP: VIP in local}
