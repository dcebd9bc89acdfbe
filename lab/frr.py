"""FRRouting's vrrpd on lab nodes: a second VRRP implementation, independent of keepalived.

vrrpd learns interfaces and addresses from zebra, so a node runs both. It sends and receives on
one macvlan per virtual router and family, carrying the virtual MAC and the VIPs, on the node's
interface; as backup it sets the macvlan protodown, so only the master answers for the VIP.
Both daemons run in the node's namespace through `Lab.exec_in`, in the foreground, so the lab
stops them by PID whatever the test did; the macvlans go with the namespace. They run as user
`frr` and read their configuration from a directory of the lab's workdir that `frr` owns. Their
sockets and PID files live in /var/run/frr/<pathspace>/, which `close` removes: FRR creates it and
nothing else would.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from lab import addressing, netns
from lab.config import Flavour, Instance
from lab.lab import Lab, LabError, wait_for
from lab.procs import Processes

DAEMONS = Path("/usr/lib/frr")
RUN_DIR = Path("/var/run/frr")
USER = "frr"
VTYSH = "vtysh"
START_TIMEOUT = 10.0


def unavailable() -> str | None:
    """Why FRR's vrrpd cannot be run here, or None: the skip reason for FRR tests."""
    missing = [d for d in ("zebra", "vrrpd") if not os.access(DAEMONS / d, os.X_OK)]
    if shutil.which(VTYSH) is None:
        missing.append(VTYSH)
    if missing:
        return f"not installed: {', '.join(missing)} (Debian package `frr`)"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"no user {USER!r} (the frr package creates it)"
    return None


def virtual_mac(inst: Instance) -> str:
    """RFC 5798 §7.3: 00-00-5E-00-01-{VRID} for IPv4, 00-00-5E-00-02-{VRID} for IPv6."""
    return f"00:00:5e:00:{2 if inst.flavour.ipv6 else 1:02x}:{inst.vrid:02x}"


def macvlan(inst: Instance) -> str:
    """The macvlan of the instance: vrrpd finds it by its MAC, the name only has to be unique."""
    return f"vrrp{6 if inst.flavour.ipv6 else 4}-{inst.vrid}"


def check(inst: Instance, node: int) -> None:
    """What vrrpd cannot do the way the instance says: refused here rather than misconfigured."""
    if inst.flavour not in (Flavour.V3, Flavour.V3_V6):
        raise ValueError(f"VRID {inst.vrid}: FRR runs only {Flavour.V3} and {Flavour.V3_V6} here")
    if node not in inst.priorities:
        raise ValueError(f"node {node} takes part in no FRR instance VRID {inst.vrid}")
    if not 1 <= inst.priorities[node] <= 254:  # 255 is reserved for the address owner
        raise ValueError(f"VRID {inst.vrid}: vrrpd takes priorities 1-254")


def render_config(node: int, instances: Iterable[Instance]) -> str:
    """vrrpd.conf for `node`: its instances, on the interface of each one's segment.

    FRR's advertisement-interval is in milliseconds (multiples of 10) where keepalived's is in
    seconds; the wire carries centiseconds in both cases."""
    mine = [inst for inst in instances if node in inst.priorities]
    if not mine:
        raise ValueError(f"node {node} takes part in no instance")
    lines = [f"hostname n{node}"]
    for interface in sorted({inst.interface for inst in mine}):
        lines.append(f"interface {interface}")
        for inst in (i for i in mine if i.interface == interface):
            check(inst, node)
            keyword = "ipv6" if inst.flavour.ipv6 else "ip"
            lines += [
                f" vrrp {inst.vrid} version 3",
                f" vrrp {inst.vrid} priority {inst.priorities[node]}",
                f" vrrp {inst.vrid} advertisement-interval {round(inst.advert_int * 1000)}",
                *(f" vrrp {inst.vrid} {keyword} {address}" for address in inst.vip_addresses),
            ]
        lines.append("exit")
    return "\n".join(lines) + "\n"


class Frr:
    """zebra and vrrpd on one node of `lab`, speaking the instances the node takes part in.

    `start` builds the macvlans and starts both daemons; `stop_vrrpd` and `start_vrrpd` take
    the router off the segment and back without touching zebra or the macvlans. A context
    manager: leaving it stops the daemons and removes their run directory."""

    def __init__(self, lab: Lab, node: int, instances: Iterable[Instance]) -> None:
        if reason := unavailable():
            raise LabError(f"cannot run FRR: {reason}")
        self.lab = lab
        self.node = node
        self.instances = tuple(inst for inst in instances if node in inst.priorities)
        for inst in self.instances:
            check(inst, node)
        self.ns = lab.ns(node)
        # The lab's prefix is unique among namespaces, so the pathspace is unique among labs.
        self.pathspace = f"{lab.prefix}-n{node}"
        self.run_dir = RUN_DIR / self.pathspace
        self.conf_dir = lab.workdir / f"frr-n{node}"
        self.zebra: subprocess.Popen[bytes] | None = None
        self.vrrpd: subprocess.Popen[bytes] | None = None
        self._owns_run_dir = False
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Macvlans, configs, zebra, then vrrpd; returns once vrrpd answers on its vty."""
        if self.zebra is not None:
            raise LabError(f"FRR on n{self.node} was already started")
        if self.run_dir.exists():  # never take over, or later delete, someone else's
            raise LabError(f"{self.run_dir} exists already")
        for inst in self.instances:
            self._add_macvlan(inst)
        self._write_configs()
        self._owns_run_dir = True
        self.zebra = self._spawn("zebra")
        self._wait_socket(self.zebra, "zebra", "zserv.api")
        self.start_vrrpd()
        return self

    def start_vrrpd(self) -> subprocess.Popen[bytes]:
        if self.vrrpd_running():
            raise LabError(f"vrrpd on n{self.node} is already running")
        (self.run_dir / "vrrpd.vty").unlink(missing_ok=True)  # stale after a SIGKILL
        self.vrrpd = self._spawn("vrrpd")
        self._wait_socket(self.vrrpd, "vrrpd", "vrrpd.vty")
        return self.vrrpd

    def stop_vrrpd(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM is vrrpd's orderly shutdown; SIGKILL leaves the segment without a word."""
        if self.vrrpd is None or self.vrrpd.poll() is not None:
            raise LabError(f"vrrpd on n{self.node} is not running")
        Processes.stop(self.vrrpd, sig)

    def vrrpd_running(self) -> bool:
        return self.vrrpd is not None and self.vrrpd.poll() is None

    def close(self) -> None:
        """Stop vrrpd, then zebra, and remove the run directory; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            for proc in (self.vrrpd, self.zebra):
                if proc is not None:
                    Processes.stop(proc)
        finally:
            if self._owns_run_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What of this router still exists after `close`."""
        found = [
            f"{name} {proc.pid}"
            for name, proc in (("vrrpd", self.vrrpd), ("zebra", self.zebra))
            if proc is not None and proc.poll() is None
        ]
        if self._owns_run_dir and self.run_dir.exists():
            found.append(f"directory {self.run_dir}")
        return found

    def _add_macvlan(self, inst: Instance) -> None:
        # addrgenmode after creation: `ip link add ... addrgenmode random type macvlan`, as FRR's
        # documentation has it, fails here ("Address family not supported by protocol").
        # random, not eui64: from the virtual MAC, every router's link-local would be the same,
        # and the IPv6 adverts' source could no longer tell the routers apart.
        name = macvlan(inst)
        ip = ["ip", "-n", self.ns, "link"]
        netns.run([*ip, "add", name, "link", inst.interface, "type", "macvlan", "mode", "bridge"])
        netns.run([*ip, "set", name, "address", virtual_mac(inst), "addrgenmode", "random"])
        for vip in inst.vips:
            netns.add_address(self.ns, name, vip)
        netns.run([*ip, "set", name, "up"])

    def _write_configs(self) -> None:
        # The daemons read their configs after dropping to user frr, which must therefore be
        # able to pass through the lab's workdir (root's, mode 0700): group frr may traverse it.
        frr = pwd.getpwnam(USER)
        os.chown(self.lab.workdir, -1, grp.getgrgid(frr.pw_gid).gr_gid)
        self.lab.workdir.chmod(0o710)
        self.conf_dir.mkdir()
        (self.conf_dir / "zebra.conf").write_text(f"hostname n{self.node}\n")
        (self.conf_dir / "vrrpd.conf").write_text(render_config(self.node, self.instances))
        for path in (self.conf_dir, *self.conf_dir.iterdir()):
            os.chown(path, frr.pw_uid, frr.pw_gid)

    def _spawn(self, daemon: str) -> subprocess.Popen[bytes]:
        # -P 0: no vty TCP port, the vty socket in the run directory is enough
        argv = [str(DAEMONS / daemon), "-N", self.pathspace, "-P", "0"]
        argv += ["-f", str(self.conf_dir / f"{daemon}.conf"), "--log", "stdout"]
        with self.log(daemon).open("ab") as out:
            return self.lab.exec_in(self.node, argv, stdout=out, stderr=out)

    def _wait_socket(self, proc: subprocess.Popen[bytes], daemon: str, socket: str) -> None:
        def ready() -> bool:
            if proc.poll() is not None:
                raise LabError(f"{daemon} exited with {proc.returncode}:\n{self.log_tail(daemon)}")
            return (self.run_dir / socket).exists()

        wait_for(ready, START_TIMEOUT, what=f"{daemon} on n{self.node}")

    # -- observation ---------------------------------------------------------------------------

    def log(self, daemon: str) -> Path:
        return self.lab.workdir / f"n{self.node}.{daemon}.log"

    def log_tail(self, daemon: str = "vrrpd", lines: int = 30) -> str:
        try:
            text = self.log(daemon).read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def show(self) -> list[dict[str, Any]]:
        """`show vrrp json`: vrrpd's own view of its virtual routers."""
        argv = [VTYSH, "-N", self.pathspace, "-c", "show vrrp json"]
        # vtysh warns on stderr that /etc/frr/<pathspace>/vtysh.conf is missing: harmless
        out = netns.run(argv).stdout
        routers: list[dict[str, Any]] = json.loads(out)
        return routers

    def router(self, inst: Instance) -> dict[str, Any]:
        """vrrpd's view of the instance's family: "status" ("Initialize", "Backup", "Master"),
        "stats" (adverts sent and received, state transitions), timers, addresses."""
        family = "v6" if inst.flavour.ipv6 else "v4"
        for router in self.show():
            if router.get("vrid") == inst.vrid:
                found: dict[str, Any] = router[family]
                return found
        raise LabError(f"vrrpd on n{self.node} has no VRID {inst.vrid}")

    def state(self, inst: Instance) -> str:
        return str(self.router(inst)["status"])

    def source(self, inst: Instance) -> str:
        """The source address of this router's adverts: IPv4 from the node's own address on the
        parent interface, IPv6 from the macvlan's link-local."""
        if not inst.flavour.ipv6:
            return addressing.host_ipv4(addressing.node_host(self.node), inst.segment)
        link_local = [a for a in netns.addresses(self.ns, macvlan(inst)) if a.startswith("fe80:")]
        if len(link_local) != 1:
            raise LabError(f"{macvlan(inst)} on n{self.node} has link-locals {link_local}")
        return link_local[0]
