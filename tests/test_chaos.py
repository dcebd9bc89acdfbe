"""Chaos against ground truth (`lab/chaos.py`): the pure parts without a lab, one short seeded
run of real faults on real keepalived, the exporter checked against keepalived's FIFO, and two
negative controls that show the check fails when the exporter is wrong."""

from __future__ import annotations

import shutil

import pytest

from lab import chaos
from lab.chaos import Check, Condition, Fault, Kind
from lab.config import Flavour, Instance

INSTANCES = chaos.cluster()
V4, V6 = INSTANCES[0], INSTANCES[2]  # VRID 10 on n1/n2; VRID 12 (IPv6) on n1-n3
LAB_SEED, LAB_FAULTS = 154, 11  # every kind of fault once; the firewall splits VRIDs 10, 12


# -- the schedule ------------------------------------------------------------------------------


def test_schedule_is_reproducible_from_its_seed() -> None:
    first = chaos.schedule(7, 50, INSTANCES)
    assert first == chaos.schedule(7, 50, INSTANCES)
    assert first != chaos.schedule(8, 50, INSTANCES)
    assert len(first) == 50


def test_lab_seed_covers_every_kind_of_fault() -> None:
    plan = chaos.schedule(LAB_SEED, LAB_FAULTS, INSTANCES)
    assert {fault.kind for fault in plan} == set(Kind)


@pytest.mark.parametrize("seed", range(100))
def test_schedule_keeps_the_cluster_sane(seed: int) -> None:
    """Every fault is possible when it comes, every VRID keeps a node up, and partitions,
    stopped nodes, downed links and firewalls are undone within MAX_AGE faults."""
    condition = Condition(chaos.members(INSTANCES))
    for fault in chaos.schedule(seed, 60, INSTANCES):
        assert fault in condition.candidates(), f"{fault} impossible in {condition}"
        condition.apply(fault)
        for vrid, nodes in condition.members.items():
            assert any(condition.up(n) for n in nodes), f"VRID {vrid} has nobody after {fault}"
        ages = [*condition.stopped.values(), *condition.links_down.values()]
        ages += condition.firewalled.values()
        if condition.partitioned is not None:
            ages.append(condition.partitioned)
        assert max(ages, default=0) <= chaos.MAX_AGE, f"{condition} after {fault}"


def test_condition_only_loses_a_node_some_vrid_can_spare() -> None:
    condition = Condition(chaos.members(INSTANCES))
    condition.apply(Fault(Kind.SIGKILL, 1))
    allowed = condition.candidates()
    # n2 is the last node of VRIDs 10 and 11: it may not go down, by signal or by link
    assert not {Fault(k, 2) for k in (Kind.SIGKILL, Kind.SIGTERM, Kind.LINK_DOWN)} & set(allowed)
    assert {Fault(Kind.START, 1), Fault(Kind.SIGKILL, 3), Fault(Kind.LINK_DOWN, 1)} <= set(allowed)
    assert Fault(Kind.PRIORITY, 1) not in allowed  # a stopped node's track file is rewritten
    condition.apply(Fault(Kind.PRIORITY, 2))
    condition.apply(Fault(Kind.START, 1))
    assert condition.lowered == {2}
    assert condition.overdue() is None


def test_overdue_undoes_the_oldest_first() -> None:
    condition = Condition(chaos.members(INSTANCES))
    condition.apply(Fault(Kind.PARTITION))
    condition.apply(Fault(Kind.LINK_DOWN, 3))
    condition.apply(Fault(Kind.EXPORTER))
    assert condition.overdue() is None
    condition.apply(Fault(Kind.EXPORTER))
    assert condition.overdue() == Fault(Kind.HEAL)
    condition.apply(Fault(Kind.HEAL))
    assert condition.overdue() == Fault(Kind.LINK_UP, 3)


# -- ground truth --------------------------------------------------------------------------------


def test_latest_states_follow_the_fifo_and_skip_priority_events_and_partial_lines() -> None:
    lines = [
        'INSTANCE "V3_10" BACKUP 150',
        'INSTANCE "V3_10" MASTER 150',
        'INSTANCE "V3_V6_12" BACKUP 100',
        'INSTANCE "V3_10" MASTER_PRIORITY 90',  # a new priority, still master
        'GROUP "V3_10" FAULT 0',  # a sync group of the same name is not the instance
        'INSTANCE "V3_V6_12" MAST',  # being written as we read
    ]
    assert chaos.latest_states(lines) == {"V3_10": "MASTER", "V3_V6_12": "BACKUP"}
    assert chaos.latest_states([*lines, 'INSTANCE "V3_10" FAULT 150']) == {
        "V3_10": "FAULT",
        "V3_V6_12": "BACKUP",
    }


def test_truth_is_running_members_whose_latest_state_is_master() -> None:
    states = {
        1: {V4.name: "MASTER", V6.name: "FAULT"},
        2: {V4.name: "MASTER", V6.name: "BACKUP"},
        3: {V4.name: "MASTER", V6.name: "MASTER"},  # n3 is no member of VRID 10
    }
    assert chaos.truth(states, V4) == {1, 2}
    assert chaos.truth(states, V6) == {3}
    assert chaos.truth({2: {}}, V4) == frozenset()  # started, nothing written yet


# -- the comparison ------------------------------------------------------------------------------

ADDRESSES = {"192.0.2.11": 1, "192.0.2.12": 2, "fe80::1": 1, "fe80::2": 2, "fe80::3": 3}


def check(
    truth: set[int],
    shown: set[str],
    split: bool,
    inst: Instance = V4,
    unheard: frozenset[int] = frozenset(),
) -> Check:
    return chaos.compare(
        inst, frozenset(truth), lambda n: n not in unheard, shown, split, ADDRESSES
    )


def test_agreement_on_one_master_and_on_a_split_brain() -> None:
    assert check({1}, {"192.0.2.11"}, split=False).ok
    assert check({1, 2}, {"192.0.2.11", "192.0.2.12"}, split=True).ok
    assert check({1, 2, 3}, {"fe80::1", "fe80::2", "fe80::3"}, split=True, inst=V6).ok
    assert check(set(), set(), split=False).ok


@pytest.mark.parametrize(
    ("truth", "shown", "split"),
    [
        ({1}, {"192.0.2.12"}, False),  # the wrong master
        ({1}, set(), False),  # a master missed
        ({1}, {"192.0.2.11", "192.0.2.12"}, False),  # a stale master still shown
        ({1}, {"192.0.2.11"}, True),  # a split-brain that is not
        ({1, 2}, {"192.0.2.11", "192.0.2.12"}, False),  # a split-brain missed
        ({1}, {"192.0.2.11", "198.51.100.7"}, False),  # a master that is none of ours
    ],
)
def test_every_disagreement_is_a_mismatch(truth: set[int], shown: set[str], split: bool) -> None:
    result = check(truth, shown, split)
    assert not result.ok
    assert "!= exporter" in result.describe()


def test_a_master_the_monitor_cannot_hear_is_not_expected() -> None:
    # n2 claims MASTER with its link down: the monitor can only see n1
    result = check({1, 2}, {"192.0.2.11"}, split=False, unheard=frozenset({2}))
    assert result.ok
    assert result.expected == {1}
    assert "unheard n2" in result.describe()
    assert not check({1, 2}, {"192.0.2.11", "192.0.2.12"}, True, unheard=frozenset({2})).ok


def test_a_split_brain_keepalived_never_had_is_a_false_alarm() -> None:
    one = (check({1}, {"192.0.2.11"}, split=False),)
    shown = (check({1}, {"192.0.2.11", "192.0.2.12"}, split=True),)
    real = (check({1, 2}, {"192.0.2.11", "192.0.2.12"}, split=True),)
    assert chaos.false_alarms([one, shown, one], frozenset()) == {V4.vrid}
    assert chaos.false_alarms([one, real, shown, one], frozenset()) == frozenset()
    # still shown just after a real one ended, in the window before
    assert chaos.false_alarms([shown, one], frozenset({V4.vrid})) == frozenset()
    assert chaos.false_alarms([one, one], frozenset()) == frozenset()
    flagged = chaos.Result(3, Fault(Kind.HEAL), 4.6, 1, one, frozenset({V4.vrid}))
    assert not flagged.ok
    assert chaos.row(flagged).endswith("MISMATCH false split-brain in 10")


def test_row_and_summary_name_the_mismatch() -> None:
    good = chaos.Result(1, Fault(Kind.SIGKILL, 1), 4.6, 1, (check({2}, {"192.0.2.12"}, False),))
    bad = chaos.Result(2, Fault(Kind.HEAL), 4.6, 9, (check({2}, {"192.0.2.11"}, False),))
    assert chaos.row(good).endswith("ok")
    assert "sigkill n1" in chaos.row(good)
    assert chaos.row(bad).endswith("MISMATCH")
    assert "n2 != exporter n1" in chaos.row(bad)
    late = chaos.Result(
        3, Fault(Kind.PARTITION), 5.6, 4, (check({1, 2}, {"192.0.2.11", "192.0.2.12"}, True),)
    )
    text = chaos.summary([good, bad, late], 9.2)
    assert text.startswith("3 faults, 1 with a mismatch, 9 s; 1 agreed only in the grace")


def test_instances_are_the_double_master_pair_and_an_ipv6_vrid() -> None:
    assert [(i.vrid, i.flavour) for i in INSTANCES] == [
        (10, Flavour.V3),
        (11, Flavour.V3),
        (12, Flavour.V3_V6),
    ]
    assert sorted(chaos.members(INSTANCES)[12]) == [1, 2, 3]


# -- the real thing ------------------------------------------------------------------------------


@pytest.fixture
def chaos_host(lab_host: None) -> None:
    """Skips unless a lab can run here and curl can read the exporter."""
    if shutil.which("curl") is None:
        pytest.skip("not installed: curl")


@pytest.mark.lab
@pytest.mark.usefixtures("chaos_host")
def test_seeded_faults_on_real_keepalived_never_disagree_with_the_fifo() -> None:
    results = chaos.run(LAB_SEED, LAB_FAULTS, advert_int=0.5)
    assert [r.fault for r in results[1:]] == chaos.schedule(LAB_SEED, LAB_FAULTS, INSTANCES)
    table = "\n".join(chaos.row(r) for r in results)
    assert all(r.ok for r in results), table
    # the run went through the interesting states, by keepalived's word
    shapes = {len(c.truth) for r in results for c in r.checks}
    assert {1, 2, 3} <= shapes, table  # single masters and split-brains of two and three


@pytest.mark.lab
@pytest.mark.usefixtures("chaos_host")
def test_the_run_catches_an_exporter_that_disagrees() -> None:
    """The negative control: an exporter told to wait 8 intervals before calling two masters
    split-brain is still silent when the check gives up after a partition."""
    seed = 9
    assert chaos.schedule(seed, 1, INSTANCES) == [Fault(Kind.PARTITION)]
    results = chaos.run(seed, 1, advert_int=0.5, exporter_args=["--vrrp.split-brain-debounce", "8"])
    baseline, partition = results
    assert baseline.ok, chaos.row(baseline)
    assert not partition.ok, chaos.row(partition)
    for c in partition.checks:
        assert len(c.expected) > 1 and c.seen == c.expected, chaos.row(partition)
        assert not c.split_brain, chaos.row(partition)


@pytest.mark.lab
@pytest.mark.usefixtures("chaos_host")
def test_the_run_catches_a_split_brain_that_never_was() -> None:
    """The other negative control: with almost no debounce the exporter calls the brief overlap
    of a preemption split-brain (n1, lowered, loses VRID 10 to n2) while keepalived never had
    two masters; the masters themselves still agree."""
    seed = 10
    assert chaos.schedule(seed, 1, INSTANCES) == [Fault(Kind.PRIORITY, 1)]
    results = chaos.run(
        seed, 1, advert_int=0.5, exporter_args=["--vrrp.split-brain-debounce", "0.01"]
    )
    preempted = results[1]
    assert V4.vrid in preempted.false_alarms, chaos.row(preempted)
    assert all(c.ok for c in preempted.checks), chaos.row(preempted)
    assert {c.vrid: c.expected for c in preempted.checks}[V4.vrid] == {2}
