"""What the exporter sees on the wire, as alerts.

Pure: no clock and no I/O. The only state is which conditions are open, so that a resolution
carries exactly the labels (and start) of its firing; the caller owns the object.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ka_exporter.alerting.alert import Alert, Severity, Source, Status
from ka_exporter.model import Event, EventType, VridKey

CHANGE_SECONDS = 300.0  # a master change is one-shot: it resolves itself after this long
OWNERSHIP_ALERTS = {"duplicate": "VRRPDuplicateVIP", "orphan": "VRRPOrphanVIP"}


@dataclass(frozen=True, slots=True)
class Context:
    cluster: str
    host: str
    expected_peers: frozenset[str] = frozenset()  # empty: every router is expected


def key_labels(key: VridKey, ctx: Context) -> dict[str, str]:
    labels = {
        "vrid": str(key.vrid),
        "family": key.family,
        "interface": key.segment.interface,
        "cluster": ctx.cluster,
        "instance": ctx.host,
    }
    if key.segment.netns:
        labels["netns"] = key.segment.netns
    if key.segment.vlan:
        labels["vlan"] = key.segment.vlan
    return labels


def _where(key: VridKey) -> str:
    vlan = f" VLAN {key.segment.vlan}" if key.segment.vlan else ""
    return f"VRID {key.vrid} ({key.family}) on {key.segment.interface}{vlan}"


def _why(event: Event) -> str:
    """`, silent: VIPs unattended 3.61 s`: the reason the wire gives, and the gap when there
    was one."""
    reason = event.detail.get("reason")
    if reason is None:
        return ""
    gap = event.detail.get("gap_seconds")
    return f", {reason}" + (f": VIPs unattended {gap:.2f} s" if gap else "")


@dataclass(slots=True)
class EventAlerts:
    ctx: Context
    # (alertname, key, extra label) -> start of the firing it would resolve
    open: dict[tuple[str, VridKey, str], float] = field(default_factory=dict)

    def feed(self, event: Event) -> list[Alert]:
        kind, key, addrs = event.type, event.key, ", ".join(event.addresses)
        where = _where(key)
        if kind is EventType.SPLIT_BRAIN_START:
            return self._fire(
                "VRRPSplitBrain", event, Severity.CRITICAL, f"split brain on {where}: {addrs}"
            )
        if kind is EventType.SPLIT_BRAIN_END:
            return self._resolve("VRRPSplitBrain", event, f"split brain over on {where}")
        why = _why(event)
        if kind is EventType.MASTER_LOST:
            return self._fire(
                "VRRPNoMaster", event, Severity.CRITICAL, f"no master on {where} (was {addrs}{why})"
            )
        if kind in (EventType.MASTER_ELECTED, EventType.MASTER_CHANGED):
            alerts = self._resolve(
                "VRRPNoMaster", event, f"{event.addresses[0]} master on {where}{why}"
            )
            if kind is EventType.MASTER_CHANGED:
                new, old = event.addresses[0], event.addresses[1]
                alerts.append(
                    self._alert(
                        "VRRPMasterChanged",
                        event,
                        Severity.WARNING,
                        Status.FIRING,
                        event.time,
                        event.time + CHANGE_SECONDS,
                        f"master of {where}: {old} → {new}{why}",
                        extra={"reason": str(event.detail.get("reason", ""))},
                    )
                )
            return alerts
        if kind is EventType.CONFIG_MISMATCH_START:
            field_ = str(event.detail.get("field", ""))
            return self._fire(
                "VRRPConfigMismatch",
                event,
                Severity.WARNING,
                f"{field_} differs between the routers of {where}: {addrs}",
                field_,
            )
        if kind is EventType.CONFIG_MISMATCH_END:
            field_ = str(event.detail.get("field", ""))
            return self._resolve("VRRPConfigMismatch", event, f"{field_} agrees on {where}", field_)
        if kind is EventType.COLLISION_START:
            return self._fire(
                "VRRPCarpCollision",
                event,
                Severity.CRITICAL,
                f"CARP vhid {key.vrid} from {addrs} collides with {where}: one virtual MAC, "
                "and keepalived may stop advertising",
            )
        if kind is EventType.COLLISION_END:
            return self._resolve("VRRPCarpCollision", event, f"no CARP collision on {where}")
        if kind in (EventType.VIP_CONFLICT_START, EventType.VIP_CONFLICT_END):
            vip = str(event.detail.get("vip", ""))
            on = f"{vip} on {key.segment.interface}" + (f" ({where})" if key.vrid else "")
            if kind is EventType.VIP_CONFLICT_END:
                summary = f"one MAC answers for {on}"
                return self._resolve("VRRPVipConflict", event, summary, vip, label="vip")
            return self._fire(
                "VRRPVipConflict",
                event,
                Severity.CRITICAL,
                f"two MACs announce {on} in turns: {addrs} (split-brain as clients see it)",
                vip,
                label="vip",
            )
        if kind is EventType.ROUTER_APPEARED and self.ctx.expected_peers:
            address = event.addresses[0]
            if address not in self.ctx.expected_peers:
                return [
                    self._alert(
                        "VRRPUnknownRouter",
                        event,
                        Severity.CRITICAL,
                        Status.FIRING,
                        event.time,
                        event.time + CHANGE_SECONDS,
                        f"unexpected router {address} speaks for {where}",
                        extra={"address": address},
                    )
                ]
        return []

    def _alert(
        self,
        name: str,
        event: Event,
        severity: Severity,
        status: Status,
        starts: float,
        ends: float | None,
        summary: str,
        extra: dict[str, str] | None = None,
    ) -> Alert:
        return Alert(
            name=name,
            severity=severity,
            status=status,
            source=Source.EXPORTER,
            starts_at=starts,
            ends_at=ends,
            labels={**key_labels(event.key, self.ctx), **(extra or {})},
            annotations={"summary": summary, "description": f"{summary} (seen by {self.ctx.host})"},
        )

    def _fire(
        self,
        name: str,
        event: Event,
        severity: Severity,
        summary: str,
        field_: str = "",
        label: str = "field",
    ) -> list[Alert]:
        self.open[name, event.key, field_] = event.time
        extra = {label: field_} if field_ else None
        return [self._alert(name, event, severity, Status.FIRING, event.time, None, summary, extra)]

    def _resolve(
        self, name: str, event: Event, summary: str, field_: str = "", label: str = "field"
    ) -> list[Alert]:
        starts = self.open.pop((name, event.key, field_), None)
        if starts is None:
            return []
        severity = Severity.WARNING if name == "VRRPConfigMismatch" else Severity.CRITICAL
        extra = {label: field_} if field_ else None
        return [
            self._alert(name, event, severity, Status.RESOLVED, starts, event.time, summary, extra)
        ]


def ownership_alerts(
    previous: Iterable[tuple[VridKey, str]],
    current: Iterable[tuple[VridKey, str]],
    now: float,
    ctx: Context,
) -> list[Alert]:
    """Duplicate/orphan VIPs between two ticks: new pairs fire, vanished pairs resolve.

    `kind` is "duplicate" (we hold a VIP another router is master for) or "orphan" (we hold a
    VIP nobody advertises), as ka_exporter.ownership computes them.
    """
    before, after = set(previous), set(current)
    alerts = []
    for pairs, status in ((after - before, Status.FIRING), (before - after, Status.RESOLVED)):
        for key, kind in sorted(pairs):
            what = "duplicate" if kind == "duplicate" else "orphaned"
            verb = "holds" if status is Status.FIRING else "no longer holds"
            summary = f"{ctx.host} {verb} a {what} VIP of {_where(key)}"
            alerts.append(
                Alert(
                    name=OWNERSHIP_ALERTS[kind],
                    severity=Severity.CRITICAL,
                    status=status,
                    source=Source.EXPORTER,
                    starts_at=now,
                    ends_at=None if status is Status.FIRING else now,
                    labels=key_labels(key, ctx),
                    annotations={"summary": summary, "description": summary},
                )
            )
    return alerts
