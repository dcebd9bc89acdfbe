"""The sidecar's own metrics: what came in, what went out, what waits, and keepalived's view.

Event and delivery counts and the queue figures live in the spool and are read at scrape time,
so the work of hook runs and hook-spawned workers (other processes) shows too.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ka_exporter.alerting.spool import Spool
from ka_exporter.notify.keepalived import STATE_NUMBERS


class _SpoolCollector(Collector):
    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "ka_notify_events",
            "Events received, by source (notify, fifo, exporter, test) and type.",
            labels=["source", "type"],
        )
        for (source, kind), n in sorted(self.spool.counts("events").items()):
            events.add_metric([source, kind], n)
        yield events
        deliveries = CounterMetricFamily(
            "ka_notify_deliveries",
            "Delivery attempts by sink and result (delivered, retried, rejected).",
            labels=["sink", "result"],
        )
        for (sink, result), n in sorted(self.spool.counts("deliveries").items()):
            deliveries.add_metric([sink, result], n)
        yield deliveries
        yield from self._keepalived()
        s = self.spool.stats()
        yield GaugeMetricFamily(
            "ka_notify_queue_depth", "Deliveries waiting in the spool.", value=s.depth
        )
        yield GaugeMetricFamily(
            "ka_notify_oldest_pending_age_seconds",
            "How long the oldest waiting delivery has waited.",
            value=s.oldest_age,
        )
        yield GaugeMetricFamily(
            "ka_notify_dead_letters",
            "Deliveries a sink rejected for good (see `ka-notify queue`).",
            value=s.dead,
        )

    def _keepalived(self) -> Iterator[Metric]:
        """keepalived's instances as the hooks and the FIFO reported them (groups left out)."""
        state = GaugeMetricFamily(
            "keepalived_vrrp_state",
            "0 INIT, 1 BACKUP, 2 MASTER, 3 FAULT, as the keepalived exporter numbers it.",
            labels=["iname"],
        )
        priority = GaugeMetricFamily(
            "keepalived_vrrp_priority",
            "Effective priority keepalived last reported for the instance.",
            labels=["iname"],
        )
        for kind, name, current, prio in self.spool.instances():
            if kind != "INSTANCE":
                continue
            if current in STATE_NUMBERS:  # STOP and DELETED end the series
                state.add_metric([name], STATE_NUMBERS[current])
                if prio is not None:
                    priority.add_metric([name], prio)
        transitions = CounterMetricFamily(
            "keepalived_vrrp_transitions",
            "State changes keepalived reported for the instance.",
            labels=["iname"],
        )
        for (kind, name), n in sorted(self.spool.counts("transitions").items()):
            if kind == "INSTANCE":
                transitions.add_metric([name], n)
        yield from (state, priority, transitions)


class NotifyMetrics:
    def __init__(self, spool: Spool) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_SpoolCollector(spool))
