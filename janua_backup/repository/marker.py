"""The repository marker: which PostgreSQL cluster a repository belongs to.

A repository holds exactly one cluster. The first command that writes to it
(``wal-push`` or ``backup``) creates the marker with a conditional put; every
later writer compares the cluster's system identifier and refuses a mismatch,
so two clusters can never interleave their WAL in one archive. The marker is
stored unencrypted (but checksummed) so a wrong or missing key can be named
as such instead of failing as "corrupt data".

A repository encrypted with a passphrase and created since 2026-12-04 keeps
its KDF record here (``"kdf": {"name": "scrypt", "salt": <32 hex>, "n": 131072,
"r": 8, "p": 1}``, a random salt per repository, see ``pipeline.crypto``);
older ones and key-file or unencrypted repositories have none and keep the
fixed-salt derivation. A marker without the record has the same fields as
before, so an older janua-backup still reads it; one with the record is
refused by an older janua-backup as not a marker, which it cannot read
(its objects, format version 2, it would refuse as well).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from janua_backup.errors import (
    ConfigError,
    DecryptionError,
    FormatError,
    ObjectExists,
    ObjectNotFound,
    RepositoryMismatch,
)
from janua_backup.pipeline.crypto import Kdf, Passphrase
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
    kdf: Kdf | None = None  # a passphrase's scrypt record; None: the legacy derivation

    def to_json(self) -> bytes:
        fields: dict[str, Any] = asdict(self)
        del fields["kdf"]
        if self.kdf is not None:
            kdf = self.kdf
            fields["kdf"] = {
                "name": "scrypt",
                "salt": kdf.salt.hex(),
                "n": kdf.n,
                "r": kdf.r,
                "p": kdf.p,
            }
        return json.dumps(fields, indent=2).encode()


def read(repo: Repo) -> Marker | None:
    """The marker, or None for a repository nobody has written to yet."""
    from janua_backup.pipeline.stream import decode

    def read_once() -> bytes:
        return b"".join(decode(repo.storage.get(layout.MARKER_KEY), None, bind=layout.MARKER_KEY))

    try:
        data = rereading(read_once, what=f"{repo.describe()}/{layout.MARKER_KEY}")
    except ObjectNotFound:
        return None
    try:
        fields = json.loads(data)
        kdf = fields.pop("kdf", None)
        marker = Marker(**fields, kdf=None if kdf is None else _kdf(kdf))
    except (ValueError, TypeError, KeyError) as exc:
        raise FormatError(
            f"{repo.describe()}: {layout.MARKER_KEY} is not a janua-backup marker"
        ) from exc
    if marker.format_version > layout.FORMAT_VERSION:
        raise FormatError(
            f"{repo.describe()} uses repository format {marker.format_version}; "
            f"this janua-backup reads up to format {layout.FORMAT_VERSION}: upgrade janua-backup"
        )
    return marker


def _kdf(record: object) -> Kdf:
    """The marker's KDF record; ValueError/TypeError/KeyError if it is not a valid one
    (``Kdf`` bounds its parameters: the marker is not authenticated)."""
    if not isinstance(record, dict) or record.get("name") != "scrypt":
        raise ValueError("the marker's kdf is not scrypt")
    n, r, p = record["n"], record["r"], record["p"]
    if not all(type(value) is int for value in (n, r, p)):
        raise TypeError("the marker's kdf parameters are not integers")
    return Kdf(salt=bytes.fromhex(record["salt"]), n=n, r=r, p=p)


def ensure(
    repo: Repo, *, system_identifier: int, wal_segment_size: int, pg_major: int | None
) -> Marker:
    """The marker for this cluster, created on first use; refuses another cluster's repository."""
    marker = read(repo)
    if marker is None:
        # A new passphrase repository gets its own random salt; a key file needs none.
        kdf = Kdf.new() if isinstance(repo.spec.key, Passphrase) else None
        key = repo.derive_key(kdf)
        marker = Marker(
            format_version=layout.FORMAT_VERSION,
            system_identifier=system_identifier,
            pg_major=pg_major,
            wal_segment_size=wal_segment_size,
            key_id=key.key_id.hex() if key else None,
            created=datetime.now(UTC).isoformat(),
            kdf=kdf,
        )
        try:
            repo.put_bytes(layout.MARKER_KEY, marker.to_json(), if_absent=True, spec=_PLAIN)
        except ObjectExists:
            # Another writer won the race: check theirs, and derive with their salt.
            marker = read(repo) or marker
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
    """Refuses a key that is not the repository's; derives a passphrase's key with the
    marker's KDF record (kept by ``repo`` for every object read or written later)."""
    if marker.key_id is None and repo.encrypted:
        raise ConfigError(
            f"{repo.describe()} is not encrypted, but encryption is configured; "
            "remove the [encryption] settings or use a new repository"
        )
    if marker.key_id is not None and not repo.encrypted:
        raise DecryptionError(
            f"{repo.describe()} is encrypted (key id {marker.key_id}); set encryption.key_file "
            "or the passphrase to read or write it"
        )
    key = repo.derive_key(marker.kdf)
    ours = key.key_id.hex() if key else None
    if marker.key_id == ours:
        return
    raise DecryptionError(
        f"wrong encryption key: {repo.describe()} is encrypted with key id {marker.key_id}, "
        f"the configured key has id {ours}; check encryption.key_file or the passphrase"
    )
