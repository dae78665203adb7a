"""``wal-fetch %f %p``: PostgreSQL's restore_command.

PostgreSQL reads exit codes 1-125 as "the archive does not have this file".
During archive recovery to the end of the archive, that answer makes it
promote, so saying "not found" because the network blinked ends recovery
early with data missing. So: "not found" only when storage confirmed the
object is absent; every other failure is retried with backoff until a
deadline, then reported as fatal (the CLI exits above 125 and PostgreSQL
stops recovery) or, for a standby, as "not yet available" so it keeps trying.

Prefetch (``wal.prefetch_segments`` > 0, a segment asked for during archive
recovery): the segment is taken from the prefetch spool when a checked copy
is there (one rename, no storage call), and a background prefetcher is
started if none runs, to download the segments that follow
(``janua_backup.prefetch``). The spool only ever saves a fetch: anything
missing, rejected or failing there falls through to the archive path above,
which alone decides "found", "not found" or "failed". History, ``.partial``
and ``.backup`` files are always fetched here, never prefetched.

This path runs once per segment: it imports neither the repository nor any
storage driver until it has to ask the archive.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from janua_backup import prefetch
from janua_backup.config import Settings
from janua_backup.errors import (
    ConfigError,
    DecryptionError,
    IntegrityError,
    JanuaError,
    ObjectNotFound,
    StorageError,
)
from janua_backup.pg.wal import WalFileKind, WalSegment, classify
from janua_backup.prefetch import PrefetchSpool

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WalFetchResult:
    name: str
    found: bool
    size_bytes: int
    attempts: int  # storage calls made; 0 when handed over from the prefetch spool
    duration_s: float
    prefetched: bool = False


def in_standby(pgdata: Path) -> bool:
    """standby.signal: a standby may hear "not yet" and will simply ask again."""
    return (pgdata / "standby.signal").exists()


def run(settings: Settings, name: str, dest: str, *, pgdata: Path = Path(".")) -> WalFetchResult:
    """Fetch ``name`` to ``dest``; ``pgdata`` is the data directory in recovery (the cwd
    of restore_command), where the prefetch spool lives by default."""
    started = time.monotonic()
    kind = classify(name)  # refuses names that are not WAL files
    if kind is WalFileKind.HISTORY and settings.wal.prefetch_segments > 0:
        _start_early(settings, pgdata)
    if kind is WalFileKind.SEGMENT and settings.wal.prefetch_segments > 0:
        size = _from_spool(settings, name, Path(dest), pgdata)
        if size is not None:
            result = WalFetchResult(name, True, size, 0, time.monotonic() - started, True)
            log.info(
                "wal-fetch name=%s size=%d source=prefetch duration_s=%.3f",
                name,
                size,
                result.duration_s,
            )
            return result
    return _from_archive(settings, name, dest, started)


def _from_spool(settings: Settings, name: str, dest: Path, pgdata: Path) -> int | None:
    """The segment handed over from the spool (its size) or None; a prefetcher runs after.

    Order matters: the request is noted before the hand-over, so a running
    prefetcher keeps this segment (it keeps the requested one) and does not
    download it again once it is gone. Failures here cost only the prefetch.
    """
    ctl = prefetch.recovery_control(pgdata)
    if ctl is None:
        return None
    try:
        segment = WalSegment.parse(name, ctl.wal_segment_size)
        spool = PrefetchSpool.open(prefetch.directory(settings.wal.spool_dir, pgdata))
        spool.note_request(name)
        size = spool.take(segment, dest, ctl.system_identifier)
    except ConfigError:
        raise  # a spool of another user, or open to others: refused, never trusted
    except (OSError, JanuaError) as exc:
        _skipped(name, exc)
        return None
    try:
        started_one = _ensure_prefetcher(settings, spool, segment, pgdata)
        if size is None and not started_one and spool.wait_in_flight(name):
            size = spool.take(segment, dest, ctl.system_identifier)
    except (OSError, JanuaError) as exc:
        _skipped(name, exc)
    return size


def _start_early(settings: Settings, pgdata: Path) -> None:
    """Start the prefetcher at the backup's first segment before PostgreSQL asks for it.

    With recovery_target_timeline 'latest', recovery looks for timeline history
    files before it reads backup_label and asks for its first segment; starting
    the prefetcher on that first call hides its start-up (an interpreter, an S3
    client) behind those lookups instead of paying it on the first segments.
    Best effort: anything wrong here only means no head start.
    """
    ctl = prefetch.recovery_control(pgdata)
    start = _backup_label_start(pgdata)
    if ctl is None or start is None:
        return
    try:
        segment = WalSegment.parse(start, ctl.wal_segment_size)
        spool = PrefetchSpool.open(prefetch.directory(settings.wal.spool_dir, pgdata))
        if spool.request() is None:  # only before the first segment request
            spool.note_request(segment.name)
            _ensure_prefetcher(settings, spool, segment, pgdata)
    except ConfigError:
        raise  # as in _from_spool
    except (OSError, JanuaError) as exc:
        _skipped(start, exc)


def _backup_label_start(pgdata: Path) -> str | None:
    """The segment named by ``START WAL LOCATION: ... (file NAME)`` in backup_label."""
    try:
        text = (pgdata / "backup_label").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("START WAL LOCATION:") and "(file " in line:
            return line.rsplit("(file ", 1)[1].rstrip(")").strip()
    return None


def _skipped(name: str, exc: OSError | JanuaError) -> None:
    message = exc.message if isinstance(exc, JanuaError) else str(exc)
    log.warning("wal-fetch name=%s prefetch skipped: %s", name, message)


def _ensure_prefetcher(
    settings: Settings, spool: PrefetchSpool, segment: WalSegment, pgdata: Path
) -> bool:
    """Start a prefetcher unless one runs; True if this call started it.

    The lock taken here passes to the new process (see ``prefetch``): no
    second one can start while this one is still starting.
    """
    lock = spool.try_lock()
    if lock is None:
        return False
    try:
        spool.clean(segment)  # nobody is writing: drop what is behind and stray temp files
        pid = spool.start(prefetcher_argv(settings, pgdata, segment.name, lock), lock)
    finally:
        os.close(lock)
    log.debug("wal-fetch name=%s started prefetcher pid=%d", segment.name, pid)
    return True


def prefetcher_argv(settings: Settings, pgdata: Path, after: str, lock_fd: int) -> list[str]:
    """``wal-prefetch`` with this call's effective settings (environment is inherited)."""
    argv = [sys.executable, "-m", "janua_backup"]
    if settings.config_path:
        argv += ["--config", settings.config_path]
    if settings.repository.url:
        argv += ["--repo", settings.repository.url]
    if settings.s3.endpoint:
        argv += ["--s3-endpoint", settings.s3.endpoint]
    if settings.s3.region:
        argv += ["--s3-region", settings.s3.region]
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    level = level if level in ("debug", "info", "warning", "error") else "info"
    argv += ["--pgdata", str(pgdata.resolve()), "--log-level", level]
    return [*argv, "wal-prefetch", after, "--lock-fd", str(lock_fd)]


def _from_archive(settings: Settings, name: str, dest: str, started: float) -> WalFetchResult:
    from janua_backup.commands.common import open_repo
    from janua_backup.repository import wal_archive

    repo = open_repo(settings, quick_start=True)
    deadline = time.monotonic() + settings.wal.fetch_retry_deadline_s
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
        log.info(
            "wal-fetch name=%s size=%d source=archive duration_s=%.3f",
            name,
            size,
            result.duration_s,
        )
        return result
