"""The repository marker: which PostgreSQL cluster a repository belongs to.

A repository holds exactly one cluster. The first command that writes to it
(``wal-push`` or ``backup``) creates the marker with a conditional put; every
later writer compares the cluster's system identifier and refuses a mismatch,
so two clusters can never interleave their WAL in one archive. The marker is
stored unencrypted (but checksummed) so a wrong or missing key can be named
as such instead of failing as "corrupt data".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from janua_backup.errors import (
    ConfigError,
    DecryptionError,
    FormatError,
    ObjectExists,
    ObjectNotFound,
    RepositoryMismatch,
)
from janua_backup.pipeline.stream import EncodeSpec
from janua_backup.repository import layout
from janua_backup.repository.objects import Repo
from janua_backup.repository.reread import rereading

_PLAIN = EncodeSpec(codec="none", key=None)


@dataclass(frozen=True, slots=True)
class Marker:
    format_version: int
    system_identifier: int
    pg_major: int | None
    wal_segment_size: int
    key_id: str | None  # hex id of the encryption key, None when unencrypted
    created: str


def read(repo: Repo) -> Marker | None:
    """The marker, or None for a repository nobody has written to yet."""
    from janua_backup.pipeline.stream import decode

    def read_once() -> bytes:
        return b"".join(decode(repo.storage.get(layout.MARKER_KEY), None))

    try:
        data = rereading(read_once, what=f"{repo.describe()}/{layout.MARKER_KEY}")
    except ObjectNotFound:
        return None
    try:
        fields = json.loads(data)
        marker = Marker(**fields)
    except (ValueError, TypeError) as exc:
        raise FormatError(
            f"{repo.describe()}: {layout.MARKER_KEY} is not a janua-backup marker"
        ) from exc
    if marker.format_version > layout.FORMAT_VERSION:
        raise FormatError(
            f"{repo.describe()} uses repository format {marker.format_version}; "
            f"this janua-backup reads up to format {layout.FORMAT_VERSION}: upgrade janua-backup"
        )
    return marker


def ensure(
    repo: Repo, *, system_identifier: int, wal_segment_size: int, pg_major: int | None
) -> Marker:
    """The marker for this cluster, created on first use; refuses another cluster's repository."""
    marker = read(repo)
    if marker is None:
        marker = Marker(
            format_version=layout.FORMAT_VERSION,
            system_identifier=system_identifier,
            pg_major=pg_major,
            wal_segment_size=wal_segment_size,
            key_id=repo.key.key_id.hex() if repo.key else None,
            created=datetime.now(UTC).isoformat(),
        )
        body = json.dumps(asdict(marker), indent=2).encode()
        try:
            repo.put_bytes(layout.MARKER_KEY, body, if_absent=True, spec=_PLAIN)
        except ObjectExists:
            marker = read(repo) or marker  # another writer won the race; check theirs
    check(repo, marker, system_identifier=system_identifier)
    return marker


def check(repo: Repo, marker: Marker, *, system_identifier: int | None) -> None:
    """Refuses a repository of another cluster, or one encrypted differently."""
    if system_identifier is not None and marker.system_identifier != system_identifier:
        raise RepositoryMismatch(
            f"{repo.describe()} belongs to the PostgreSQL cluster with system identifier "
            f"{marker.system_identifier}, not this one ({system_identifier}); "
            "use a separate repository (or prefix) per cluster"
        )
    check_key(repo, marker)


def check_key(repo: Repo, marker: Marker) -> None:
    ours = repo.key.key_id.hex() if repo.key else None
    if marker.key_id == ours:
        return
    if marker.key_id is None:
        raise ConfigError(
            f"{repo.describe()} is not encrypted, but encryption is configured; "
            "remove the [encryption] settings or use a new repository"
        )
    if ours is None:
        raise DecryptionError(
            f"{repo.describe()} is encrypted (key id {marker.key_id}); set encryption.key_file "
            "or the passphrase to read or write it"
        )
    raise DecryptionError(
        f"wrong encryption key: {repo.describe()} is encrypted with key id {marker.key_id}, "
        f"the configured key has id {ours}; check encryption.key_file or the passphrase"
    )
