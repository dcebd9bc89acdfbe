from ka_exporter.alerting.damping import Damper, Digest


def test_twenty_flaps_in_a_minute_give_one_message_and_one_digest() -> None:
    damper = Damper(window=60.0, threshold=1)
    passed, digests = [], []
    for i in range(20):
        state = "MASTER" if i % 2 == 0 else "BACKUP"
        ok, closed = damper.offer("VI_1", state, 100.0 + i * 2.5)
        passed.append(ok)
        digests += closed
    assert passed == [True] + [False] * 19
    assert digests == []
    assert damper.next_deadline() == 160.0
    assert damper.flush(159.9) == []
    assert damper.flush(160.0) == [Digest("VI_1", 19, "BACKUP", "BACKUP", 100.0, 160.0)]
    assert damper.next_deadline() is None


def test_quiet_pairs_are_not_damped_and_keys_are_independent() -> None:
    damper = Damper(window=60.0, threshold=2)
    assert damper.offer("a", "MASTER", 0.0) == (True, [])
    assert damper.offer("b", "MASTER", 1.0) == (True, [])
    assert damper.offer("a", "BACKUP", 2.0) == (True, [])
    assert damper.offer("a", "MASTER", 3.0) == (False, [])
    # The next message after the window closes the old one (digest) and opens a new one.
    ok, digests = damper.offer("a", "BACKUP", 70.0)
    assert ok
    assert digests == [Digest("a", 1, "MASTER", "MASTER", 0.0, 60.0)]


def test_window_without_held_messages_gives_no_digest() -> None:
    damper = Damper(window=10.0)
    damper.offer("a", "MASTER", 0.0)
    assert damper.flush(100.0) == []
