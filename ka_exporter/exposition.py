"""The Prometheus text format (0.0.4), written straight from label text built once per series.

prometheus_client renders every sample from a label dict, sorting and escaping it on each
scrape: half a second for a site of 1,000 VRIDs, during which the event loop, and so capture,
stands still (docs/benchmarks.md). A `Family` holds rows of (`LabelSet`, value) instead, whose
text the collector caches across scrapes; `generate` writes those rows directly and leaves any
other collector in the registry (process metrics, peers) to prometheus_client. The output is
byte for byte what `generate_latest` writes for the same samples.
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


Rows = list[tuple[LabelSet, float]]
# family name -> the rows last rendered and their text, kept by the collector across scrapes
TextCache = dict[str, tuple[Rows, str]]


class Family(Metric):
    """A metric family kept as rows; `samples` is built only for other readers of the registry.

    With a cache, a family whose rows equal those of the last scrape (the same label sets, equal
    values) is not written again: between two scrapes most values (priorities, flags, counts of
    rare events) stay the same, and comparing is ten times cheaper than formatting.
    """

    def __init__(self, name: str, documentation: str, kind: str, cache: TextCache | None = None):
        super().__init__(name, documentation, kind)
        suffix = "_total" if kind == "counter" else "_info" if kind == "info" else ""
        self.sample_name = name + suffix
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

    def text(self) -> str:
        if self.cache is not None:
            rows, text = self.cache.get(self.name, (None, ""))
            if rows == self.rows:  # equal values have equal text (there is no -0.0 here)
                return text
        name = self.sample_name
        kind = "gauge" if self.type == "info" else self.type
        doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        head = f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"
        get, go_float = _VALUE_TEXT.get, _go_float
        lines = [
            f"{name}{labels.text} {get(value) or go_float(value)}\n" for labels, value in self.rows
        ]
        text = head + "".join(lines)
        if self.cache is not None:
            self.cache[self.name] = (self.rows, text)
        return text


class _Metrics(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def generate(registry: Collector) -> bytes:
    """What `prometheus_client.generate_latest(registry)` returns, `Family` rows written fast."""
    parts: list[str] = []
    for fast, metrics in groupby(registry.collect(), lambda m: isinstance(m, Family)):
        if fast:
            parts.extend(m.text() for m in metrics if isinstance(m, Family))
        else:
            parts.append(generate_latest(_Metrics(metrics)).decode())
    return "".join(parts).encode()
