"""Namespaces, bridges and veths, driven through iproute2.

Every command names its namespace explicitly (`ip -n`, `ip netns exec`), so nothing here can touch
an interface of the root namespace by accident.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Mapping, Sequence


class CommandError(subprocess.CalledProcessError):
    """A failed helper command; unlike its base class, the message carries the tool's stderr."""

    def __str__(self) -> str:
        return f"{shlex.join(self.cmd)} exited {self.returncode}: {self.stderr.strip()}"


def run(
    argv: Sequence[str], *, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise CommandError(proc.returncode, list(argv), proc.stdout, proc.stderr)
    return proc


def exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    # `ip netns exec` execs in place (no fork), so the PID we get is the command's own PID.
    return ["ip", "netns", "exec", ns, *argv]


def names() -> list[str]:
    out = run(["ip", "-j", "netns", "list"]).stdout.strip()
    return [str(entry["name"]) for entry in json.loads(out)] if out else []


def add(ns: str) -> None:
    """Create `ns` with `lo` up, or nothing at all (fails if the name is taken)."""
    run(["ip", "netns", "add", ns])
    try:
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
    except BaseException:
        run(["ip", "netns", "del", ns], check=False)
        raise


def delete(ns: str) -> None:
    if ns in names():
        run(["ip", "netns", "del", ns])


def pids(ns: str) -> list[int]:
    if ns not in names():
        return []
    return [int(pid) for pid in run(["ip", "netns", "pids", ns]).stdout.split()]


def sysctl(ns: str, settings: Mapping[str, str | int]) -> None:
    run(exec_argv(ns, ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items())]))


def add_bridge(ns: str, bridge: str) -> None:
    # ageing_time 0: never learn MACs, flood every frame like a hub, so a monitor port sees
    # unicast VRRP too; mcast_snooping 0: flood multicast to all ports regardless of IGMP/MLD.
    run(
        [
            "ip",
            "-n",
            ns,
            "link",
            "add",
            bridge,
            "type",
            "bridge",
            "ageing_time",
            "0",
            "mcast_snooping",
            "0",
        ]
    )
    run(["ip", "-n", ns, "link", "set", bridge, "up"])


def plug(bridge_ns: str, bridge: str, port: str, ns: str, ifname: str) -> None:
    """Connect `ns` to the bridge with a veth whose far end is `ifname` inside `ns`."""
    run(
        [
            "ip",
            "-n",
            bridge_ns,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            ifname,
            "netns",
            ns,
        ]
    )
    run(["ip", "-n", bridge_ns, "link", "set", port, "master", bridge, "up"])
    run(["ip", "-n", ns, "link", "set", ifname, "up"])


def add_address(ns: str, ifname: str, cidr: str) -> None:
    run(["ip", "-n", ns, "addr", "add", cidr, "dev", ifname])


def set_isolated(bridge_ns: str, port: str, on: bool) -> None:
    """Isolated ports cannot talk to each other but still reach non-isolated ones (the monitor)."""
    run(["bridge", "-n", bridge_ns, "link", "set", "dev", port, "isolated", "on" if on else "off"])


def set_link(ns: str, ifname: str, up: bool) -> None:
    run(["ip", "-n", ns, "link", "set", ifname, "up" if up else "down"])


def addresses(ns: str, ifname: str) -> set[str]:
    out = run(["ip", "-j", "-n", ns, "addr", "show", "dev", ifname]).stdout
    return {str(a["local"]) for link in json.loads(out) for a in link.get("addr_info", [])}
