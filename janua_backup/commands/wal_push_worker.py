"""``wal-push-worker``: push every ready WAL segment, several at once, ahead of the archiver.

Started (detached) by the first ``wal-push`` that finds no verdict on its
segment in the spool, when ``[wal] archive_async = true``. One run:

1. takes the spool's worker lock, or returns at once: one worker per cluster;
2. opens the repository and checks the marker once, with the system
   identifier from the first segment's header (as a synchronous push does
   per call); every segment's header must name that same cluster, and the
   segment its file name gives (``wal.check_segment_header``);
3. keeps up to ``wal.async_jobs`` segments (default: one per core) in flight,
   oldest first, each pushed by ``wal_archive.push`` in a thread: the
   same-or-error rule, durable when it returns. zlib, zstd, hashlib and
   AES-GCM release the GIL on 1 MiB chunks, so the threads compress on every
   core. ``<name>.ok`` is written only after the push returned, ``<name>.error``
   when it raised a ``JanuaError``; one failed segment does not stop others;
4. rescans ``pg_wal/archive_status`` each time a slot frees, skipping
   segments that already have a status, and never lets status files
   outnumber ``wal.async_max_segments``; stops once nothing new has been ready
   for ``IDLE_LINGER_S`` (staying a little saves a start-up in a steady stream).

Errors: a failure before any push (repository, marker) is recorded for the
segments at hand and re-raised; anything else unexpected (or SIGTERM) is
recorded for the segments in flight and re-raised (the CLI exits 1, never
another status: see ``cli/wal.py``; the message or traceback is in
``worker.log``). A killed worker leaves no status for what it had in flight:
the ``wal-push`` that started it sees it die and fails, any other starts a
new worker once the lock is free. The foreground call reports every
recorded error.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from janua_backup import spool
from janua_backup.commands.common import open_repo
from janua_backup.config import Settings
from janua_backup.errors import InputError, JanuaError, StorageError
from janua_backup.pg import control
from janua_backup.repository import marker, wal_archive
from janua_backup.repository.objects import Repo

log = logging.getLogger(__name__)

IDLE_LINGER_S = 2.0
_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class WorkerResult:
    ran: bool  # False: another worker held the lock
    stored: int
    already_archived: int
    failed: int
    size_bytes: int
    duration_s: float


@dataclass(frozen=True, slots=True)
class _Pushed:
    name: str
    identity: spool.FileIdentity
    outcome: str


def run(settings: Settings, *, idle_linger_s: float = IDLE_LINGER_S) -> WorkerResult:
    started = time.monotonic()
    pgdata = Path(settings.postgres.pgdata or os.getcwd())
    directory = spool.archive_dir(spool.resolve_root(settings.wal.spool_dir, pgdata))
    with spool.WorkerLock(directory) as lock:
        if not lock.held:
            log.info("wal-push-worker: another worker runs (%s); nothing to do", directory)
            return WorkerResult(
                ran=False, stored=0, already_archived=0, failed=0, size_bytes=0,
                duration_s=time.monotonic() - started,
            )  # fmt: skip
        spool.write_pid(directory)
        try:
            work = _Run(settings, pgdata / "pg_wal", directory, idle_linger_s)
            log.info("wal-push-worker start pid=%d jobs=%d", os.getpid(), work.jobs)
            work.loop()
        finally:
            spool.clear_pid(directory)
    result = WorkerResult(
        ran=True, stored=work.stored, already_archived=work.already, failed=work.failed,
        size_bytes=work.size_bytes, duration_s=time.monotonic() - started,
    )  # fmt: skip
    log.info(
        "wal-push-worker stored=%d already_archived=%d failed=%d size_bytes=%d duration_s=%.3f",
        result.stored,
        result.already_archived,
        result.failed,
        result.size_bytes,
        result.duration_s,
    )
    return result


class _Run:
    """One worker run: the scan-submit-record loop and its counters."""

    def __init__(self, settings: Settings, pg_wal: Path, directory: Path, linger_s: float) -> None:
        self.settings = settings
        self.pg_wal = pg_wal
        self.directory = directory
        self.linger_s = linger_s
        self.jobs = settings.wal.async_jobs or os.cpu_count() or 1
        self.cap = settings.wal.async_max_segments
        self.repo: Repo | None = None
        self.marker: marker.Marker | None = None
        self.in_flight: dict[Future[_Pushed], str] = {}
        self.stored = self.already = self.failed = self.size_bytes = 0

    def loop(self) -> None:
        spool.prune(self.directory, spool.ready_segments(self.pg_wal), temp_files=True)
        idle_since: float | None = None
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="janua-push") as pool:
            try:
                while True:
                    self._fill(pool.submit)
                    if self.in_flight:
                        idle_since = None
                        full = len(self.in_flight) >= self.jobs
                        done, _ = wait(self.in_flight, None if full else _POLL_S, FIRST_COMPLETED)
                        for future in done:
                            self._record(future)
                        continue
                    now = time.monotonic()
                    idle_since = now if idle_since is None else idle_since
                    if now - idle_since >= self.linger_s:
                        return
                    time.sleep(_POLL_S)
            except BaseException as exc:
                pool.shutdown(wait=False, cancel_futures=True)
                self._fail_in_flight(exc)
                raise

    def _fill(self, submit: Callable[..., Future[_Pushed]]) -> None:
        """Submits the oldest ready segments without a status, up to the free slots."""
        if len(self.in_flight) >= self.jobs:
            return
        ready = spool.ready_segments(self.pg_wal)
        have = spool.prune(self.directory, ready)
        busy = set(self.in_flight.values())
        todo = [name for name in ready if name not in have and name not in busy]
        if not todo:
            return
        room = self.cap - len(have) - len(busy)
        if room <= 0 and not busy:
            # Status files of newer segments fill the spool while PostgreSQL waits
            # for an older one (its earlier push failed): free a place for it.
            newest = max(have)
            if newest > todo[0]:
                spool.clear_status(self.directory, newest)
                room = 1
        todo = todo[: max(0, min(room, self.jobs - len(busy)))]
        if todo and self.repo is None:
            self._open(todo)
        for name in todo:
            self.in_flight[submit(self._push, name)] = name

    def _open(self, todo: list[str]) -> None:
        """Repository and marker, once; a failure is recorded for the segments at hand."""
        try:
            header = control.read_segment_header(self.pg_wal / todo[0])
            repo = open_repo(self.settings)
            found = marker.ensure(
                repo,
                system_identifier=header.system_identifier,
                wal_segment_size=header.segment_size,
                pg_major=None,
            )
        except JanuaError as error:
            for name in todo:
                spool.write_error(self.directory, name, error.message, error.exit_code)
                self.failed += 1
            raise
        self.repo, self.marker = repo, found

    def _push(self, name: str) -> _Pushed:
        """One segment, in a pool thread. Raises JanuaError for a failure of this segment."""
        assert self.repo is not None and self.marker is not None
        path = self.pg_wal / name
        try:
            identity = spool.FileIdentity.of(path)
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from exc
        # Nothing is stored unless the file is the segment its name says, of this cluster.
        control.read_named_segment_header(
            path,
            segment_size=self.marker.wal_segment_size,
            system_identifier=self.marker.system_identifier,
            pg_major=self.marker.pg_major,
        )
        outcome = wal_archive.push(self.repo, name, path)
        return _Pushed(name, identity, outcome.value)

    def _record(self, future: Future[_Pushed]) -> None:
        name = self.in_flight.pop(future)
        error = future.exception()
        if error is None:
            pushed = future.result()
            spool.write_ok(self.directory, name, pushed.identity, pushed.outcome)
            log.debug("wal-push-worker name=%s outcome=%s", name, pushed.outcome)
            if pushed.outcome == wal_archive.PushOutcome.STORED.value:
                self.stored += 1
            else:
                self.already += 1
            self.size_bytes += pushed.identity.size_bytes
            return
        if not isinstance(error, JanuaError):
            self.in_flight[future] = name  # recorded with the others by loop()'s handler
            raise error
        self.failed += 1
        log.warning("wal-push-worker name=%s error=%s", name, error.message)
        spool.write_error(self.directory, name, error.message, error.exit_code)

    def _fail_in_flight(self, exc: BaseException) -> None:
        """Records a failure for every segment in flight: their outcome is unknown."""
        if isinstance(exc, JanuaError):
            message, code = exc.message, exc.exit_code
        elif isinstance(exc, SystemExit | KeyboardInterrupt):
            message, code = (
                "the worker was stopped before this push finished",
                StorageError.exit_code,
            )
        else:
            message, code = f"unexpected error in the worker: {exc!r}", JanuaError.exit_code
        for name in self.in_flight.values():
            spool.write_error(self.directory, name, message, code)
            self.failed += 1
