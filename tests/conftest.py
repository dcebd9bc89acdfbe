from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from lab import veth
from lab.veth import send

__all__ = ["send"]  # tests write frames onto the wire with it

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
    with veth.pair("kaw") as ends:
        yield ends
