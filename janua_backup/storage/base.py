"""The storage contract: bytes at keys, nothing of PostgreSQL, compression or crypto.

Must not import: ``janua_backup.pg``, ``janua_backup.pipeline``,
``janua_backup.repository``. Drivers import their SDK lazily (inside the driver
module only) and translate every SDK or OS error into the ``StorageError``
family of ``janua_backup.errors`` so callers never see botocore or OSError.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from janua_backup.errors import (
    AccessDenied,
    BucketNotFound,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    StorageUnreachable,
)

__all__ = [
    "AccessDenied",
    "BucketNotFound",
    "ObjectExists",
    "ObjectInfo",
    "ObjectNotFound",
    "Storage",
    "StorageError",
    "StorageUnreachable",
]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a listing knows of one object."""

    key: str
    size_bytes: int
    modified: datetime  # timezone-aware UTC


class Storage(Protocol):
    """A flat namespace of immutable objects addressed by ``/``-separated keys.

    Contract, held by every driver and checked by ``tests/unit/storage/contract.py``
    (run on memory and posix in ``tests/unit/storage``, on a real S3 server in
    ``tests/integration/storage``):

    * Keys are relative ``/``-separated paths: no leading ``/``, no empty,
      ``.`` or ``..`` segment, and the last segment does not start with
      ``.tmp-`` (posix temp files). A key cannot also be the "directory" of
      other keys on posix (``a`` and ``a/b``). Memory and posix raise
      ``ValueError`` for a key they cannot store: it is a programming error.
    * ``put`` is atomic: a reader sees the whole new object or the previous
      state, never a partial object, even if the writer dies mid-stream. It
      returns only once the object is durable (fsynced file and directory;
      S3 acknowledged the PUT / CompleteMultipartUpload). ``chunks`` is
      consumed once, streaming: drivers buffer at most one part in memory.
      An exception raised by ``chunks`` itself reaches the caller unchanged
      (not translated), and leaves no object and no temp file behind.
    * ``put(..., if_absent=True)`` creates the object only if no object exists
      at ``key``. If one exists with exactly the bytes being put, the put
      succeeds and writes nothing: it is idempotent, so a retry whose first
      attempt was stored but whose answer was lost (S3: 412 on the retry)
      meets its own object, not a stranger's. If the stored bytes differ it
      raises ``ObjectExists`` and leaves the existing object untouched. Two
      racing writers of different bytes: exactly one wins. (On S3 this relies
      on the store honouring ``If-None-Match: *``; AWS and SeaweedFS do.)
      Callers whose objects must be unique per writer make their bytes unique
      (the lock record carries a random owner token).
    * ``get`` raises ``ObjectNotFound`` only when the store confirmed the key is
      absent. A missing bucket raises ``BucketNotFound``, bad credentials
      ``AccessDenied``, a network failure ``StorageUnreachable``; never
      ``ObjectNotFound`` for those (restore_command depends on this).
      The error for a missing key is raised by the call itself, before any
      chunk is consumed. The returned iterator yields the object's bytes in
      chunks of at most 1 MiB and has a ``close()`` method; closing it early
      (or before the first chunk) releases the file or connection.
    * ``head`` returns ``None`` for an absent key (same rule as ``get``: a
      missing bucket raises ``BucketNotFound``, never ``None``).
    * ``list`` yields every object whose key starts with ``prefix`` in
      lexicographic key order (Python ``str`` order: ``a-b`` < ``a/b`` < ``a0``);
      a missing bucket raises ``BucketNotFound``, from the call itself.
    * ``delete`` removes the keys; already-absent keys are not an error.
    * Transient failures (throttling, 5xx, connection resets) are retried with
      backoff inside the driver before an error is raised.
    """

    def put(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> None: ...

    def get(self, key: str) -> Iterator[bytes]: ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def delete(self, keys: Iterable[str]) -> None: ...

    def describe(self) -> str:
        """A human name for messages, e.g. ``s3://bucket/prefix``."""
        ...
