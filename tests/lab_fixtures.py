"""pytest fixtures for tests that drive real keepalived nodes (see `lab/`).

Labs made here are closed after the test whatever the test did, and the teardown fails the test
if anything of a lab (namespace, process, temp dir) survived.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from lab import Flavour, Instance, Lab, unavailable

MakeLab = Callable[..., Lab]


@pytest.fixture
def lab_host() -> None:
    """Skips the test unless this machine can run a lab (root, keepalived, iproute2, ...)."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"keepalived lab unavailable: {reason}")


@pytest.fixture
def make_lab(lab_host: None) -> Iterator[MakeLab]:
    """`make_lab(instances, **Lab kwargs)` returns an open lab."""
    labs: list[Lab] = []

    def make(instances: Iterable[Instance], **kwargs: Any) -> Lab:
        lab = Lab(instances, **kwargs)
        labs.append(lab)
        return lab.open()

    yield make
    problems = []
    for lab in reversed(labs):
        try:
            lab.close()
        except Exception as exc:  # report every lab, not just the first failure
            problems.append(str(exc))
        problems += [f"lab {lab.prefix} left behind {item}" for item in lab.leftovers()]
    assert not problems, "; ".join(problems)


@pytest.fixture
def pair(make_lab: MakeLab) -> Lab:
    """Two running nodes, VRID 51 VRRPv3 at 0.5 s: n1 priority 150, n2 priority 100."""
    lab = make_lab([Instance(51, Flavour.V3, advert_int=0.5)])
    lab.start_all()
    return lab
