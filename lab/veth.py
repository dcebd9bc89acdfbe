"""Two network namespaces of their own joined by a veth pair, eth0 on both sides, and a way to
write frames onto one end: the wire the capture tests and the benchmarks send over.

The pair is created inside the first namespace with its peer moved into the second, so it is
never an interface of the root namespace; frames are written through a socket opened inside the
namespace, never in the root one.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from pyroute2 import netns as p2netns

from lab import netns
from lab.procs import signals_deferred

IFACE = "eth0"


def link(a: str, b: str, ifname: str = IFACE) -> None:
    """A veth pair between namespaces `a` and `b`, `ifname` on both sides, up."""
    netns.run(["ip", "-n", a, "link", "add", ifname, "type", "veth",
               "peer", "name", ifname, "netns", b])  # fmt: skip
    for ns in (a, b):
        netns.set_link(ns, ifname, True)


@contextmanager
def pair(prefix: str, *, ipv6: bool = True) -> Iterator[tuple[str, str]]:
    """Namespaces `{prefix}XXXX-a` and `-b`, `lo` up, joined by `link`; deleted on the way
    out, Ctrl-C included. `ipv6=False` turns the IPv6 stack off in both: no ND or MLD chatter
    on the wire, and frames still pass."""
    tag = secrets.token_hex(2)
    a, b = f"{prefix}{tag}-a", f"{prefix}{tag}-b"
    made: list[str] = []
    try:
        for ns in (a, b):
            with signals_deferred():  # an interrupt between the two would leak the namespace
                netns.add(ns)
                made.append(ns)
            if not ipv6:
                netns.sysctl(ns, {f"net.ipv6.conf.{k}.disable_ipv6": 1 for k in ("all", "default")})
        link(a, b)
        yield a, b
    finally:
        with signals_deferred():
            for ns in made:
                netns.delete(ns)


def send(ns: str, frames: Iterable[bytes], interface: str = IFACE) -> None:
    """Writes frames onto `interface` inside `ns` (never the root namespace); bounded by input."""
    sock = p2netns.create_socket(
        ns, family=socket.AF_PACKET, socket_type=socket.SOCK_RAW, proto=0, flags=0
    )
    with sock:
        sock.bind((interface, 0))
        for frame in frames:
            sock.send(frame)
