"""Joins the wire view of a VRID with the addresses this host holds.

Pure: the same VRID view and address set always give the same answer. The host here is the
network namespace of the segment the VRID was heard on.
"""

from __future__ import annotations

from dataclasses import dataclass

from ka_exporter.model import VridView


@dataclass(frozen=True, slots=True)
class Ownership:
    vips: dict[str, bool]  # every VIP advertised for the VRID -> held by this host
    local_master: bool  # an acting master's source address is one of ours
    duplicate: bool  # we hold a VIP while another router is the acting master
    orphan: bool  # we hold a VIP while nobody advertises the VRID

    @property
    def holds(self) -> bool:
        return any(self.vips.values())

    @property
    def wrongly(self) -> tuple[str, ...]:
        """How this host holds the VRID's VIPs wrongly: "duplicate", "orphan", or not at all."""
        kinds = (("duplicate", self.duplicate), ("orphan", self.orphan))
        return tuple(kind for kind, on in kinds if on)


def ownership(view: VridView, local: frozenset[str]) -> Ownership:
    vips = sorted({vip for router in view.routers for vip in router.vips})
    held = {vip: vip in local for vip in vips}
    holds = any(held.values())
    local_master = any(master in local for master in view.masters)
    return Ownership(
        vips=held,
        local_master=local_master,
        duplicate=holds and bool(view.masters) and not local_master,
        orphan=holds and not view.masters,
    )
