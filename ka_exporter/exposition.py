"""The Prometheus text format (0.0.4 and 1.0.0) and OpenMetrics 1.0.0, written straight from text
kept across scrapes.

prometheus_client renders every sample from a label dict, sorting and escaping it on each
scrape: half a second for a site of 1,000 VRIDs, during which the event loop, and so capture,
stands still (docs/benchmarks.md). A `Family` holds rows of (`LabelSet`, value) instead, whose
label text is built once per series, or (`Rendered`) the sample lines its collector keeps
itself; `generate` writes those directly and leaves any other collector in the registry
(process metrics, peers) to prometheus_client. The output is byte for byte what
prometheus_client writes for the same samples, in either format: the sample lines are the same
in both, only the family headers and OpenMetrics' closing `# EOF` differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import groupby
from typing import NamedTuple

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
EOF = "# EOF\n"
_generate_openmetrics: Callable[[Collector], bytes] = openmetrics.generate_latest


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

    def head(self, openmetrics: bool = False) -> str:
        """# HELP and # TYPE: the text format names the samples (`_total`, `_info` as a gauge),
        OpenMetrics the family, and escapes double quotes in the help too."""
        doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        if openmetrics:
            doc = doc.replace('"', r"\"")
            return f"# HELP {self.name} {doc}\n# TYPE {self.name} {self.type}\n"
        name, kind = self.sample_name, "gauge" if self.type == "info" else self.type
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


def generate(registry: Collector, openmetrics: bool = False) -> bytes:
    """What prometheus_client's `generate_latest(registry)` returns (or, with `openmetrics`, its
    OpenMetrics `generate_latest`), `Family` lines written fast."""
    parts: list[bytes] = []
    for fast, metrics in groupby(registry.collect(), lambda m: isinstance(m, Family)):
        if fast:
            for m in metrics:
                if isinstance(m, Family):
                    parts += (m.head(openmetrics).encode(), m.data())
        elif openmetrics:
            parts.append(_generate_openmetrics(_Metrics(metrics)).removesuffix(EOF.encode()))
        else:
            parts.append(generate_latest(_Metrics(metrics)))
    if openmetrics:
        parts.append(EOF.encode())
    return b"".join(parts)


# --- content negotiation -------------------------------------------------------------------------


class Format(NamedTuple):
    content_type: str
    openmetrics: bool


TEXT = Format(CONTENT_TYPE, False)
# The escaping schemes of names a scraper may ask for with the 1.0.0 formats. Ours, and
# prometheus_client's, need none, so they read the same in every scheme: the one asked for is
# stated in the response (validated: only these), or prometheus_client's default.
ESCAPINGS = frozenset({"allow-utf-8", "underscores", "dots", "values"})
DEFAULT_ESCAPING = "underscores"


def _offer(media: str, params: dict[str, str]) -> Format | None:
    """What is served for one media range of an Accept header, if anything."""
    version = params.get("version")
    escaping = params.get("escaping")
    escaping = f"; escaping={escaping if escaping in ESCAPINGS else DEFAULT_ESCAPING}"
    if media == "application/*":
        media, version = "application/openmetrics-text", None
    if media == "application/openmetrics-text":
        if version in (None, "1.0.0"):
            return Format(f"{media}; version=1.0.0; charset=utf-8{escaping}", True)
        if version == "0.0.1":  # the draft of 1.0.0, parsed alike by Prometheus
            return Format(f"{media}; version=0.0.1; charset=utf-8", True)
        return None
    if media == "text/plain":
        if version in (None, "0.0.4"):
            return TEXT
        if version == "1.0.0":  # 0.0.4 with UTF-8 names allowed: the same text for ours
            return Format(f"text/plain; version=1.0.0; charset=utf-8{escaping}", False)
        return None
    if media in ("*/*", "text/*"):
        return TEXT
    return None


def negotiate(accept: str | None) -> Format:
    """The format an Accept header prefers among those served: OpenMetrics 1.0.0 (and 0.0.1),
    text 1.0.0 and 0.0.4; by q-value, the first listed among equals, none with q=0. Without a
    header, or when nothing listed is served, text 0.0.4, the last resort Prometheus' content
    negotiation names."""
    best, best_q = TEXT, 0.0
    for item in (accept or "").split(","):
        media, *pairs = item.split(";")
        params = {}
        for pair in pairs:
            key, _, value = pair.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            continue
        offer = _offer(media.strip().lower(), params)
        if offer is not None and q > best_q:
            best, best_q = offer, q
    return best
