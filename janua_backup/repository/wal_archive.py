"""WAL in the repository: put with the same-or-error rule, get, list.

An archived WAL file is never replaced. A push of a name already stored is
success only if the stored plaintext has the same SHA-256 (PostgreSQL retries
archive_command after a crash, so duplicates are normal); different content is
a ``WalConflict``, the sign of two clusters or two timelines colliding, and
the stored file is left untouched. The conditional put closes the race
between two pushers; the HEAD before it also protects stores that ignore
``If-None-Match``.

Two nodes archiving (``archive_mode = always``). A primary and its standbys
push the same finished segments; the second push is "already archived". This
relies on the copies being byte-identical, which they are on PostgreSQL 15:
a standby's walreceiver writes exactly the bytes the primary wrote, always
from the start of a segment, and after ``pg_switch_wal()`` the primary zeroes
the rest of the segment and sends those pages too (checked on real clusters:
segments ended by a switch, by filling up, in recycled files, and across a
standby crash; ``tests/integration/test_standby_backup.py`` keeps checking).
The plaintext is compared, so nodes with other codecs or levels agree. We keep
pgBackRest's rule (the same checksum is success, any other byte an error,
never an overwrite) rather than comparing only the records before a switch:
copies that differ anywhere are not the same WAL to us, and a wrong "same" would
let a split brain's segment pass silently.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from janua_backup.errors import ObjectExists, WalConflict
from janua_backup.localfs import atomic_write, read_chunks
from janua_backup.repository import layout
from janua_backup.repository.objects import Repo
from janua_backup.repository.reread import rereading


class PushOutcome(enum.Enum):
    STORED = "stored"
    ALREADY_ARCHIVED = "already archived"


@dataclass(frozen=True, slots=True)
class ArchivedWal:
    name: str
    size_bytes: int
    modified: datetime


def push(
    repo: Repo,
    name: str,
    source: Path,
    *,
    check: Callable[[], None] | None = None,
    read_ahead_bytes: int = 0,
) -> PushOutcome:
    """Store ``source`` as ``name``; ``check`` (the repository's marker) runs first
    and may raise to store nothing. With ``read_ahead_bytes`` the file is
    compressed while ``check`` and the HEAD wait for their answers."""
    key = layout.wal_key(name)

    def before_store() -> None:
        if check is not None:
            check()
        if repo.storage.head(key) is not None:
            raise ObjectExists(f"{repo.describe()}/{key} already exists")

    try:
        repo.put(
            key,
            read_chunks(source),
            if_absent=True,
            read_ahead_bytes=read_ahead_bytes,
            before_store=before_store,
        )
    except ObjectExists:
        return _same_or_conflict(repo, name, source)
    return PushOutcome.STORED


def _same_or_conflict(repo: Repo, name: str, source: Path) -> PushOutcome:
    local = _sha256(read_chunks(source))
    key = layout.wal_key(name)
    stored = rereading(lambda: _sha256(repo.get(key)), what=f"{repo.describe()}/{key}")
    if local == stored:
        return PushOutcome.ALREADY_ARCHIVED
    raise WalConflict(
        f"{name} is already archived in {repo.describe()} with different content "
        f"(stored sha256 {stored[:12]}..., local {local[:12]}...); it will not be overwritten. "
        "Two clusters may be archiving into one repository, or a restored cluster "
        "is writing on an old timeline: stop and check before going on"
    )


def _sha256(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def fetch(
    repo: Repo,
    name: str,
    dest: Path,
    *,
    check: Callable[[Iterable[bytes]], Iterable[bytes]] | None = None,
) -> int:
    """Writes the verified file to ``dest`` atomically; ObjectNotFound if not archived.

    ``check`` wraps the decoded bytes (``wal.checked_segment``: the page header
    against the name); what it raises leaves ``dest`` untouched.
    """
    chunks: Iterable[bytes] = repo.get(layout.wal_key(name))
    if check is not None:
        chunks = check(chunks)
    return atomic_write(dest, chunks, mode=0o600)


def read(repo: Repo, name: str) -> bytes:
    return repo.get_bytes(layout.wal_key(name))


def list_archived(repo: Repo, start_after: str = "") -> Iterator[ArchivedWal]:
    for info in repo.storage.list(layout.WAL_PREFIX):
        name = layout.wal_name(info.key)
        if name > start_after:
            yield ArchivedWal(name=name, size_bytes=info.size_bytes, modified=info.modified)
