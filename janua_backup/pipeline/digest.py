"""Size and SHA-256 taps: what the manifest records of each side of the pipeline.

Taps hash bytes as they flow, so neither a backup nor a restore needs a second
pass over the data. Only the standard library and ``errors`` are imported.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from janua_backup.errors import IntegrityError

__all__ = ["Digest", "Tap"]


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

    def add(self, data: bytes | memoryview) -> None:
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
