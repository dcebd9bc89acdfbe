"""The lab's address plan, derived from small integers.

Only documentation ranges (RFC 5737, RFC 3849) are used, so a lab can never collide with, or be
mistaken for, a real network; one /24 and one /64 per bridge segment.
"""

from __future__ import annotations

_IPV4_NETS = ("192.0.2", "198.51.100")
_IPV6_NETS = ("2001:db8:0:1", "2001:db8:0:2")

MAX_SEGMENTS = len(_IPV4_NETS)
MAX_NODES = 89  # node hosts are .11-.99; .101 and up belong to VIPs
MONITOR_HOST = 2
IPV4_PREFIX = 24
IPV6_PREFIX = 64


def node_host(node: int) -> int:
    if not 1 <= node <= MAX_NODES:
        raise ValueError(f"node numbers run from 1 to {MAX_NODES}, not {node}")
    return 10 + node


def host_ipv4(host: int, segment: int = 0) -> str:
    return f"{_IPV4_NETS[segment]}.{host}"


def host_ipv6(host: int, segment: int = 0) -> str:
    # The digits are read as hex, so node 1 is ::11 like its IPv4 .11: easy to match by eye.
    return f"{_IPV6_NETS[segment]}::{host}"


def vip_ipv4(vrid: int, segment: int = 0) -> str:
    if vrid > 154:
        raise ValueError(f"no default IPv4 VIP for VRID {vrid}; pass vips explicitly")
    return f"{_IPV4_NETS[segment]}.{100 + vrid}"


def vip_ipv6(vrid: int, segment: int = 0) -> str:
    return f"{_IPV6_NETS[segment]}::1:{vrid}"
