"""``wal-fetch %f %p``: PostgreSQL's restore_command.

PostgreSQL reads exit codes 1-125 as "the archive does not have this file".
During archive recovery to the end of the archive, that answer makes it
promote, so saying "not found" because the network blinked ends recovery
early with data missing. So: "not found" only when storage confirmed the
object is absent; every other failure is retried with backoff until a
deadline, then reported as fatal (the CLI exits above 125 and PostgreSQL
stops recovery) or, for a standby, as "not yet available" so it keeps trying.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

from janua_backup.commands.common import open_repo
from janua_backup.config import Settings
from janua_backup.errors import DecryptionError, IntegrityError, ObjectNotFound, StorageError
from janua_backup.pg.wal import classify
from janua_backup.repository import wal_archive

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WalFetchResult:
    name: str
    found: bool
    size_bytes: int
    attempts: int
    duration_s: float


def in_standby(pgdata: Path) -> bool:
    """standby.signal: a standby may hear "not yet" and will simply ask again."""
    return (pgdata / "standby.signal").exists()


def run(settings: Settings, name: str, dest: str) -> WalFetchResult:
    started = time.monotonic()
    classify(name)  # refuses names that are not WAL files
    repo = open_repo(settings)
    deadline = started + settings.wal.fetch_retry_deadline_s
    attempt = 0
    while True:
        attempt += 1
        try:
            size = wal_archive.fetch(repo, name, Path(dest))
        except ObjectNotFound:
            log.debug("wal-fetch name=%s not in archive", name)
            return WalFetchResult(name, False, 0, attempt, time.monotonic() - started)
        except DecryptionError:
            raise  # a wrong key does not get better with time
        except (StorageError, IntegrityError) as exc:
            delay = min(10.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            if time.monotonic() + delay > deadline:
                raise
            log.warning(
                "wal-fetch name=%s attempt=%d failed (%s); retrying in %.1fs",
                name,
                attempt,
                exc,
                delay,
            )
            time.sleep(delay)
            continue
        result = WalFetchResult(name, True, size, attempt, time.monotonic() - started)
        log.info("wal-fetch name=%s size=%d duration_s=%.3f", name, size, result.duration_s)
        return result
