"""An in-memory ``Storage`` for unit tests: the contract without disks or sockets.

Must not import: ``janua_backup.pg``, ``janua_backup.pipeline``,
``janua_backup.repository``. Holds the same contract as the posix and S3
drivers (the shared suite in ``tests/unit/storage/contract.py`` proves it), so a
unit test that passes here exercises the same rules a real repository enforces:
atomic puts, ``if_absent`` races with one winner, ``ObjectNotFound`` raised by
``get`` itself, lexicographic listings.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from janua_backup.errors import ObjectExists, ObjectNotFound
from janua_backup.storage.base import ObjectInfo

__all__ = ["MemoryStorage"]

_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Stored:
    data: bytes
    modified: datetime


class MemoryStorage:
    """A dict of immutable ``bytes`` behind a lock; one instance is one repository.

    ``put`` reads the whole stream *before* taking the lock, so a stream that
    fails midway leaves nothing behind and a slow writer never blocks readers;
    the ``if_absent`` check and the insert happen under the same lock, which is
    what makes racing writers have exactly one winner.
    """

    def __init__(self, name: str = "memory") -> None:
        self._name = name
        self._objects: dict[str, _Stored] = {}
        self._lock = threading.Lock()

    def put(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> None:
        _check_key(key)
        data = b"".join(bytes(chunk) for chunk in chunks)
        stored = _Stored(data, datetime.now(UTC))
        with self._lock:
            existing = self._objects.get(key) if if_absent else None
            if existing is not None:
                if existing.data == data:
                    return  # idempotent: the same bytes are already there
                raise ObjectExists(f"{self.describe()}/{key} already exists")
            self._objects[key] = stored

    def get(self, key: str) -> Iterator[bytes]:
        # Looked up here, not in a generator, so a missing key raises on the
        # call itself, as the contract requires.
        with self._lock:
            stored = self._objects.get(key)
        if stored is None:
            raise ObjectNotFound(f"{self.describe()}/{key} does not exist")
        return _slices(stored.data)

    def head(self, key: str) -> ObjectInfo | None:
        with self._lock:
            stored = self._objects.get(key)
        if stored is None:
            return None
        return ObjectInfo(key=key, size_bytes=len(stored.data), modified=stored.modified)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # A snapshot: writers may go on while the caller iterates.
        with self._lock:
            found = [
                ObjectInfo(key=key, size_bytes=len(obj.data), modified=obj.modified)
                for key, obj in self._objects.items()
                if key.startswith(prefix)
            ]
        found.sort(key=lambda info: info.key)
        return iter(found)

    def delete(self, keys: Iterable[str]) -> None:
        doomed = list(keys)
        with self._lock:
            for key in doomed:
                self._objects.pop(key, None)

    def describe(self) -> str:
        return f"memory://{self._name}"


def _check_key(key: str) -> None:
    """Reject the keys ``PosixStorage`` rejects, so a unit test catches them first."""
    parts = key.split("/")
    if (
        not key
        or "\x00" in key
        or any(part in ("", ".", "..") for part in parts)
        or parts[-1].startswith(".tmp-")
    ):
        raise ValueError(f"invalid storage key {key!r}")


def _slices(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), _CHUNK_BYTES):
        yield data[start : start + _CHUNK_BYTES]
