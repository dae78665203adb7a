"""``wal-prefetch NAME`` (hidden): keep the next segments downloaded while PostgreSQL replays.

Started by ``wal-fetch`` (see ``janua_backup.prefetch`` for the spool, the
lock hand-over and the verification), never by a person. One process serves
the whole recovery instead of one per batch: a start costs a Python
interpreter, the S3 client and a connection, which is what prefetching is
meant to save.

The loop follows PostgreSQL's last request (``prefetch.Request``): it keeps
the ``wal.prefetch_segments`` segments after it on the same timeline spooled,
downloading up to ``backup.jobs`` (default: one per core) at once, and
removes whatever falls outside that window. Downloads go through the
repository's verified read: the archive's checksums, then the segment's size
and first page header, before a file gets its final name.

When the archive does not have a segment (the end of the archive, or the end
of a timeline whose successor PostgreSQL will ask for next), or storage
fails, it schedules nothing more until PostgreSQL asks for another segment:
the foreground ``wal-fetch`` fetches that one itself and keeps the exit-code
contract ("not found" only when the archive confirmed it), so an error here
is only logged. A standby that asks again every few seconds thus makes the
prefetcher look again.

It exits, removing everything it spooled, when recovery is over (the signal
files are gone), the server that was running has stopped, or nobody asked
for a segment for ``IDLE_EXIT_S``; and at once if the spool disappears.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from janua_backup import prefetch
from janua_backup.commands.common import jobs, open_repo
from janua_backup.config import Settings
from janua_backup.errors import InputError, JanuaError, ObjectNotFound
from janua_backup.localfs import atomic_write
from janua_backup.pg import control
from janua_backup.pg.control import ControlData
from janua_backup.pg.wal import WalFileKind, WalSegment, classify
from janua_backup.prefetch import PrefetchSpool
from janua_backup.repository import layout
from janua_backup.repository.objects import Repo

log = logging.getLogger(__name__)

IDLE_EXIT_S = 60.0  # no request for this long: recovery paused or the server is gone
POLL_S = 0.02  # how often the request file is read while nothing else happens


@dataclass(frozen=True, slots=True)
class PrefetchResult:
    after: str
    downloaded: tuple[str, ...]
    size_bytes: int
    reason: str  # why it stopped
    duration_s: float


def run(
    settings: Settings,
    after: str,
    *,
    pgdata: Path,
    lock_fd: int | None = None,
    idle_s: float = IDLE_EXIT_S,
) -> PrefetchResult:
    """Prefetch after the segment ``after`` until there is nothing left to do.

    ``lock_fd``: the spool lock, already taken by the ``wal-fetch`` that
    started this process; without it the lock is taken here, and if another
    prefetcher holds it this one returns at once.
    """
    started = time.monotonic()
    if classify(after) is not WalFileKind.SEGMENT:
        raise InputError(f"wal-prefetch follows WAL segments, not {after}")
    ctl = control.read_control(pgdata)
    spool = PrefetchSpool.open(prefetch.directory(settings.wal.spool_dir, pgdata))
    lock = spool.adopt_lock(lock_fd) if lock_fd is not None else spool.try_lock()
    if lock is None:
        return PrefetchResult(after, (), 0, "another prefetcher runs", 0.0)
    try:
        first = WalSegment.parse(after, ctl.wal_segment_size)
        count = settings.wal.prefetch_segments
        log.info("wal-prefetch begin after=%s segments=%d jobs=%d", after, count, jobs(settings))
        # quick_start: recovery waits for the first segments while this process starts.
        repo = open_repo(settings, quick_start=True)
        worker = Prefetcher(repo, spool, ctl, pgdata, count, jobs(settings))
        reason = worker.run(first, idle_s=idle_s) if count > 0 else "prefetch is off"
    finally:
        os.close(lock)
    result = PrefetchResult(
        after, tuple(worker.downloaded), worker.size_bytes, reason, time.monotonic() - started
    )
    log.info(
        "wal-prefetch end reason=%s downloaded=%d size=%d duration_s=%.3f",
        result.reason,
        len(result.downloaded),
        result.size_bytes,
        result.duration_s,
    )
    return result


@dataclass
class Prefetcher:
    """The loop: follow the request, keep the window spooled, stop when told by the files."""

    repo: Repo
    spool: PrefetchSpool
    control: ControlData
    pgdata: Path
    count: int
    jobs: int
    downloaded: list[str] = field(default_factory=list)
    size_bytes: int = 0

    def run(self, first: WalSegment, *, idle_s: float = IDLE_EXIT_S) -> str:
        """Prefetch until a reason to stop; returns it. Cleans the spool unless it vanished."""
        server_was_up = (self.pgdata / "postmaster.pid").exists()
        ctl = self.control
        for name in self.spool.drop_unverified(ctl.system_identifier, ctl.wal_segment_size):
            log.warning("wal-prefetch name=%s in the spool is not this cluster's: removed", name)
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="janua-prefetch") as pool:
            in_flight: dict[Future[int], WalSegment] = {}
            try:
                reason = self._loop(pool, in_flight, first, idle_s, server_was_up)
            finally:
                for future in in_flight:
                    future.cancel()
        if reason != "spool gone":
            with contextlib.suppress(FileNotFoundError):
                self.spool.prune(())
        return reason

    def _loop(
        self,
        pool: ThreadPoolExecutor,
        in_flight: dict[Future[int], WalSegment],
        first: WalSegment,
        idle_s: float,
        server_was_up: bool,
    ) -> str:
        position, request = first, self.spool.request()
        asked_at = time.monotonic()
        blocked = False  # the archive lacked a segment, or failed: wait for the next request
        while True:
            stop = self._stop_reason(server_was_up)
            if stop:
                return stop
            latest = self.spool.request()
            if latest is not None and latest != request:
                request, asked_at, blocked = latest, time.monotonic(), False
                position = self._segment(latest.name) or position
            wanted = prefetch.window(position, self.count)
            busy = {s.name for s in in_flight.values()}
            try:
                # The requested segment stays: wal-fetch may be about to take it.
                present = self.spool.prune(
                    {position.name, *(s.name for s in wanted)}, keep_temps=busy
                )
            except FileNotFoundError:
                return "spool gone"
            if not blocked:
                self._schedule(pool, in_flight, wanted, present | busy)
            if not in_flight:
                if time.monotonic() - asked_at > idle_s:
                    return "idle"
                time.sleep(POLL_S)
                continue
            done, _ = wait(in_flight, timeout=POLL_S, return_when=FIRST_COMPLETED)
            for future in done:
                blocked |= not self._collect(future, in_flight.pop(future))

    def _stop_reason(self, server_was_up: bool) -> str:
        if not self.spool.path.is_dir():
            return "spool gone"
        if not any((self.pgdata / name).exists() for name in prefetch.SIGNAL_FILES):
            return "recovery over"
        if server_was_up and not (self.pgdata / "postmaster.pid").exists():
            return "server stopped"
        return ""

    def _segment(self, name: str) -> WalSegment | None:
        try:
            return WalSegment.parse(name, self.control.wal_segment_size)
        except InputError:
            return None

    def _schedule(
        self,
        pool: ThreadPoolExecutor,
        in_flight: dict[Future[int], WalSegment],
        wanted: list[WalSegment],
        have: set[str],
    ) -> None:
        """Submit the first missing segments of the window, in order, up to ``jobs`` at once."""
        for segment in wanted:
            if len(in_flight) >= self.jobs:
                return
            if segment.name not in have:
                in_flight[pool.submit(self._download, segment)] = segment

    def _download(self, segment: WalSegment) -> int:
        chunks = self.repo.get(layout.wal_key(segment.name))  # ObjectNotFound before any write
        checked = prefetch.verified(chunks, segment, self.control.system_identifier)
        # No fsync of the directory: a name lost in a crash is only a miss.
        return atomic_write(self.spool.segment_path(segment.name), checked, sync_dir=False)

    def _collect(self, future: Future[int], segment: WalSegment) -> bool:
        """Account for a finished download; False if the window should stop here."""
        try:
            size = future.result()
        except ObjectNotFound:
            log.debug("wal-prefetch name=%s not in archive; waiting for the next request", segment)
            return False
        except (JanuaError, OSError) as exc:
            message = exc.message if isinstance(exc, JanuaError) else str(exc)
            log.warning("wal-prefetch name=%s failed: %s", segment, message)
            return False
        self.downloaded.append(segment.name)
        self.size_bytes += size
        log.debug("wal-prefetch name=%s size=%d", segment, size)
        return True
