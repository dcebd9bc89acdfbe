"""The Prometheus text format (0.0.4), written straight from text kept across scrapes.

prometheus_client renders every sample from a label dict, sorting and escaping it on each
scrape: half a second for a site of 1,000 VRIDs, during which the event loop, and so capture,
stands still (docs/benchmarks.md). A `Family` holds rows of (`LabelSet`, value) instead, whose
label text is built once per series, or (`Rendered`) the sample lines its collector keeps
itself; `generate` writes those directly and leaves any other collector in the registry
(process metrics, peers) to prometheus_client. The output is byte for byte what
`generate_latest` writes for the same samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import groupby

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def escape(value: str) -> str:
    """Label value escaping of the text format: backslash, newline, double quote."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class LabelSet:
    """A series' labels with their rendered text, built once and reused across scrapes."""

    __slots__ = ("labels", "text")

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        pairs = ",".join(f'{k}="{escape(v)}"' for k, v in sorted(labels.items()))
        self.text = f"{{{pairs}}}" if pairs else ""

    def extend(self, **more: str) -> LabelSet:
        return LabelSet({**self.labels, **more})


NO_LABELS = LabelSet({})

# prometheus_client's number formatting (Go's), so both renderings agree byte for byte.
_go_float: Callable[[float], str] = floatToGoString
# Most values are flags, counts and priorities: their text is looked up, not formatted. The keys
# are ints, and equal floats (and bools) find them too.
_VALUE_TEXT: dict[float, str] = {i: _go_float(i) for i in range(256)}
# Other ints (advert counts) within these bounds are written as Go writes them without the float
# formatting: "n.0" (from 10**6 on, Go writes an exponent; past 10**15, repr would too).
_INT_LOW, _INT_HIGH = -(10**15), 10**6


def value_text(value: float) -> str:
    text = _VALUE_TEXT.get(value)
    if text is None:
        if type(value) is int and _INT_LOW < value < _INT_HIGH:
            return f"{value}.0"
        return _go_float(value)
    return text


def line(sample: str, labels: LabelSet, value: float) -> str:
    """One sample line, the same in the text format and in OpenMetrics."""
    text = _VALUE_TEXT.get(value)
    if text is None:  # value_text(value), inlined: this is written for every changed value
        if type(value) is int and _INT_LOW < value < _INT_HIGH:
            text = f"{value}.0"
        else:
            text = _go_float(value)
    return f"{sample}{labels.text} {text}\n"


def sample_name(name: str, kind: str) -> str:
    return name + ("_total" if kind == "counter" else "_info" if kind == "info" else "")


Rows = list[tuple[LabelSet, float]]
# family name -> the rows last rendered and their lines, kept by the collector across scrapes
TextCache = dict[str, tuple[Rows, str]]


class Family(Metric):
    """A metric family kept as rows; `samples` is built only for other readers of the registry.

    With a cache, a family whose rows equal those of the last scrape (the same label sets, equal
    values) is not written again: between two scrapes most values (priorities, flags, counts of
    rare events) stay the same, and comparing is ten times cheaper than formatting.
    """

    def __init__(self, name: str, documentation: str, kind: str, cache: TextCache | None = None):
        super().__init__(name, documentation, kind)
        self.sample_name = sample_name(name, kind)
        self.rows: Rows = []
        self.cache = cache

    @property
    def samples(self) -> list[Sample]:
        name = self.sample_name
        return [Sample(name, labels.labels, value) for labels, value in self.rows]

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        if value:  # Metric.__init__ sets it empty; rows are the storage
            raise TypeError("a Family's samples are its rows")

    def head(self) -> str:
        """# HELP and # TYPE, naming the samples (`_total`, `_info` as a gauge)."""
        name, kind = self.sample_name, "gauge" if self.type == "info" else self.type
        doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"

    def body(self) -> str:
        """The sample lines."""
        if self.cache is not None:
            rows, text = self.cache.get(self.name, (None, ""))
            if rows == self.rows:  # equal values have equal text (there is no -0.0 here)
                return text
        name = self.sample_name
        text = "".join([line(name, labels, value) for labels, value in self.rows])
        if self.cache is not None:
            self.cache[self.name] = (self.rows, text)
        return text

    def data(self) -> bytes:
        """The sample lines, encoded."""
        return self.body().encode()

    def text(self) -> str:
        return self.head() + self.body()


class Rendered(Family):
    """A family whose sample lines the collector wrote and keeps itself, encoded; its rows, for
    other readers of the registry (prometheus_client's encoders, tests), come from `rows` on
    demand."""

    def __init__(
        self, name: str, documentation: str, kind: str, lines: bytes, rows: Callable[[], Rows]
    ) -> None:
        super().__init__(name, documentation, kind)
        self.lines = lines
        self.make_rows = rows

    @property
    def samples(self) -> list[Sample]:
        name = self.sample_name
        return [Sample(name, labels.labels, value) for labels, value in self.make_rows()]

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        if value:
            raise TypeError("a Rendered family's samples are its collector's")

    def body(self) -> str:
        return self.lines.decode()

    def data(self) -> bytes:
        return self.lines


class _Metrics(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def generate(registry: Collector) -> bytes:
    """What `prometheus_client.generate_latest(registry)` returns, `Family` lines written fast."""
    parts: list[bytes] = []
    for fast, metrics in groupby(registry.collect(), lambda m: isinstance(m, Family)):
        if fast:
            for m in metrics:
                if isinstance(m, Family):
                    parts += (m.head().encode(), m.data())
        else:
            parts.append(generate_latest(_Metrics(metrics)))
    return b"".join(parts)
