"""Real keepalived clusters in network namespaces, for tests, demos and reference captures."""

from lab.config import Flavour, Instance, double_master, render_config
from lab.lab import CAPTURE_FILTER, Lab, LabError, Node, unavailable, wait_for

__all__ = [
    "CAPTURE_FILTER",
    "Flavour",
    "Instance",
    "Lab",
    "LabError",
    "Node",
    "double_master",
    "render_config",
    "unavailable",
    "wait_for",
]
