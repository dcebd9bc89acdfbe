"""keepalived configuration for lab nodes, built from node-independent instance specs.

One `Instance` describes a VRRP instance across the whole lab (which nodes take part, at which
priority), so every node's config, including unicast peer lists, follows from the same spec.
"""

from __future__ import annotations

import enum
import ipaddress
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from lab import addressing

PASS_PASSWORD = "secret12"  # keepalived uses only the first 8 characters
AH_PASSWORD = "ahsecret"


class Flavour(enum.StrEnum):
    """The on-wire variants a VRRP monitor has to understand."""

    V2_PASS = "v2-pass"
    V2_AH = "v2-ah"
    V3 = "v3"
    V3_V6 = "v3-v6"
    V3_UNICAST = "v3-unicast"

    @property
    def version(self) -> int:
        return 2 if self in (Flavour.V2_PASS, Flavour.V2_AH) else 3

    @property
    def ipv6(self) -> bool:
        return self is Flavour.V3_V6


_GARP_OPTIONS = (
    "garp_master_delay",
    "garp_master_repeat",
    "garp_master_refresh",
    "garp_master_refresh_repeat",
)


def _default_priorities() -> dict[int, int]:
    return {1: 150, 2: 100}


@dataclass(frozen=True)
class Instance:
    """One VRRP instance: `priorities` maps node number to that node's base priority."""

    vrid: int
    flavour: Flavour = Flavour.V3
    priorities: Mapping[int, int] = field(default_factory=_default_priorities)
    advert_int: float = 1.0
    vips: tuple[str, ...] = ()  # with prefix length; default derived from the VRID
    segment: int = 0
    # What the master announces (gratuitous ARP, unsolicited NA) and from which MAC; None leaves
    # keepalived's default: garp_master_delay 5 s, garp_master_repeat 5, no refresh.
    garp_master_delay: int | None = None  # s to the second burst after takeover (0: none)
    garp_master_repeat: int | None = None  # announcements per burst
    garp_master_refresh: int | None = None  # s between bursts while master (0: none)
    garp_master_refresh_repeat: int | None = None  # announcements per refresh burst
    use_vmac: bool = False  # announce from 00:00:5e:00:01:VRID (IPv6: 00:00:5e:00:02:VRID)
    unicast: bool = (
        False  # unicast_peer to the other nodes, for any flavour (V3_UNICAST implies it)
    )

    def __post_init__(self) -> None:
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"VRID must be 1-255, not {self.vrid}")
        if not self.priorities:
            raise ValueError(f"VRID {self.vrid}: no node takes part")
        for node, priority in self.priorities.items():
            addressing.node_host(node)
            if not 1 <= priority <= 255:
                raise ValueError(f"VRID {self.vrid}: priority {priority} of node {node}")
        if self.flavour.version == 2:
            # v2 carries whole seconds; a fraction would silently round on one node only
            if self.advert_int != int(self.advert_int) or not 1 <= self.advert_int <= 255:
                raise ValueError(f"VRID {self.vrid}: v2 advert_int must be 1-255 s")
        elif not 0.01 <= self.advert_int <= 40.95 or not math.isclose(
            round(self.advert_int * 100), self.advert_int * 100
        ):
            raise ValueError(f"VRID {self.vrid}: v3 advert_int must be 0.01-40.95 s in 10 ms steps")
        if not 0 <= self.segment < addressing.MAX_SEGMENTS:
            raise ValueError(f"segment must be below {addressing.MAX_SEGMENTS}")
        for name in _GARP_OPTIONS:
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1000:
                raise ValueError(f"VRID {self.vrid}: {name} {value} out of range")
        if not self.vips:
            vip = (
                f"{addressing.vip_ipv6(self.vrid, self.segment)}/{addressing.IPV6_PREFIX}"
                if self.flavour.ipv6
                else f"{addressing.vip_ipv4(self.vrid, self.segment)}/{addressing.IPV4_PREFIX}"
            )
            object.__setattr__(self, "vips", (vip,))

    @property
    def name(self) -> str:
        return f"{self.flavour.name}_{self.vrid}"

    @property
    def interface(self) -> str:
        return f"eth{self.segment}"

    @property
    def is_unicast(self) -> bool:
        return self.unicast or self.flavour is Flavour.V3_UNICAST

    @property
    def vmac(self) -> str:
        """The virtual MAC of the VRID (RFC 5798 7.3), which `use_vmac` announces from."""
        return f"00:00:5e:00:0{2 if self.flavour.ipv6 else 1}:{self.vrid:02x}"

    @property
    def vip_addresses(self) -> tuple[str, ...]:
        """VIPs as `ip -j addr` prints them, for comparing with what a node holds."""
        return tuple(str(ipaddress.ip_interface(vip).ip) for vip in self.vips)

    def master_down_interval(self, node: int) -> float:
        """How long `node` waits for a silent master before taking over (RFC 3768/5798)."""
        skew = (256 - self.priorities[node]) / 256
        if self.flavour.version == 3:
            skew *= self.advert_int
        return 3 * self.advert_int + skew

    def with_node(self, node: int, priority: int) -> Instance:
        return replace(self, priorities={**self.priorities, node: priority})


def double_master(
    vrid_a: int,
    vrid_b: int,
    *,
    flavour: Flavour = Flavour.V3,
    nodes: tuple[int, int] = (1, 2),
    high: int = 150,
    low: int = 100,
    advert_int: float = 1.0,
) -> list[Instance]:
    """Two VRIDs mastered by different nodes: the usual active-active pair."""
    first, second = nodes
    return [
        Instance(vrid_a, flavour, {first: high, second: low}, advert_int),
        Instance(vrid_b, flavour, {first: low, second: high}, advert_int),
    ]


def render_config(
    node: int,
    instances: Iterable[Instance],
    *,
    fifo: Path,
    track_file: Path,
    track_weight: int,
    notify: str,
) -> str:
    """keepalived.conf text for `node`, holding the instances it takes part in."""
    mine = [inst for inst in instances if node in inst.priorities]
    if not mine:
        raise ValueError(f"node {node} takes part in no instance")
    track = f"prio_n{node}"
    lines = [
        "global_defs {",
        f"    router_id n{node}",
        "    script_user root",
        f"    vrrp_notify_fifo {fifo}",
        "    vrrp_notify_priority_changes true",
        "}",
        f"track_file {track} {{",
        f"    file {track_file}",
        f"    weight {track_weight}",
        "    init_file 0 overwrite",
        "}",
    ]
    for inst in mine:
        lines += _instance_lines(node, inst, track, notify)
    return "\n".join(lines) + "\n"


def _instance_lines(node: int, inst: Instance, track: str, notify: str) -> list[str]:
    lines = [
        f"vrrp_instance {inst.name} {{",
        "    state BACKUP",
        f"    interface {inst.interface}",
        f"    version {inst.flavour.version}",
        f"    virtual_router_id {inst.vrid}",
        f"    priority {inst.priorities[node]}",
        f"    advert_int {inst.advert_int:g}",
    ]
    if inst.use_vmac:
        lines.append(f"    use_vmac vrrp.{inst.vrid}")
    lines += [
        f"    {name} {value}"
        for name in _GARP_OPTIONS
        if (value := getattr(inst, name)) is not None
    ]
    if inst.is_unicast:
        host = addressing.node_host
        address = addressing.host_ipv6 if inst.flavour.ipv6 else addressing.host_ipv4
        lines.append(f"    unicast_src_ip {address(host(node), inst.segment)}")
        lines.append("    unicast_peer {")
        lines += [
            f"        {address(host(peer), inst.segment)}"
            for peer in sorted(inst.priorities)
            if peer != node
        ]
        lines.append("    }")
    if inst.flavour in (Flavour.V2_PASS, Flavour.V2_AH):
        auth, password = (
            ("PASS", PASS_PASSWORD) if inst.flavour is Flavour.V2_PASS else ("AH", AH_PASSWORD)
        )
        lines += [
            "    authentication {",
            f"        auth_type {auth}",
            f"        auth_pass {password}",
            "    }",
        ]
    lines.append("    virtual_ipaddress {")
    lines += [f"        {vip}" for vip in inst.vips]
    lines += [
        "    }",
        "    track_file {",
        f"        {track}",
        "    }",
        f'    notify "{notify}"',
        "}",
    ]
    return lines
