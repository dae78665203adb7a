"""Re-reading a whole object when a read failed in a way the next read may not repeat.

The storage drivers retry a request that got no answer, but not a body that
died after its first bytes were handed out: a GET reset mid-body, a response
cut short by a proxy, a bit flipped on the way. Restore and ``verify --repo``
read objects from their start and can simply read them again: a restore must
not throw away every file it placed because one GET died, and a check must not
report damage that a second read would not show. So they re-read, a bounded
number of times with a short pause, and a failure (or damage) that persists
across every read stands exactly as it would have without this module.

What never heals is not re-read: an object the store confirmed missing, a
missing bucket, refused credentials, a key that is not the repository's.
Must not import psycopg, commands or cli.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from janua_backup.errors import (
    AccessDenied,
    BucketNotFound,
    DecryptionError,
    FormatError,
    IntegrityError,
    JanuaError,
    ObjectNotFound,
    StorageError,
)

__all__ = ["ATTEMPTS", "heals", "rereading"]

log = logging.getLogger(__name__)
T = TypeVar("T")

ATTEMPTS = 3
"""Reads of one object at most: one damage in transit is healed, damage at rest is
confirmed twice before it is reported."""
BACKOFF_S = (0.2, 1.0)  # the pause before the 2nd and the 3rd read

_FINAL = (ObjectNotFound, AccessDenied, BucketNotFound, DecryptionError)  # a wrong key stays wrong
_HEALABLE = (StorageError, IntegrityError, FormatError)


def heals(error: JanuaError) -> bool:
    """Whether reading again may give another answer: transport and integrity errors."""
    return isinstance(error, _HEALABLE) and not isinstance(error, _FINAL)


def rereading(
    read: Callable[[], T],
    *,
    what: str,
    sound: Callable[[T], bool] = lambda _result: True,
    before_retry: Callable[[], None] | None = None,
) -> T:
    """``read()`` until it returns a ``sound`` result, at most ``ATTEMPTS`` times.

    An error that ``heals`` (or an unsound result) is followed by
    ``before_retry`` (which undoes what the failed read wrote, so that the next
    one starts from scratch) and another read; the last read's outcome stands,
    error or result. ``what`` names the object in the warning logged per re-read.
    """
    for attempt in range(1, ATTEMPTS + 1):
        final = attempt == ATTEMPTS
        try:
            result = read()
        except _HEALABLE as exc:
            if final or not heals(exc):
                raise
            reason = str(exc)
        else:
            if final or sound(result):
                return result
            reason = "it read as damaged"
        log.warning("re-reading %s (read %d of %d) because %s", what, attempt + 1, ATTEMPTS, reason)
        if before_retry is not None:
            before_retry()
        time.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S)) - 1])
    raise AssertionError("unreachable: the last attempt returns or raises")
