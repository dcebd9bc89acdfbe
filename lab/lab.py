"""A lab of real keepalived nodes in network namespaces, with faults on demand.

Cleanup is what everything else rests on: tests fail and people press Ctrl-C, and a lab that left
keepalived advertising behind would poison the next run. So every process is tracked by PID and
every namespace by name, and `close` runs on normal exit, on exceptions including Ctrl-C, on
SIGTERM/SIGHUP and at interpreter exit; if the Python is SIGKILLed, its children still get a
SIGTERM from the kernel (`python -m lab clean` then removes the namespaces). Nothing runs or
sends in the root namespace.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from lab import addressing, firewall, netns
from lab.config import Instance, render_config
from lab.procs import (
    ExitSignals,
    File,
    Processes,
    Stage,
    adopt_orphans,
    parent_pid,
    reap,
    signals_deferred,
)

T = TypeVar("T")

# tcpdump's `vrrp` keyword misses IPv6 and AH-wrapped adverts.
CAPTURE_FILTER = "ip proto 112 or ip6 proto 112 or (ip proto 51 and ip[((ip[0]&0xf)<<2)] = 112)"
TOOLS = ("ip", "bridge", "keepalived", "tcpdump", "nft")

_NOTIFY_SCRIPT = """\
#!/bin/sh
# keepalived appends TYPE NAME STATE PRIORITY to the configured arguments
log=$1
shift
echo "$(date +%s.%N) $*" >> "$log"
"""


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says what and why."""


def unavailable() -> str | None:
    """Why this machine cannot run a lab, or None: the skip reason for lab tests."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    return f"not installed: {', '.join(missing)}" if missing else None


def wait_for(
    predicate: Callable[[], T | None], timeout: float, interval: float = 0.05, *, what: str = ""
) -> T:
    """Poll until `predicate` returns something truthy and return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__name__", "condition")
            raise TimeoutError(f"{name} not reached within {timeout:g} s")
        time.sleep(interval)


@dataclass
class Node:
    """One keepalived host: its namespace and the files its daemon reads and writes."""

    index: int
    ns: str
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"n{self.index}"

    def file(self, suffix: str) -> Path:
        """conf, log, fifo, fifo.log, notify.log, track, pid or vrrp.pid."""
        return self.workdir / f"{self.name}.{suffix}"


def _new_prefix() -> str:
    taken = {name.split("-", 1)[0] for name in netns.names()}
    while (prefix := f"ka{secrets.token_hex(2)}") in taken:
        pass
    return prefix


class Lab:
    """Real keepalived nodes in network namespaces, one flooding bridge per segment.

    Namespaces are `<prefix>-br` (the bridges), `<prefix>-mon` (a monitor port that is never
    isolated) and `<prefix>-n<i>` (node i, 192.0.2.(10+i) and 2001:db8:0:1::(10+i) on eth0).
    Nodes are numbered from 1; `instances` say which node takes part in which VRID.

    Process-wide effects while open: SIGTERM and SIGHUP raise SystemExit (unless the program
    handles them itself), and the process becomes a child subreaper so that keepalived's
    orphaned VRRP child can be reaped after a simulated crash.
    """

    _exit_signals = ExitSignals()

    def __init__(
        self,
        instances: Iterable[Instance],
        *,
        nodes: int | None = None,
        segments: int = 1,
        notify: str | None = None,
        track_weight: int = -60,
        keep_dir: bool = False,
        fifo_reader: bool = True,
    ) -> None:
        """`notify` is the keepalived notify command, `{node}` and `{dir}` filled in; by default
        a script appends `<time> TYPE NAME STATE PRIORITY` to `<dir>/n<i>.notify.log`.
        `track_weight` is what `set_priority_offset` takes off every instance of a node (0
        puts them in FAULT instead). `keep_dir` keeps configs and logs for a post-mortem.
        `fifo_reader=False` leaves each node's FIFO to a reader the caller starts before
        keepalived (which blocks until one opens it); `fifo_lines` is then empty."""
        if not 1 <= segments <= addressing.MAX_SEGMENTS:
            raise ValueError(f"segments must be 1-{addressing.MAX_SEGMENTS}")
        self._instances: dict[int, Instance] = {}
        for inst in instances:
            if inst.vrid in self._instances:
                raise ValueError(f"VRID {inst.vrid} given twice")
            if inst.segment >= segments:
                raise ValueError(f"VRID {inst.vrid} is on segment {inst.segment}; no such bridge")
            self._instances[inst.vrid] = inst
        members = [node for inst in self._instances.values() for node in inst.priorities]
        self._node_count = max(members, default=0) if nodes is None else nodes
        if max(members, default=0) > self._node_count or self._node_count < 1:
            raise ValueError(f"{self._node_count} nodes cannot hold these instances")
        self._segments = segments
        self._notify = notify
        self._track_weight = track_weight
        self._keep_dir = keep_dir
        self._fifo_reader = fifo_reader
        self.prefix = ""  # chosen when the lab opens
        self._workdir: Path | None = None
        self._namespaces: list[str] = []
        self._nodes: dict[int, Node] = {}
        self._procs = Processes()
        self._firewalled: set[int] = set()
        self._partitioned = False
        self._opened = False
        self._closed = False
        self._guarded = False

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> Self:
        """Build the topology and start the FIFO readers; keepalived starts with `start_all`."""
        if self._opened:
            raise LabError("a lab can be opened only once")
        reason = unavailable()
        if reason:
            raise LabError(f"cannot run a lab: {reason}")
        self._opened = True
        self.prefix = _new_prefix()
        atexit.register(self.close)
        self._guarded = Lab._exit_signals.acquire()
        try:
            adopt_orphans()
            with signals_deferred():
                self._workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
            script = self._workdir / "notify.sh"
            script.write_text(_NOTIFY_SCRIPT)
            script.chmod(0o755)
            bridge_ns = self._add_ns("br")
            # the bridge namespace only switches frames; its own IPv6 chatter would be noise
            netns.sysctl(
                bridge_ns,
                {"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1},
            )
            for segment in range(self._segments):
                netns.add_bridge(bridge_ns, f"br{segment}")
            self._wire("mon", addressing.MONITOR_HOST)
            for index in range(1, self._node_count + 1):
                self._add_node(index)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop everything the lab started, by PID, and remove its namespaces and files.

        Idempotent and best effort: every step runs even if an earlier one failed; a LabError
        at the end lists what went wrong."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []

        def attempt(what: str, step: Callable[[], object]) -> None:
            try:
                step()
            except Exception as exc:  # teardown must go on
                errors.append(f"{what}: {exc}")

        with signals_deferred():
            try:
                attempt("stopping processes", self._procs.stop_all)
                for index in sorted(self._firewalled):
                    attempt(f"firewall of n{index}", partial(self.firewall_allow, index))
                for ns in reversed(self._namespaces):
                    attempt(f"stragglers in {ns}", partial(_kill_stragglers, ns))
                for ns in reversed(self._namespaces):
                    attempt(f"deleting {ns}", partial(netns.delete, ns))
            finally:
                atexit.unregister(self.close)
                if self._guarded:
                    Lab._exit_signals.release()
                if self._workdir is not None and not self._keep_dir:
                    shutil.rmtree(self._workdir, ignore_errors=True)
        attempt("checking", lambda: errors.extend(f"left behind: {x}" for x in self.leftovers()))
        if errors:
            raise LabError(f"lab {self.prefix} cleanup incomplete: " + "; ".join(errors))

    def leftovers(self) -> list[str]:
        """What of this lab still exists; empty once `close` has done its job."""
        found = [f"process {pid}" for pid in self._procs.survivors()]
        if self.prefix:
            found += [f"namespace {ns}" for ns in netns.names() if ns.startswith(f"{self.prefix}-")]
        if self._workdir is not None and self._workdir.exists() and not self._keep_dir:
            found.append(f"directory {self._workdir}")
        return found

    # -- topology ------------------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise LabError("the lab is not open")
        return self._workdir

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(self._namespaces)

    @property
    def nodes(self) -> tuple[int, ...]:
        return tuple(sorted(self._nodes))

    @property
    def instances(self) -> tuple[Instance, ...]:
        return tuple(self._instances[vrid] for vrid in sorted(self._instances))

    @property
    def started_pids(self) -> tuple[int, ...]:
        """Every PID the lab started, including keepalived's VRRP children: for leak checks."""
        return self._procs.started

    def node(self, index: int) -> Node:
        try:
            return self._nodes[index]
        except KeyError:
            raise LabError(f"lab {self.prefix} has no node {index}") from None

    def instance(self, vrid: int) -> Instance:
        try:
            return self._instances[vrid]
        except KeyError:
            raise LabError(f"lab {self.prefix} has no VRID {vrid}") from None

    def ns(self, who: int | str) -> str:
        """Namespace of a node number, of a role ("mon", "br", "n2"), or a full name of ours."""
        if isinstance(who, int):
            return self.node(who).ns
        for name in (who, f"{self.prefix}-{who}"):
            if name in self._namespaces:
                return name
        raise LabError(f"lab {self.prefix} has no namespace {who!r}")

    def _add_ns(self, role: str) -> str:
        name = f"{self.prefix}-{role}"
        with signals_deferred():
            netns.add(name)  # fails if the name is taken: never record someone else's namespace
            self._namespaces.append(name)
        return name

    def _port(self, role: str, segment: int) -> str:
        return f"{role}-{segment}"

    def _wire(self, role: str, host: int) -> str:
        ns = self._add_ns(role)
        # No DAD: addresses (and the link-local source of IPv6 adverts) work at once.
        # keep_addr_on_down: `link(node, up=False)` must not cost the node its IPv6 addresses.
        netns.sysctl(
            ns,
            {
                "net.ipv6.conf.all.accept_dad": 0,
                "net.ipv6.conf.default.accept_dad": 0,
                "net.ipv6.conf.all.keep_addr_on_down": 1,
                "net.ipv6.conf.default.keep_addr_on_down": 1,
            },
        )
        for segment in range(self._segments):
            ifname = f"eth{segment}"
            netns.plug(self.ns("br"), f"br{segment}", self._port(role, segment), ns, ifname)
            ipv4 = addressing.host_ipv4(host, segment)
            ipv6 = addressing.host_ipv6(host, segment)
            netns.add_address(ns, ifname, f"{ipv4}/{addressing.IPV4_PREFIX}")
            netns.add_address(ns, ifname, f"{ipv6}/{addressing.IPV6_PREFIX}")
        return ns

    def _add_node(self, index: int) -> Node:
        node = Node(index, self._wire(f"n{index}", addressing.node_host(index)), self.workdir)
        self._nodes[index] = node
        if self._partitioned:
            self._isolate(node, True)
        # keepalived blocks on opening its notify FIFO until there is a reader. A reader that
        # holds the FIFO open read-write never sees EOF, so it outlives keepalived restarts.
        os.mkfifo(node.file("fifo"))
        if not self._fifo_reader:
            return node
        fd = os.open(node.file("fifo"), os.O_RDWR)
        try:
            with node.file("fifo.log").open("ab") as out:
                self._procs.spawn(["cat"], Stage.READER, stdin=fd, stdout=out)
        finally:
            os.close(fd)
        return node

    # -- keepalived ----------------------------------------------------------------------------

    def running(self, node: int) -> bool:
        proc = self.node(node).proc
        return proc is not None and proc.poll() is None

    def start(self, node: int) -> subprocess.Popen[bytes]:
        """Start keepalived on `node` and wait for its VRRP child; the config is rendered now,
        so a restart picks up nodes added since (a rogue as unicast peer)."""
        n = self.node(node)
        if self.running(node):
            raise LabError(f"keepalived on {n.name} is already running")
        notify = (
            f"{self.workdir / 'notify.sh'} {n.file('notify.log')}"
            if self._notify is None
            else self._notify.format(node=n.name, dir=self.workdir)
        )
        n.file("conf").write_text(
            render_config(
                node,
                self._instances.values(),
                fifo=n.file("fifo"),
                track_file=n.file("track"),
                track_weight=self._track_weight,
                notify=notify,
            )
        )
        for pidfile in (n.file("pid"), n.file("vrrp.pid")):
            pidfile.unlink(missing_ok=True)
        argv = ["keepalived", "-n", "-l", "-D", "-G", "-P", "-f", str(n.file("conf"))]
        argv += ["-p", str(n.file("pid")), "-r", str(n.file("vrrp.pid"))]
        with n.file("log").open("ab") as out:
            proc = self._procs.spawn(netns.exec_argv(n.ns, argv), stdout=out, stderr=out)
        n.proc = proc

        def vrrp_child() -> int | None:
            if proc.poll() is not None:
                raise LabError(
                    f"keepalived on {n.name} exited with {proc.returncode}:\n{self.log_tail(node)}"
                )
            return self._vrrp_pid(n)

        self._procs.note(wait_for(vrrp_child, 10, what=f"keepalived VRRP child on {n.name}"))
        return proc

    def start_all(self) -> None:
        for index in self.nodes:
            if any(index in inst.priorities for inst in self._instances.values()):
                self.start(index)

    def kill(self, node: int, sig: int = signal.SIGTERM) -> None:
        """SIGTERM stops keepalived gracefully (priority-0 adverts, VIPs removed); SIGKILL
        crashes it: no goodbye on the wire and the VIPs stay on eth0, as after a real crash.
        Other signals (SIGHUP reload, SIGUSR1 dump) are only delivered."""
        n = self.node(node)
        proc = n.proc
        if proc is None or proc.poll() is not None:
            raise LabError(f"keepalived on {n.name} is not running")
        if sig == signal.SIGKILL:
            # Freeze the parent first so it can neither respawn the VRRP child nor pass it a
            # SIGTERM (which would make it send priority-0 adverts) before both are dead.
            child = self._vrrp_pid(n)
            proc.send_signal(signal.SIGSTOP)
            if child is not None and parent_pid(child) == proc.pid:
                os.kill(child, signal.SIGKILL)
            proc.kill()
            proc.wait()
            if child is not None:
                reap(child)
        elif sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            Processes.stop(proc, sig)
        else:
            proc.send_signal(sig)

    def restart(self, node: int, sig: int = signal.SIGTERM) -> subprocess.Popen[bytes]:
        if self.running(node):
            self.kill(node, sig)
        return self.start(node)

    def _vrrp_pid(self, node: Node) -> int | None:
        try:
            return int(node.file("vrrp.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None  # not written yet, or caught half-written

    # -- other processes -----------------------------------------------------------------------

    def exec_in(
        self,
        who: int | str,
        argv: Sequence[str],
        *,
        stdout: File = subprocess.DEVNULL,
        stderr: File = subprocess.DEVNULL,
    ) -> subprocess.Popen[bytes]:
        """Start a command in one of the lab's namespaces; it is stopped with the lab."""
        return self._procs.spawn(netns.exec_argv(self.ns(who), argv), stdout=stdout, stderr=stderr)

    def run_in(
        self, who: int | str, argv: Sequence[str], *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command in one of the lab's namespaces and return its output."""
        return netns.run(netns.exec_argv(self.ns(who), argv), check=check)

    @contextlib.contextmanager
    def capture(
        self,
        path: str | os.PathLike[str],
        ns: int | str = "mon",
        ifname: str = "eth0",
        *,
        capture_filter: str = CAPTURE_FILTER,
    ) -> Iterator[Path]:
        """tcpdump VRRP (incl. IPv6 and AH-wrapped) inside `ns` into a pcap while the block runs.
        The monitor port floods like a hub, so it sees unicast adverts and partitioned nodes.
        `capture_filter` replaces the VRRP-only filter, e.g. to keep gratuitous ARP and NA too."""
        out = Path(path).resolve()
        errors = self.workdir / f"tcpdump-{out.stem}.log"
        argv = ["tcpdump", "-i", ifname, "-n", "-U", "--immediate-mode", "-Z", "root"]
        argv += ["-w", str(out), capture_filter]
        with errors.open("wb") as err:
            proc = self._procs.spawn(
                netns.exec_argv(self.ns(ns), argv), Stage.CAPTURE, stdout=err, stderr=err
            )
        try:
            wait_for(
                lambda: proc.poll() is not None or b"listening on" in errors.read_bytes(),
                5,
                what="tcpdump to start",
            )
            if proc.poll() is not None:
                raise LabError(f"tcpdump failed: {errors.read_text().strip()}")
            yield out
        finally:
            Processes.stop(proc)

    # -- faults --------------------------------------------------------------------------------

    def partition(self) -> None:
        """Cut every node off from every other (split brain); the monitor still hears all."""
        self._partitioned = True
        for node in self._nodes.values():
            self._isolate(node, True)

    def heal(self) -> None:
        self._partitioned = False
        for node in self._nodes.values():
            self._isolate(node, False)

    def _isolate(self, node: Node, on: bool) -> None:
        for segment in range(self._segments):
            netns.set_isolated(self.ns("br"), self._port(node.name, segment), on)

    def firewall_drop_vrrp(self, node: int) -> None:
        """Drop incoming VRRP (and AH) on `node`: it keeps advertising but hears nobody."""
        firewall.drop_vrrp(self.ns(node))
        self._firewalled.add(node)

    def firewall_allow(self, node: int) -> None:
        firewall.allow(self.ns(node))
        self._firewalled.discard(node)

    def set_priority_offset(self, node: int, on: bool) -> None:
        """Apply `track_weight` to all of the node's instances through its track_file."""
        self.node(node).file("track").write_text("1\n" if on else "0\n")

    def link(self, node: int, up: bool, segment: int = 0) -> None:
        netns.set_link(self.ns(node), f"eth{segment}", up)

    def rogue(self, vrid: int, priority: int | None = None) -> int:
        """Add and start a node that joins `vrid` with a higher priority than anyone (or
        `priority`), with the same authentication; returns its node number."""
        inst = self.instance(vrid)
        if priority is None:
            priority = min(254, max(inst.priorities.values()) + 50)
        index = max(self._nodes) + 1
        self._instances[vrid] = inst.with_node(index, priority)
        self._add_node(index)
        self.start(index)
        return index

    # -- observation ---------------------------------------------------------------------------

    def vips(self, node: int, segment: int = 0) -> set[str]:
        """All addresses on the node's interface, VIPs included."""
        return netns.addresses(self.ns(node), f"eth{segment}")

    def holders(self, vrid: int) -> set[int]:
        """Nodes with a running keepalived that hold the VRID's first VIP. A crashed
        keepalived leaves its VIPs behind, which says nothing about who is master."""
        inst = self.instance(vrid)
        vip = inst.vip_addresses[0]
        return {
            node
            for node in inst.priorities
            if self.running(node) and vip in self.vips(node, inst.segment)
        }

    def master_of(self, vrid: int) -> int | None:
        """The single node holding the VRID's VIP; None when nobody or several (split brain)."""
        holders = self.holders(vrid)
        return holders.pop() if len(holders) == 1 else None

    def fifo_lines(self, node: int) -> list[str]:
        """keepalived's notify FIFO lines, e.g. `INSTANCE "V3_51" MASTER 150`."""
        return _lines(self.node(node).file("fifo.log"))

    def notify_lines(self, node: int) -> list[str]:
        """Notify script lines, e.g. `1700000000.123 INSTANCE V3_51 MASTER 150`."""
        return _lines(self.node(node).file("notify.log"))

    def log_tail(self, node: int, lines: int = 30) -> str:
        """The end of the node's keepalived output, for assertion messages."""
        return "\n".join(_lines(self.node(node).file("log"))[-lines:])


def _kill_stragglers(ns: str) -> None:
    """Whatever still runs in a namespace after its tracked processes stopped (a script keepalived
    started, a grandchild of `exec_in`) would keep the namespace alive after `ip netns del`."""
    Processes.kill_all(netns.pids(ns))


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
