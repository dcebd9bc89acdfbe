from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable, Iterator

import pytest
from hypothesis import settings
from pyroute2 import netns as p2netns

from lab import netns

pytest_plugins = ["tests.lab_fixtures"]

# `make test` is a gate: the same examples on every run, so a red build means a change broke
# something. `--hypothesis-profile=explore` draws fresh examples, to look for new bugs.
settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=2000)
settings.load_profile("default")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        dest="update_golden",
        help="rewrite the golden files under tests/golden from the current output",
    )


@pytest.fixture
def wire() -> Iterator[tuple[str, str]]:
    """Two network namespaces of the test's own, joined by a veth pair, eth0 on both sides."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    tag = secrets.token_hex(2)
    a, b = f"kaw{tag}-a", f"kaw{tag}-b"
    try:
        for ns in (a, b):
            netns.add(ns)
        netns.run(["ip", "link", "add", "eth0", "netns", a, "type", "veth",
                   "peer", "name", "eth0", "netns", b])  # fmt: skip
        for ns in (a, b):
            netns.run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        yield a, b
    finally:
        for ns in (a, b):
            netns.delete(ns)


def send(ns: str, frames: Iterable[bytes], interface: str = "eth0") -> None:
    """Writes frames onto `interface` inside `ns` (never the root namespace); bounded by input."""
    sock = p2netns.create_socket(
        ns, family=socket.AF_PACKET, socket_type=socket.SOCK_RAW, proto=0, flags=0
    )
    with sock:
        sock.bind((interface, 0))
        for frame in frames:
            sock.send(frame)
