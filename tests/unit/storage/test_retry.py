"""The one retry policy: waits grow, stay jittered within [cap/2, cap], and stop at the deadline."""

from __future__ import annotations

import time

from janua_backup.storage.retry import Backoff


def test_waits_double_up_to_the_cap() -> None:
    attempts = Backoff(None, base_delay_s=1.0, max_delay_s=4.0).start()
    delays = [attempts.next_delay() for _ in range(5)]
    caps = [1.0, 2.0, 4.0, 4.0, 4.0]
    for delay, cap in zip(delays, caps, strict=True):
        assert delay is not None
        assert cap / 2 <= delay <= cap
    assert attempts.failures == 5


def test_no_wait_may_end_past_the_deadline() -> None:
    attempts = Backoff(1.0, base_delay_s=0.4, max_delay_s=8.0).start()
    assert attempts.next_delay() is not None  # at most 0.4 s of the 1 s
    attempts.started = time.monotonic() - 0.9  # 0.9 s spent: the next wait (>= 0.4 s) would pass it
    assert attempts.next_delay() is None


def test_a_zero_deadline_never_waits() -> None:
    assert Backoff(0.0).start().next_delay() is None
