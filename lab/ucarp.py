"""ucarp, a CARP speaker, in a node of the lab: the neighbour a VRRP segment may share with
pfSense, OPNsense or FreeBSD hosts.

CARP uses IP protocol 112 and 224.0.0.18 like VRRP, and its first byte (version 2, type 1) is
VRRPv2's; a vhid equal to a VRID on one segment is a real conflict. ucarp runs in a node's
namespace, started with `Lab.exec_in`, so the lab stops it by PID whatever the test did. Its up
and down scripts are `/bin/true` unless `manage_vip` is set, in which case they add and remove the
VIP on the node's interface: inside that namespace only, since ucarp runs there.

Only a CARP master advertises: ucarp starts as backup and sends its first advert about three
advbase intervals later. ucarp 1.5 sends from 00:00:5e:00:00:<vhid> (carp(4) uses
00:00:5e:00:01:<vhid>, VRRP's virtual MAC), over IPv4 only.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass

from lab import addressing
from lab.lab import Lab, LabError
from lab.procs import Processes

UCARP = "ucarp"
PASSWORD = "carpsecret"  # CARP authenticates with an HMAC-SHA1 over this, never sent

_SCRIPT = """\
#!/bin/sh
# ucarp runs this as: SCRIPT INTERFACE VIP [XPARAM]
ip address {verb} "$2/{prefix}" dev "$1" {tail}
"""


def unavailable() -> str | None:
    """Why ucarp cannot be run here, or None."""
    return None if shutil.which(UCARP) else f"not installed: {UCARP}"


@dataclass(frozen=True)
class Carp:
    """One CARP group spoken by ucarp on `node` (a lab node; give the lab enough `nodes`).

    A CARP advert goes out every advbase + advskew/256 seconds; the speaker with the lowest
    interval is master. ucarp speaks IPv4 only. `vip` defaults to the address a keepalived VRID
    of the same number would use: it is only hashed into the advert unless `manage_vip`."""

    vhid: int
    node: int
    advbase: int = 1
    advskew: int = 0
    password: str = PASSWORD
    vip: str = ""
    segment: int = 0
    preempt: bool = True
    manage_vip: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.vhid <= 255:
            raise ValueError(f"vhid must be 1-255, not {self.vhid}")
        if not 1 <= self.advbase <= 255:
            raise ValueError(f"advbase must be 1-255 s, not {self.advbase}")
        if not 0 <= self.advskew <= 254:
            raise ValueError(f"advskew must be 0-254, not {self.advskew}")
        addressing.node_host(self.node)
        if not self.vip:
            object.__setattr__(self, "vip", addressing.vip_ipv4(self.vhid, self.segment))

    @property
    def interface(self) -> str:
        return f"eth{self.segment}"

    @property
    def source(self) -> str:
        """The node's own address: the source of its adverts."""
        return addressing.host_ipv4(addressing.node_host(self.node), self.segment)

    @property
    def interval(self) -> float:
        return self.advbase + self.advskew / 256


class Ucarp:
    """ucarp speaking `carp` in its node's namespace until `stop` (or the lab closes).

    ucarp logs to stderr as well as syslog; `log` holds that output."""

    def __init__(self, lab: Lab, carp: Carp) -> None:
        if reason := unavailable():
            raise LabError(f"cannot run ucarp: {reason}")
        self.lab = lab
        self.carp = carp
        self.ns = lab.ns(carp.node)
        name = f"ucarp-n{carp.node}-{carp.vhid}"
        self.log = lab.workdir / f"{name}.log"
        up = down = "/bin/true"
        if carp.manage_vip:
            up = self._script(f"{name}-up.sh", "add", "")
            down = self._script(f"{name}-down.sh", "del", "2>/dev/null || true")
        argv = [
            UCARP,
            f"--interface={carp.interface}",
            f"--srcip={carp.source}",
            f"--vhid={carp.vhid}",
            f"--pass={carp.password}",
            f"--addr={carp.vip}",
            f"--advbase={carp.advbase}",
            f"--advskew={carp.advskew}",
            f"--upscript={up}",
            f"--downscript={down}",
            "--shutdown",  # the down script on exit: no VIP left behind
        ]
        if carp.preempt:
            argv.append("--preempt")
        self.argv = tuple(argv)
        with self.log.open("ab") as out:
            self.proc: subprocess.Popen[bytes] = lab.exec_in(
                carp.node, argv, stdout=out, stderr=out
            )

    def _script(self, name: str, verb: str, tail: str) -> str:
        path = self.lab.workdir / name
        path.write_text(_SCRIPT.format(verb=verb, prefix=addressing.IPV4_PREFIX, tail=tail))
        path.chmod(0o755)
        return str(path)

    def running(self) -> bool:
        return self.proc.poll() is None

    def log_lines(self) -> list[str]:
        try:
            return self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def describe(self) -> str:
        state = "running" if self.running() else f"exited {self.proc.returncode}"
        tail = "\n".join(self.log_lines()[-15:])
        return f"ucarp vhid {self.carp.vhid} on n{self.carp.node} ({state}); log tail:\n{tail}"

    def master(self) -> bool:
        """ucarp says it switched to MASTER (and has not gone back to BACKUP since)."""
        state = None
        for line in self.log_lines():
            if "Switching to state: MASTER" in line:
                state = True
            elif "Switching to state: BACKUP" in line:
                state = False
        return bool(state)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        Processes.stop(self.proc, sig)
        return self.proc.returncode
