"""The one retry policy for storage calls: exponential backoff with jitter, to a deadline.

Every client path that retries a storage call (the S3 driver's request loop, wal-fetch
around a whole fetch) asks this module how long to wait, so a throttled or briefly
unreachable store is treated the same way everywhere. Jitter spreads the retries of many
wal-push/wal-fetch processes started together, so they do not hit the store in step.
Must not import anything of janua_backup but ``errors``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Backoff:
    """How retries are spaced: the n-th wait is drawn from [cap/2, cap], where cap is
    ``base_delay_s * 2**(n-1)`` up to ``max_delay_s``; no wait may end after ``deadline_s``
    from the first attempt (``None``: the caller bounds the number of attempts)."""

    deadline_s: float | None
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def start(self) -> Attempts:
        """The retries of one call, counted from now."""
        return Attempts(self)


@dataclass(slots=True)
class Attempts:
    """One call's retries so far: ask ``next_delay`` after each failure."""

    policy: Backoff
    started: float = field(default_factory=time.monotonic)
    failures: int = 0

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def next_delay(self) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` when waiting would pass
        the deadline (then the caller gives up and reports the last error)."""
        self.failures += 1
        policy = self.policy
        cap = min(policy.max_delay_s, policy.base_delay_s * 2 ** (self.failures - 1))
        delay = random.uniform(cap / 2, cap)
        if policy.deadline_s is not None and self.elapsed_s + delay > policy.deadline_s:
            return None
        return delay
