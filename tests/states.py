"""Model states taken from the real captures, for tests of what reads the model."""

from __future__ import annotations

from pathlib import Path

from ka_exporter.model import Model, Segment
from ka_exporter.pcap import read

DATA = Path(__file__).parent / "data"
SEGMENT = Segment("eth0")


def model_at(capture: str, offset: float, segment: Segment = SEGMENT) -> tuple[Model, float]:
    """The model after replaying `capture` up to `offset` seconds, and that moment."""
    model = Model()
    with open(DATA / capture, "rb") as stream:
        packets = list(read(stream))
    now = packets[0].time + offset
    for packet in packets:
        if packet.time > now:
            break
        model.ingest(segment, packet.time, packet.frame, packet.linktype)
    model.advance(now)
    return model, now
