"""``wal-fetch %f %p``: PostgreSQL's restore_command.

PostgreSQL reads exit codes 1-125 as "the archive does not have this file".
During archive recovery to the end of the archive, that answer makes it
promote, so saying "not found" because the network blinked ends recovery
early with data missing. So: "not found" only when storage confirmed the
object is absent; a storage failure is retried with backoff until a
deadline, then reported as fatal (the CLI exits above 125 and PostgreSQL
stops recovery) or, for a standby, as "not yet available" so it keeps trying.
An object that fails its checks (checksum, decryption, or a segment whose
first page header is not the one its name gives: an object stored under
another segment's name) is read again at most twice, since only a transfer
cut short heals that way, and then reported as fatal at once. Nothing that
fails a check is ever written at ``%p``.

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
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from janua_backup import prefetch
from janua_backup.config import Settings
from janua_backup.errors import (
    ConfigError,
    DecryptionError,
    FormatError,
    IntegrityError,
    JanuaError,
    ObjectNotFound,
    RepositoryMismatch,
    StorageError,
)
from janua_backup.pg.wal import WalFileKind, WalSegment, checked_segment, classify, header_segment
from janua_backup.prefetch import PrefetchSpool
from janua_backup.storage.retry import Attempts, Backoff

if TYPE_CHECKING:
    from janua_backup.repository.objects import Repo

log = logging.getLogger(__name__)

INTEGRITY_READS = 3
"""Reads of an object that fails its checks before wal-fetch exits 128: the first and two
more. A transfer cut short heals on a re-read; a damaged object, a wrong key or a segment
stored under another segment's name does not heal with time, and PostgreSQL should stop
recovery at once rather than after the transport retries' deadline."""

_DAMAGE = (IntegrityError, FormatError, RepositoryMismatch)  # DecryptionError included
_Check = Callable[[Iterable[bytes]], Iterable[bytes]]


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
    return _from_archive(settings, name, dest, started, pgdata)


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


def _from_archive(
    settings: Settings, name: str, dest: str, started: float, pgdata: Path
) -> WalFetchResult:
    """The archive's answer, retried while storage fails; read at most ``INTEGRITY_READS``
    times while what it serves fails its checks."""
    from janua_backup.commands.common import open_repo
    from janua_backup.repository import wal_archive

    repo = open_repo(settings, quick_start=True)
    retries = Backoff(settings.wal.fetch_retry_deadline_s, max_delay_s=10.0).start()
    rereads = Backoff(None, max_delay_s=10.0).start()
    attempt = damaged = 0
    check: _Check | None = None
    checked = False  # check is known (None: this kind of file has no page header)
    while True:
        attempt += 1
        try:
            if not checked:
                check, checked = _header_check(repo, name, pgdata), True
            size = wal_archive.fetch(repo, name, Path(dest), check=check)
        except ObjectNotFound:
            log.debug("wal-fetch name=%s not in archive", name)
            return WalFetchResult(name, False, 0, attempt, time.monotonic() - started)
        except DecryptionError:
            raise  # a wrong key does not get better with a re-read
        except _DAMAGE as exc:
            damaged += 1
            if damaged >= INTEGRITY_READS:
                raise
            _retry_later(name, attempt, exc, "reading it again", rereads)
            continue
        except StorageError as exc:
            _retry_later(name, attempt, exc, "retrying", retries)
            continue
        result = WalFetchResult(name, True, size, attempt, time.monotonic() - started)
        log.info(
            "wal-fetch name=%s size=%d source=archive duration_s=%.3f",
            name,
            size,
            result.duration_s,
        )
        return result


def _retry_later(name: str, attempt: int, exc: JanuaError, what: str, attempts: Attempts) -> None:
    """Sleep before the next attempt; re-raise ``exc`` if that would pass the deadline."""
    delay = attempts.next_delay()
    if delay is None:
        raise exc
    log.warning(  # the message, not the error: a record must not keep the download alive
        "wal-fetch name=%s attempt=%d failed (%s); %s in %.1fs",
        name,
        attempt,
        exc.message,
        what,
        delay,
    )
    time.sleep(delay)


def _header_check(repo: Repo, name: str, pgdata: Path) -> _Check | None:
    """How the fetched bytes of ``name`` are checked: a segment's page header against its
    name (``wal.check_segment_header``); None for a file without one (history, backup).

    In a data directory in recovery, against its ``pg_control``: what PostgreSQL
    itself compares with, and no request. Run anywhere else, against the
    repository's marker (one small GET).
    """
    from janua_backup.pg import control
    from janua_backup.repository import marker

    kind = classify(name)
    if kind not in (WalFileKind.SEGMENT, WalFileKind.PARTIAL):
        return None
    ctl = prefetch.recovery_control(pgdata)
    if ctl is not None:
        system_identifier, segment_size = ctl.system_identifier, ctl.wal_segment_size
        try:
            pg_major: int | None = control.read_major_version(pgdata)
        except JanuaError:
            pg_major = None
    else:
        found = marker.read(repo)
        if found is None:
            return None  # nothing was ever pushed here: the object cannot exist either
        system_identifier, segment_size = found.system_identifier, found.wal_segment_size
        pg_major = found.pg_major
    segment = header_segment(name, segment_size)
    assert segment is not None  # a segment or a .partial, as classified above
    whole = kind is WalFileKind.SEGMENT  # a .partial file may be shorter

    def check(chunks: Iterable[bytes]) -> Iterator[bytes]:
        return checked_segment(chunks, segment, system_identifier, pg_major=pg_major, whole=whole)

    return check
