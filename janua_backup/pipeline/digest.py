"""Size and SHA-256 taps: what the manifest records of each side of the pipeline.

Taps hash bytes as they flow, so neither a backup nor a restore needs a second
pass over the data. Only the standard library and ``errors`` are imported.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

from janua_backup.errors import IntegrityError

__all__ = ["Digest", "HashAside", "Tap"]

HASH_ASIDE_MIN_BYTES = 256 * 1024
"""Smaller pieces are hashed in the caller's thread: handing them over costs more."""


@dataclass(frozen=True, slots=True)
class Digest:
    """Size and hex SHA-256 of a byte stream, as the manifest records them."""

    size_bytes: int
    sha256: str

    def matches(self, other: Digest) -> bool:
        """Equal, ignoring the case of the hex digits (a manifest may hold either)."""
        return self.size_bytes == other.size_bytes and self.sha256.lower() == other.sha256.lower()


class Tap:
    """Counts and hashes bytes passing by; with a limit, fails as soon as it is passed."""

    __slots__ = ("_hash", "_limit", "_what", "size_bytes")

    def __init__(self, limit: int | None = None, what: str = "stream") -> None:
        self._hash = hashlib.sha256()
        self._limit = limit
        self._what = what
        self.size_bytes = 0

    def add(self, data: bytes | bytearray | memoryview) -> None:
        self._hash.update(data)
        self.size_bytes += len(data)
        if self._limit is not None and self.size_bytes > self._limit:
            raise IntegrityError(
                f"the {self._what} is larger than the expected {self._limit} bytes"
            )

    def raw_sha256(self) -> bytes:
        """The binary digest so far; the tap can go on after it."""
        return self._hash.digest()

    def digest(self) -> Digest:
        return Digest(self.size_bytes, self._hash.hexdigest())


class HashAside:
    """Counts and hashes bytes in a helper thread while the caller works on them too.

    ``add`` starts hashing a large piece and returns at once; the caller must
    not change those bytes before ``wait`` (or the next ``add``) returns. On a
    big object this takes the plaintext's SHA-256 off the thread that
    compresses it (hashlib releases the GIL), which is the backup's longest
    path. The helper starts with the first large piece; ``close`` ends it, and
    the digest stays readable. Two plain locks hand the pieces over: a thread
    pool's futures cost more GIL time per piece than the hashing they move.
    """

    __slots__ = ("_data", "_done", "_error", "_hash", "_pending", "_thread", "_work", "size_bytes")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size_bytes = 0
        self._thread: threading.Thread | None = None
        self._data: bytes | bytearray | memoryview | None = None  # None tells the helper to end
        self._pending = False  # a piece was handed over and not waited for
        self._error: BaseException | None = None
        self._work = threading.Lock()  # released by the caller: a piece (or the end) is ready
        self._done = threading.Lock()  # released by the helper: the piece is hashed
        self._work.acquire()
        self._done.acquire()

    def add(self, data: bytes | bytearray | memoryview) -> None:
        self.wait()
        self.size_bytes += len(data)
        if len(data) < HASH_ASIDE_MIN_BYTES:
            self._hash.update(data)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="janua-hash", daemon=True)
            self._thread.start()
        self._data, self._pending = data, True
        self._work.release()

    def _run(self) -> None:
        while True:
            self._work.acquire()
            data = self._data
            if data is None:
                return
            try:
                self._hash.update(data)
            except BaseException as exc:  # raised to the caller by wait()
                self._error = exc
            self._done.release()

    def wait(self) -> None:
        """Return once every byte added so far is hashed."""
        if not self._pending:
            return
        self._done.acquire()
        self._pending, self._data = False, None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def raw_sha256(self) -> bytes:
        self.wait()
        return self._hash.digest()

    def digest(self) -> Digest:
        self.wait()
        return Digest(self.size_bytes, self._hash.hexdigest())

    def close(self) -> None:
        """End the helper thread (after the piece it may be hashing)."""
        try:
            self.wait()
        finally:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._data = None
                self._work.release()
                thread.join()
