"""Chaos against ground truth: random faults on real keepalived, checked against keepalived itself.

A cluster of three nodes (the double-master pair, VRIDs 10 and 11 on n1/n2, and an IPv6 VRRPv3
VRID 12 on n1-n3) is watched by a real ka-exporter in the monitor namespace. Faults are drawn
from a seeded `random.Random`, so a run is reproducible. After each fault the run waits the
slowest Master_Down_Interval + 1 s, then compares, for every VRID:

- ground truth: the nodes whose keepalived is running and whose latest notify-FIFO state for the
  instance (since that keepalived started) is MASTER; a node in FAULT or BACKUP is no master;
- expected: the part of the ground truth the monitor can observe. The lab's partition isolates
  the nodes from each other but never from the monitor's bridge port, so a partition hides
  nobody; a node whose link is down is unheard, so it is left out (keepalived puts it in FAULT
  anyway, so in practice nothing is left out, and the check would show it if not);
- seen: the exporter's `vrrp_master_info` addresses for the VRID, mapped back to nodes, and its
  `vrrp_split_brain`, which must be 1 exactly when more than one node is expected.

The comparison is retried for up to two advert intervals before a mismatch is recorded: the
exporter lags keepalived by design (a master that went quiet stays acting for 1.5 intervals,
split-brain is debounced for 2). While waiting, both sides are sampled every WATCH seconds: an
exporter that shows a split-brain keepalived never had in the window is a mismatch too.
"""

from __future__ import annotations

import enum
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ka_exporter.notify.keepalived import ParseError, parse_fifo_line
from lab.addressing import host_ipv4, node_host
from lab.config import Flavour, Instance, double_master
from lab.exporter import NsExporter
from lab.lab import Lab

MAX_AGE = 3  # faults a partition, a stopped node, a downed link or a firewall lasts at most
GRACE_INTERVALS = 2.0  # retrying the comparison this many advert intervals past the wait
SETTLE_MARGIN = 1.0  # seconds over the slowest Master_Down_Interval before comparing
BASELINE_GRACE = 10.0  # seconds for the first election and the exporter's first look
POLL = 0.1  # seconds between comparisons in the grace
WATCH = 0.2  # seconds between samples while waiting: a split-brain lasts 2 intervals at least


class Kind(enum.StrEnum):
    SIGKILL = "sigkill"
    SIGTERM = "sigterm"
    START = "start"
    PARTITION = "partition"
    HEAL = "heal"
    PRIORITY = "priority"  # toggles the node's track_file weight on all its instances
    LINK_DOWN = "link-down"
    LINK_UP = "link-up"
    EXPORTER = "exporter-restart"
    FIREWALL = "firewall"  # the node drops incoming VRRP: it keeps advertising, hears nobody
    UNFIREWALL = "unfirewall"


@dataclass(frozen=True, order=True)
class Fault:
    kind: Kind
    node: int | None = None

    def __str__(self) -> str:
        return f"{self.kind} n{self.node}" if self.node is not None else str(self.kind)


def cluster(advert_int: float = 1.0) -> list[Instance]:
    """The chaos cluster: every node masters one VRID."""
    return [
        *double_master(10, 11, advert_int=advert_int),
        Instance(12, Flavour.V3_V6, {1: 100, 2: 120, 3: 150}, advert_int),
    ]


@dataclass
class Condition:
    """What the faults so far have done to the cluster; ages count faults since each began."""

    members: Mapping[int, frozenset[int]]  # VRID -> its nodes
    stopped: dict[int, int] = field(default_factory=dict)
    links_down: dict[int, int] = field(default_factory=dict)
    firewalled: dict[int, int] = field(default_factory=dict)
    lowered: set[int] = field(default_factory=set)
    partitioned: int | None = None

    @property
    def nodes(self) -> list[int]:
        return sorted(set().union(*self.members.values()))

    def up(self, node: int) -> bool:
        """Running and on the wire: able to be a master the monitor hears."""
        return node not in self.stopped and node not in self.links_down

    def _can_lose(self, node: int) -> bool:
        """Every VRID keeps a node that is up if `node` goes down."""
        return all(any(n != node and self.up(n) for n in m) for m in self.members.values())

    def candidates(self) -> list[Fault]:
        found = [
            Fault(Kind.EXPORTER),
            Fault(Kind.HEAL if self.partitioned is not None else Kind.PARTITION),
        ]
        for n in self.nodes:
            if n in self.stopped:
                found.append(Fault(Kind.START, n))
            else:
                found.append(Fault(Kind.PRIORITY, n))
                if self._can_lose(n):
                    found += [Fault(Kind.SIGKILL, n), Fault(Kind.SIGTERM, n)]
            if n in self.links_down:
                found.append(Fault(Kind.LINK_UP, n))
            elif self._can_lose(n):
                found.append(Fault(Kind.LINK_DOWN, n))
            found.append(Fault(Kind.UNFIREWALL if n in self.firewalled else Kind.FIREWALL, n))
        return found

    def overdue(self) -> Fault | None:
        """The oldest partition, stopped node, downed link or firewall that has lasted MAX_AGE
        faults."""
        due = [(age, Fault(Kind.START, n)) for n, age in self.stopped.items()]
        due += [(age, Fault(Kind.LINK_UP, n)) for n, age in self.links_down.items()]
        due += [(age, Fault(Kind.UNFIREWALL, n)) for n, age in self.firewalled.items()]
        if self.partitioned is not None:
            due.append((self.partitioned, Fault(Kind.HEAL)))
        due = [item for item in due if item[0] >= MAX_AGE]
        return max(due)[1] if due else None

    def apply(self, fault: Fault) -> None:
        for ages in (self.stopped, self.links_down, self.firewalled):
            for n in ages:
                ages[n] += 1
        if self.partitioned is not None:
            self.partitioned += 1
        node = fault.node if fault.node is not None else 0
        match fault.kind:
            case Kind.SIGKILL | Kind.SIGTERM:
                self.stopped[node] = 0
            case Kind.START:
                del self.stopped[node]
                self.lowered.discard(node)  # keepalived rewrites the track file as it starts
            case Kind.LINK_DOWN:
                self.links_down[node] = 0
            case Kind.LINK_UP:
                del self.links_down[node]
            case Kind.FIREWALL:
                self.firewalled[node] = 0
            case Kind.UNFIREWALL:
                del self.firewalled[node]
            case Kind.PARTITION:
                self.partitioned = 0
            case Kind.HEAL:
                self.partitioned = None
            case Kind.PRIORITY:
                self.lowered ^= {node}
            case Kind.EXPORTER:
                pass


def members(instances: Iterable[Instance]) -> dict[int, frozenset[int]]:
    return {inst.vrid: frozenset(inst.priorities) for inst in instances}


def schedule(seed: int, faults: int, instances: Sequence[Instance]) -> list[Fault]:
    """The run's faults: a kind drawn evenly among those the cluster allows now, then a node;
    whatever has lasted MAX_AGE faults is undone first. The same seed gives the same list."""
    rng = random.Random(seed)
    condition = Condition(members(instances))
    plan: list[Fault] = []
    for _ in range(faults):
        fault = condition.overdue()
        if fault is None:
            allowed = condition.candidates()
            kind = rng.choice(sorted({f.kind for f in allowed}))
            fault = rng.choice(sorted(f for f in allowed if f.kind is kind))
        condition.apply(fault)
        plan.append(fault)
    return plan


# -- ground truth and the comparison ---------------------------------------------------------


def latest_states(lines: Iterable[str]) -> dict[str, str]:
    """Instance name -> the last state keepalived wrote to its notify FIFO. Priority events say
    nothing about the state; a line still being written does not parse and is skipped."""
    states: dict[str, str] = {}
    for line in lines:
        try:
            note = parse_fifo_line(line)
        except ParseError:
            continue
        if note.type == "INSTANCE" and note.is_state:
            states[note.name] = note.state
    return states


def truth(states: Mapping[int, Mapping[str, str]], inst: Instance) -> frozenset[int]:
    """The instance's masters by keepalived's own word; `states` holds running nodes only."""
    return frozenset(
        node
        for node, latest in states.items()
        if node in inst.priorities and latest.get(inst.name) == "MASTER"
    )


@dataclass(frozen=True)
class Check:
    vrid: int
    truth: frozenset[int]  # keepalived's masters
    expected: frozenset[int]  # the part of them the monitor can hear
    seen: frozenset[int]  # the exporter's masters, as nodes
    unknown: frozenset[str]  # exporter masters that are no node's address
    split_brain: bool  # the exporter's vrrp_split_brain

    @property
    def ok(self) -> bool:
        return (
            self.seen == self.expected
            and not self.unknown
            and self.split_brain == (len(self.expected) > 1)
        )

    def describe(self) -> str:
        text = _nodes(self.expected) + (" SB" if len(self.expected) > 1 else "")
        if self.truth != self.expected:
            text += f" (unheard {_nodes(self.truth - self.expected)})"
        if not self.ok:
            seen = sorted(f"n{n}" for n in self.seen) + sorted(self.unknown)
            text += f" != exporter {'+'.join(seen) or '-'}" + " SB" * self.split_brain
        return text


def compare(
    inst: Instance,
    truth_masters: frozenset[int],
    heard: Callable[[int], bool],
    exporter_masters: Iterable[str],
    split_brain: bool,
    addresses: Mapping[str, int],
) -> Check:
    """One VRID's comparison: `heard(node)` says whether the monitor can hear the node,
    `addresses` maps advert source addresses to nodes."""
    shown = set(exporter_masters)
    return Check(
        inst.vrid,
        truth_masters,
        frozenset(n for n in truth_masters if heard(n)),
        frozenset(addresses[a] for a in shown if a in addresses),
        frozenset(a for a in shown if a not in addresses),
        split_brain,
    )


def _nodes(nodes: Iterable[int]) -> str:
    return "+".join(f"n{n}" for n in sorted(nodes)) or "-"


@dataclass(frozen=True)
class Result:
    index: int  # 0 is the baseline before the first fault
    fault: Fault | None
    seconds: float  # from the fault to the final comparison
    attempts: int  # comparisons made after the wait
    checks: tuple[Check, ...]
    false_alarms: frozenset[int] = frozenset()  # VRIDs shown split-brain that never were

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks) and not self.false_alarms


def false_alarms(samples: Iterable[Sequence[Check]], carried: frozenset[int]) -> frozenset[int]:
    """VRIDs the exporter called split-brain in some sample of a fault's window although more
    than one master was expected in none of them, nor at the end of the window before
    (`carried`: the exporter's split-brain rightly lingers a moment after a real one ends).
    A real one lasts the exporter's 2-interval debounce at least, so sampling catches it."""
    flagged, real = set(), set(carried)
    for checks in samples:
        flagged |= {c.vrid for c in checks if c.split_brain}
        real |= {c.vrid for c in checks if len(c.expected) > 1}
    return frozenset(flagged - real)


def row(result: Result) -> str:
    """One line of the per-fault table."""
    cells = "  ".join(f"{c.vrid}: {c.describe():<10}" for c in result.checks)
    verdict = "ok" if result.ok else "MISMATCH"
    if result.false_alarms:
        verdict += " false split-brain in " + ", ".join(map(str, sorted(result.false_alarms)))
    fault = str(result.fault) if result.fault else "baseline"
    return f"{result.index:3}  {fault:<18} {result.seconds:5.1f} s  {cells}  {verdict}"


def summary(results: Sequence[Result], seconds: float) -> str:
    faults = [r for r in results if r.fault is not None]
    bad = [r for r in results if not r.ok]
    retried = sum(1 for r in faults if r.ok and r.attempts > 1)
    kinds = Counter(str(r.fault.kind) for r in faults if r.fault is not None)
    mix = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
    return (
        f"{len(faults)} faults, {len(bad)} with a mismatch, {seconds:.0f} s; "
        f"{retried} agreed only in the grace\nfaults by kind: {mix}"
    )


# -- the run ---------------------------------------------------------------------------------


class _Chaos:
    def __init__(
        self, lab: Lab, instances: Sequence[Instance], exporter_args: Sequence[str]
    ) -> None:
        self.lab = lab
        self.instances = instances
        self.condition = Condition(members(instances))
        advert = max(inst.advert_int for inst in instances)
        self.wait = SETTLE_MARGIN + max(
            inst.master_down_interval(n) for inst in instances for n in inst.priorities
        )
        self.grace = GRACE_INTERVALS * advert
        self.offsets: dict[int, int] = {}  # FIFO lines written before each node's keepalived
        self.carried: frozenset[int] = frozenset()  # VRIDs split at the last comparison
        self.addresses: dict[str, int] = {}
        for n in lab.nodes:
            self.addresses[host_ipv4(node_host(n))] = n
            self.addresses.update({a: n for a in lab.vips(n) if a.startswith("fe80:")})
        for n in lab.nodes:
            self._start(n)
        self.exporter = NsExporter(lab, "mon", args=exporter_args)
        self.exporter.wait_ready()

    def _start(self, node: int) -> None:
        self.offsets[node] = len(self.lab.fifo_lines(node))
        self.lab.start(node)

    def inject(self, fault: Fault) -> None:
        lab, node = self.lab, fault.node if fault.node is not None else 0
        match fault.kind:
            case Kind.SIGKILL:
                lab.kill(node, signal.SIGKILL)
            case Kind.SIGTERM:
                lab.kill(node, signal.SIGTERM)
            case Kind.START:
                self._start(node)
            case Kind.PARTITION:
                lab.partition()
            case Kind.HEAL:
                lab.heal()
            case Kind.PRIORITY:
                lab.set_priority_offset(node, node not in self.condition.lowered)
            case Kind.LINK_DOWN | Kind.LINK_UP:
                lab.link(node, fault.kind is Kind.LINK_UP)
            case Kind.FIREWALL:
                lab.firewall_drop_vrrp(node)
            case Kind.UNFIREWALL:
                lab.firewall_allow(node)
            case Kind.EXPORTER:
                self.exporter.stop()
                old = self.exporter
                self.exporter = NsExporter(self.lab, "mon", old.port, old.args)
                self.exporter.wait_ready()
        self.condition.apply(fault)

    def compare(self) -> tuple[Check, ...]:
        states = {
            n: latest_states(self.lab.fifo_lines(n)[self.offsets[n] :])
            for n in self.lab.nodes
            if self.lab.running(n)
        }
        scrape = self.exporter.scrape()
        return tuple(
            compare(
                inst,
                truth(states, inst),
                lambda n: n not in self.condition.links_down,
                scrape.masters(inst),
                scrape.of("vrrp_split_brain", inst) == 1,
                self.addresses,
            )
            for inst in self.instances
        )

    def settle(
        self, index: int, fault: Fault | None, since: float, wait: float, grace: float
    ) -> Result:
        """Watches for false split-brains while waiting, then compares until everything
        agrees or the grace is over."""
        samples = []
        while time.monotonic() < since + wait:
            samples.append(self.compare())
            time.sleep(min(WATCH, max(0.0, since + wait - time.monotonic())))
        deadline = time.monotonic() + grace
        attempts = 0
        while True:
            checks = self.compare()
            samples.append(checks)
            attempts += 1
            if all(c.ok for c in checks) or time.monotonic() >= deadline:
                break
            time.sleep(POLL)
        alarms = false_alarms(samples, self.carried)
        self.carried = frozenset(c.vrid for c in checks if len(c.expected) > 1)
        return Result(index, fault, time.monotonic() - since, attempts, checks, alarms)


def run(
    seed: int,
    faults: int,
    *,
    advert_int: float = 1.0,
    report: Callable[[Result], None] | None = None,
    keep_dir: bool = False,
    exporter_args: Sequence[str] = (),
    opened: Callable[[Lab], None] | None = None,
) -> list[Result]:
    """Runs `faults` seeded faults against a fresh lab; one result per fault after the
    baseline (index 0). `report` sees each result as it comes; `exporter_args` are further
    ka-exporter flags (model settings, say); `opened` sees the lab once it is up."""
    instances = cluster(advert_int)
    plan = schedule(seed, faults, instances)
    results: list[Result] = []

    def record(result: Result) -> None:
        results.append(result)
        if report is not None:
            report(result)

    with Lab(instances, keep_dir=keep_dir) as lab:
        if opened is not None:
            opened(lab)
        chaos = _Chaos(lab, instances, exporter_args)
        record(chaos.settle(0, None, time.monotonic(), chaos.wait, BASELINE_GRACE))
        for index, fault in enumerate(plan, 1):
            since = time.monotonic()
            chaos.inject(fault)
            record(chaos.settle(index, fault, since, chaos.wait, chaos.grace))
    return results
