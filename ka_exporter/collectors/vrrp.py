"""VRIDs and their routers: most of a large site's samples, kept as text across scrapes.

Each VRID keeps the lines it last wrote, family by family, and each router its own. A scrape
compares the model's values with those the lines were written from and writes again only the
lines whose value changed (on a steady site, each master's advert count and last-advert time),
then joins the VRIDs' texts family by family, again only for the families where one changed.
The model is read in place rather than through `snapshot()`: the scrape runs on the event loop
and is done before the model next changes. `plain()` is the same exposition computed from a
snapshot, row by row, without any of this: it gives the families' samples to other readers
(prometheus_client's encoders) and is what the tests hold the kept text against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

from prometheus_client.registry import Collector

from ka_exporter.exposition import Family, LabelSet, Rendered, Rows, line, sample_name
from ka_exporter.metrics import METRICS, Families, LocalState, segment_labels
from ka_exporter.model import MISMATCH_FIELDS, Model, Router, Vrid, VridKey, VridView
from ka_exporter.ownership import ownership

NAMES = (
    "vrrp_masters",
    "vrrp_master",
    "vrrp_split_brain",
    "vrrp_split_brain_events",
    "vrrp_master_transitions",
    "vrrp_last_transition_timestamp_seconds",
    "vrrp_config_mismatch",
    "vrrp_router_priority",
    "vrrp_router_advertisements",
    "vrrp_router_advert_interval_seconds",
    "vrrp_router_last_advert_timestamp_seconds",
    "vrrp_router_resignations",
    "vrrp_router_master",
    "vrrp_router_expected",
    "vrrp_local_vip",
    "vrrp_local_master",
    "vrrp_duplicate_vip",
    "vrrp_orphan_vip",
    "vrrp_carp_collision",
)
(
    MASTERS, MASTER, SPLIT, SPLIT_EVENTS, TRANSITIONS, LAST_TRANSITION, MISMATCH,
    PRIORITY, ADVERTS, INTERVAL, LAST_SEEN, RESIGNATIONS, ROUTER_MASTER, EXPECTED,
    LOCAL_VIP, LOCAL_MASTER, DUPLICATE, ORPHAN, COLLISION,
) = range(len(NAMES))  # fmt: skip
SAMPLES = tuple(sample_name(name, METRICS[name][0]) for name in NAMES)
# the families of a router's own values, in the order RouterLines.lines() writes them
ROUTER_FAMILIES = (PRIORITY, ADVERTS, INTERVAL, LAST_SEEN, RESIGNATIONS)
ROUTER_SAMPLES = tuple(SAMPLES[f] for f in ROUTER_FAMILIES)
ALL = (1 << len(NAMES)) - 1


class VridLabels:
    """The label sets of one VRID's series, kept across scrapes while its routers stay."""

    __slots__ = ("agreed", "base", "fields", "routers", "vips")

    def __init__(self, key: VridKey) -> None:
        self.base = segment_labels(key.segment).extend(family=key.family, vrid=str(key.vrid))
        self.fields = {name: self.base.extend(field=name) for name in MISMATCH_FIELDS}
        name = SAMPLES[MISMATCH]
        self.agreed = "".join(line(name, labels, 0) for labels in self.fields.values())
        self.routers: dict[str, LabelSet] = {}
        self.vips: dict[str, LabelSet] = {}

    def router(self, address: str) -> LabelSet:
        labels = self.routers.get(address)
        if labels is None:
            labels = self.routers[address] = self.base.extend(address=address)
        return labels

    def vip(self, vip: str) -> LabelSet:
        labels = self.vips.get(vip)
        if labels is None:
            labels = self.vips[vip] = self.base.extend(vip=vip)
        return labels


class RouterLines:
    """A router's values as its lines show them, each kept in a slot of its own: comparing them
    one by one builds nothing, so a scrape leaves the garbage collector nothing to do."""

    __slots__ = (
        "adverts", "interval", "labels", "last_seen", "priority", "resignations", "router", "vips",
    )  # fmt: skip

    def __init__(self, router: Router, labels: LabelSet) -> None:
        self.router = router
        self.labels = labels
        self.priority = router.priority
        self.adverts = router.adverts
        self.interval = router.interval
        self.last_seen = router.last_seen
        self.resignations = router.resignations
        self.vips = router.vips

    def lines(self) -> list[str]:
        """Its lines in ROUTER_FAMILIES order."""
        values = (self.priority, self.adverts, self.interval, self.last_seen, self.resignations)
        return [line(s, self.labels, v) for s, v in zip(ROUTER_SAMPLES, values, strict=True)]


class VridLines:
    """One VRID's text in each family, and what it was written from."""

    __slots__ = (
        "acting", "chunks", "collision", "expected", "held", "labels", "last_transition", "lines",
        "mismatches", "routers", "split_brain", "split_brain_events", "transitions",
    )  # fmt: skip

    def __init__(self, key: VridKey) -> None:
        self.labels = VridLabels(key)
        self.chunks = [""] * len(NAMES)
        self.routers: list[RouterLines] = []
        self.lines: list[list[str]] = []  # ROUTER_FAMILIES order -> each router's line
        self.acting: frozenset[str] = frozenset()
        self.held: frozenset[str] | None = None
        self.expected: frozenset[str] = frozenset()
        self.split_brain = False
        self.split_brain_events = 0
        self.transitions = 0
        self.last_transition: float | None = None
        self.mismatches: frozenset[str] = frozenset()
        self.collision = False

    def update(
        self,
        vrid: Vrid,
        collision: bool,
        held: frozenset[str] | None,
        expected: frozenset[str],
        columns: list[list[str]],
        i: int,
    ) -> int:
        """Brings the text up to the model's VRID, writing what changed into row `i` of the
        families' columns; returns the changed families as bits. The hot path of a scrape: one
        pass per VRID, the values of each router heard since compared with those its lines show,
        nothing allocated while nothing changed."""
        routers, kept = vrid.routers, self.routers
        if len(routers) != len(kept):
            return self._render_into(vrid, collision, held, expected, columns, i)
        changed, vips = 0, False
        priority, adverts, interval, last_seen, resignations = self.lines
        for n, r in enumerate(routers.values()):
            k = kept[n]
            if r is not k.router:
                return self._render_into(vrid, collision, held, expected, columns, i)
            if r.adverts == k.adverts:
                # The model changes a router's values only with an advert, which it counts:
                # the same count, the same values.
                continue
            k.adverts = r.adverts
            adverts[n] = line(ROUTER_SAMPLES[1], k.labels, r.adverts)
            changed |= 1 << ADVERTS
            if r.last_seen != k.last_seen:
                k.last_seen = r.last_seen
                last_seen[n] = line(ROUTER_SAMPLES[3], k.labels, r.last_seen)
                changed |= 1 << LAST_SEEN
            if r.priority != k.priority:
                k.priority = r.priority
                priority[n] = line(ROUTER_SAMPLES[0], k.labels, r.priority)
                changed |= 1 << PRIORITY
            if r.interval != k.interval:
                k.interval = r.interval
                interval[n] = line(ROUTER_SAMPLES[2], k.labels, r.interval)
                changed |= 1 << INTERVAL
            if r.resignations != k.resignations:
                k.resignations = r.resignations
                resignations[n] = line(ROUTER_SAMPLES[4], k.labels, r.resignations)
                changed |= 1 << RESIGNATIONS
            if r.vips is not k.vips:
                k.vips, vips = r.vips, True
        if changed:
            chunks = self.chunks
            for f, lines in zip(ROUTER_FAMILIES, self.lines, strict=True):
                if changed >> f & 1:
                    chunks[f] = columns[f][i] = "".join(lines)
        if (
            vrid.split_brain != self.split_brain
            or vrid.split_brain_events != self.split_brain_events
            or vrid.transitions != self.transitions
            or vrid.last_transition != self.last_transition
            or vrid.mismatches != self.mismatches
            or collision != self.collision
        ):
            changed |= self._scalars(vrid, collision, columns, i)
        masters = vrid.acting != self.acting
        if masters:
            changed |= self._masters(vrid, columns, i)
        if expected is not self.expected and expected != self.expected:
            changed |= self._expected(expected, columns, i)
        if masters or vips or (held is not self.held and held != self.held):
            changed |= self._ownership(vrid, held, columns, i)
        return changed

    def _render_into(
        self,
        vrid: Vrid,
        collision: bool,
        held: frozenset[str] | None,
        expected: frozenset[str],
        columns: list[list[str]],
        i: int,
    ) -> int:
        self._render(vrid, collision, held, expected)
        for f, column in enumerate(columns):
            column[i] = self.chunks[f]
        return ALL

    def _render(
        self, vrid: Vrid, collision: bool, held: frozenset[str] | None, expected: frozenset[str]
    ) -> None:
        """Everything anew: the VRID is new, or routers came or went. Labels of routers gone are
        dropped with them, so churn of spoofed sources cannot grow the cache."""
        if len(self.labels.routers) > len(vrid.routers):
            self.labels = VridLabels(vrid.key)
        router = self.labels.router
        self.routers = [RouterLines(r, router(a)) for a, r in vrid.routers.items()]
        by_router = [k.lines() for k in self.routers]
        self.lines = [[lines[j] for lines in by_router] for j in range(len(ROUTER_FAMILIES))]
        for f, lines in zip(ROUTER_FAMILIES, self.lines, strict=True):
            self.chunks[f] = "".join(lines)
        columns = [[""] for _ in NAMES]  # the chunks are copied out by the caller
        self._scalars(vrid, collision, columns, 0)
        self._masters(vrid, columns, 0)
        self._expected(expected, columns, 0)
        self._ownership(vrid, held, columns, 0)

    def _set(self, f: int, text: str, columns: list[list[str]], i: int) -> int:
        self.chunks[f] = columns[f][i] = text
        return 1 << f

    def _scalars(self, vrid: Vrid, collision: bool, columns: list[list[str]], i: int) -> int:
        self.split_brain, self.split_brain_events = vrid.split_brain, vrid.split_brain_events
        self.transitions, self.last_transition = vrid.transitions, vrid.last_transition
        self.mismatches, self.collision = vrid.mismatches, collision
        base, s = self.labels.base, SAMPLES
        last = vrid.last_transition
        mismatches = vrid.mismatches
        if mismatches:
            fields = self.labels.fields
            mismatch = "".join(line(s[MISMATCH], fields[n], n in mismatches) for n in fields)
        else:
            mismatch = self.labels.agreed
        return (
            self._set(SPLIT, line(s[SPLIT], base, vrid.split_brain), columns, i)
            | self._set(SPLIT_EVENTS, line(s[SPLIT_EVENTS], base, vrid.split_brain_events),
                        columns, i)
            | self._set(TRANSITIONS, line(s[TRANSITIONS], base, vrid.transitions), columns, i)
            | self._set(LAST_TRANSITION,
                        "" if last is None else line(s[LAST_TRANSITION], base, last), columns, i)
            | self._set(MISMATCH, mismatch, columns, i)
            | self._set(COLLISION, line(s[COLLISION], base, 1) if collision else "", columns, i)
        )  # fmt: skip

    def _masters(self, vrid: Vrid, columns: list[list[str]], i: int) -> int:
        self.acting = frozenset(vrid.acting)
        masters = sorted(self.acting)
        labels, s = self.labels, SAMPLES
        info = "".join([line(s[MASTER], labels.router(a), 1) for a in masters])
        acting = "".join([line(s[ROUTER_MASTER], k.labels, k.router.address in self.acting)
                          for k in self.routers])  # fmt: skip
        return (
            self._set(MASTERS, line(s[MASTERS], labels.base, len(masters)), columns, i)
            | self._set(MASTER, info, columns, i)
            | self._set(ROUTER_MASTER, acting, columns, i)
        )

    def _expected(self, expected: frozenset[str], columns: list[list[str]], i: int) -> int:
        self.expected = expected
        text = ""
        if expected:
            name = SAMPLES[EXPECTED]
            text = "".join([line(name, k.labels, k.router.address in expected)
                            for k in self.routers])  # fmt: skip
        return self._set(EXPECTED, text, columns, i)

    def _ownership(
        self, vrid: Vrid, held: frozenset[str] | None, columns: list[list[str]], i: int
    ) -> int:
        self.held = held
        texts = ["", "", "", ""]
        if held is not None:
            own = ownership(_view(vrid), held)
            labels, s, base = self.labels, SAMPLES, self.labels.base
            if len(labels.vips) > len(own.vips):
                labels.vips.clear()
            texts = [
                "".join([line(s[LOCAL_VIP], labels.vip(v), here) for v, here in own.vips.items()]),
                line(s[LOCAL_MASTER], base, own.local_master),
                line(s[DUPLICATE], base, own.duplicate),
                line(s[ORPHAN], base, own.orphan),
            ]
        changed = 0
        for f, text in zip((LOCAL_VIP, LOCAL_MASTER, DUPLICATE, ORPHAN), texts, strict=True):
            changed |= self._set(f, text, columns, i)
        return changed


def _view(vrid: Vrid) -> VridView:
    """What `ownership` reads of a VRID: its masters and routers."""
    return VridView(
        vrid.key, tuple(sorted(vrid.acting)), vrid.master, vrid.split_brain,
        vrid.split_brain_events, vrid.transitions, vrid.last_transition, vrid.mismatches,
        tuple(vrid.routers.values()),
    )  # fmt: skip


class VrrpCollector(Collector):
    names = NAMES

    def __init__(
        self, model: Model, local: Callable[[], LocalState], clock: Callable[[], float]
    ) -> None:
        self.model = model
        self.local = local
        self.clock = clock
        self._keys: list[VridKey] = []
        self._lines: list[VridLines] = []
        self._columns: list[list[str]] = [[] for _ in NAMES]  # family -> each VRID's text
        self._texts = [b""] * len(NAMES)  # family -> its sample lines

    def collect(self) -> Iterator[Family]:
        now = self.clock()
        model = self.model
        model.advance(now)
        local = self.local()
        vrids = model.vrids
        changed = 0
        if len(vrids) != len(self._keys) or list(vrids) != self._keys:
            kept = dict(zip(self._keys, self._lines, strict=True))
            self._keys = list(vrids)
            self._lines = [kept.get(key) or VridLines(key) for key in self._keys]
            self._columns = [[v.chunks[f] for v in self._lines] for f in range(len(NAMES))]
            changed = ALL
        columns, collisions, expected = self._columns, model.collisions, local.expected
        addresses = local.addresses
        for i, (vrid, lines) in enumerate(zip(vrids.values(), self._lines, strict=True)):
            key = vrid.key
            held = addresses.get(key.segment.netns)
            changed |= lines.update(vrid, key in collisions, held, expected, columns, i)
        texts = self._texts
        for f, column in enumerate(columns):
            if changed >> f & 1:
                texts[f] = "".join(column).encode()
        rows: dict[str, Rows] = {}

        def plain_rows(name: str) -> Rows:
            if not rows:
                rows.update((f.name, f.rows) for f in plain(model, now, local))
            return rows[name]

        return iter(
            [
                Rendered(name, METRICS[name][1], METRICS[name][0], text, partial(plain_rows, name))
                for name, text in zip(NAMES, texts, strict=True)
            ]
        )  # fmt: skip


def plain(model: Model, now: float, local: LocalState) -> Families:
    """The VRIDs' families computed row by row from a snapshot: no text kept, nothing cached."""
    f = Families(NAMES)
    add, expected = f.add, local.expected
    for view in model.snapshot(now, shared=True):
        labels = VridLabels(view.key)
        base, masters = labels.base, view.masters
        add("vrrp_masters", base, len(masters))
        for address in masters:
            add("vrrp_master", labels.router(address), 1)
        add("vrrp_split_brain", base, view.split_brain)
        add("vrrp_split_brain_events", base, view.split_brain_events)
        add("vrrp_master_transitions", base, view.transitions)
        if view.last_transition is not None:
            add("vrrp_last_transition_timestamp_seconds", base, view.last_transition)
        for name, field in labels.fields.items():
            add("vrrp_config_mismatch", field, name in view.mismatches)
        for r in view.routers:
            router = labels.router(r.address)
            add("vrrp_router_priority", router, r.priority)
            add("vrrp_router_advertisements", router, r.adverts)
            add("vrrp_router_advert_interval_seconds", router, r.interval)
            add("vrrp_router_last_advert_timestamp_seconds", router, r.last_seen)
            add("vrrp_router_resignations", router, r.resignations)
            add("vrrp_router_master", router, r.address in masters)
            if expected:
                add("vrrp_router_expected", router, r.address in expected)
        held = local.addresses.get(view.key.segment.netns)
        if held is not None:
            own = ownership(view, held)
            for vip, here in own.vips.items():
                add("vrrp_local_vip", labels.vip(vip), here)
            add("vrrp_local_master", base, own.local_master)
            add("vrrp_duplicate_vip", base, own.duplicate)
            add("vrrp_orphan_vip", base, own.orphan)
        if view.carp_collision:
            add("vrrp_carp_collision", base, 1)
    return f
