"""``wal-push %p``: PostgreSQL's archive_command.

Exit 0 means "durably stored" and nothing less: PostgreSQL recycles the
segment once we say so. The command checks which cluster the file comes
from (a segment names its system identifier in its first page header;
other files are checked through ``global/pg_control`` of the data
directory, which is the archiver's working directory) before it writes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from janua_backup.commands.common import open_repo
from janua_backup.config import Settings
from janua_backup.errors import InputError
from janua_backup.pg import control
from janua_backup.pg.wal import WalFileKind, classify
from janua_backup.repository import marker, wal_archive

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WalPushResult:
    name: str
    outcome: str
    size_bytes: int
    duration_s: float


@dataclass(frozen=True, slots=True)
class ClusterIdentity:
    system_identifier: int | None
    wal_segment_size: int | None


def identify(path: Path, kind: WalFileKind, pgdata: Path) -> ClusterIdentity:
    if kind in (WalFileKind.SEGMENT, WalFileKind.PARTIAL):
        with path.open("rb") as handle:
            header = control.parse_segment_header(handle.read(8192))
        return ClusterIdentity(header.system_identifier, header.segment_size)
    if (pgdata / "global" / "pg_control").exists():
        return ClusterIdentity(control.read_system_identifier(pgdata), None)
    return ClusterIdentity(None, None)


def run(settings: Settings, wal_path: str) -> WalPushResult:
    started = time.monotonic()
    path = Path(wal_path)
    kind = classify(path.name)
    if not path.is_file():
        raise InputError(f"{wal_path} does not exist or is not a file")
    pgdata = Path(settings.postgres.pgdata or ".")
    identity = identify(path, kind, pgdata)
    repo = open_repo(settings)
    if identity.system_identifier is not None:
        marker.ensure(
            repo,
            system_identifier=identity.system_identifier,
            wal_segment_size=identity.wal_segment_size or 16 * 1024 * 1024,
            pg_major=None,
        )
    else:
        existing = marker.read(repo)
        if existing is not None:
            marker.check_key(repo, existing)
    outcome = wal_archive.push(repo, path.name, path)
    result = WalPushResult(
        path.name, outcome.value, path.stat().st_size, time.monotonic() - started
    )
    log.info(
        "wal-push name=%s outcome=%s duration_s=%.3f",
        result.name,
        result.outcome,
        result.duration_s,
    )
    return result
