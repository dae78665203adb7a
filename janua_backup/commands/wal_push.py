"""``wal-push %p``: PostgreSQL's archive_command.

Exit 0 means "durably stored" and nothing less: PostgreSQL recycles the
segment once we say so. The command checks which cluster the file comes
from (a segment names its system identifier in its first page header;
other files are checked through ``global/pg_control`` of the data
directory, which is the archiver's working directory) before it writes.

With ``[wal] archive_async = true`` a segment PostgreSQL has marked ready is
pushed by the background worker (``commands.wal_push_worker``), which pushes
every ready segment several at once, ahead of the archiver; this call only
reads the worker's verdict on its own segment from the spool (``spool``),
starting a worker if none runs and waiting up to ``ASYNC_WAIT_S`` for it.
The contract is unchanged: exit 0 only once the segment is stored, and an
error the worker met is raised here, so PostgreSQL logs it and retries.
Timeline history, backup history and ``.partial`` files, and files without a
``.ready`` marker (a push by hand), are always pushed by this call itself.

PostgreSQL runs this once per segment, one after the other, so start-up time
is archive throughput: the async path imports no storage, pipeline or
repository module (they load in ``_push_sync`` only).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from janua_backup import spool
from janua_backup.config import Settings
from janua_backup.errors import InputError, StorageError
from janua_backup.pg.wal import WalFileKind, classify

log = logging.getLogger(__name__)

ASYNC_WAIT_S = 60.0
"""How long one call waits for the worker's verdict on its segment. Past it the
call fails ("not archived yet") and PostgreSQL retries; the worker goes on."""
_POLL_S = 0.02
_SPAWN_INTERVAL_S = 1.0  # at most one new worker per second from one call
_WORKER_SIGNALS = (
    signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1,
    signal.SIGUSR2, signal.SIGPIPE, signal.SIGCHLD,
)  # fmt: skip


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
    from janua_backup.pg import control

    if kind in (WalFileKind.SEGMENT, WalFileKind.PARTIAL):
        header = control.read_named_segment_header(path)  # refused unless it is `path.name`
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
    if settings.wal.archive_async and kind is WalFileKind.SEGMENT:
        pg_wal = pgdata / "pg_wal"
        if spool.is_ready(pg_wal, path.name) and _same_file(path, pg_wal / path.name):
            outcome = _push_async(settings, path, pgdata)
            return _done(path, outcome, started, how="async")
    return _done(path, _push_sync(settings, path, kind, pgdata), started, how="sync")


def _done(path: Path, outcome: str, started: float, *, how: str) -> WalPushResult:
    result = WalPushResult(path.name, outcome, path.stat().st_size, time.monotonic() - started)
    log.info(
        "wal-push name=%s outcome=%s mode=%s duration_s=%.3f",
        result.name,
        result.outcome,
        how,
        result.duration_s,
    )
    return result


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


SEGMENT_PUT_BYTES = 17 * 1024 * 1024
"""A 16 MiB segment (PostgreSQL's default size) with the object format's framing,
even incompressible, is one PUT; bigger segments are uploaded in parts this big."""


def _push_sync(settings: Settings, path: Path, kind: WalFileKind, pgdata: Path) -> str:
    from janua_backup.commands.common import open_repo
    from janua_backup.pg import control
    from janua_backup.repository import marker, wal_archive

    identity = identify(path, kind, pgdata)
    # One segment is one stream: compress it on every core (~0.1 s less for gzip 6),
    # and store it with one PUT: a segment that compresses to more than the 5 MiB
    # of a multipart part would otherwise take four requests instead of one.
    repo = open_repo(
        settings,
        quick_start=True,
        threads=min(os.cpu_count() or 1, 4),
        part_size_bytes=SEGMENT_PUT_BYTES,
    )

    def check_marker() -> None:
        if identity.system_identifier is not None:
            found = marker.ensure(
                repo,
                system_identifier=identity.system_identifier,
                wal_segment_size=identity.wal_segment_size or 16 * 1024 * 1024,
                pg_major=None,
            )
            if kind in (WalFileKind.SEGMENT, WalFileKind.PARTIAL):
                # The name again, now with the cluster's segment size and major version.
                control.read_named_segment_header(
                    path,
                    segment_size=found.wal_segment_size,
                    system_identifier=found.system_identifier,
                    pg_major=found.pg_major,
                )
        else:
            existing = marker.read(repo)
            if existing is not None:
                marker.check_key(repo, existing)

    # The segment is compressed while the marker and the HEAD are asked for
    # (their round trips overlap the compression); nothing is sent before both
    # passed. A whole segment's codec output may wait: it is one PUT anyway.
    outcome = wal_archive.push(
        repo, path.name, path, check=check_marker, read_ahead_bytes=SEGMENT_PUT_BYTES
    )
    return outcome.value


def _push_async(settings: Settings, path: Path, pgdata: Path) -> str:
    """The worker's verdict on ``path``: its outcome, or its error raised here."""
    directory = spool.archive_dir(spool.resolve_root(settings.wal.spool_dir, pgdata))
    identity = spool.FileIdentity.of(path)
    status = spool.take_status(directory, path.name, identity)
    if status is None:
        status = _wait_for_worker(settings, directory, pgdata, path.name, identity)
    if not status.ok:
        raise spool.recorded_error(status)
    return status.detail


def _wait_for_worker(
    settings: Settings, directory: Path, pgdata: Path, name: str, identity: spool.FileIdentity
) -> spool.Status:
    """Polls for the status of ``name``, starting a worker whenever none runs.

    A worker may be about to exit when our segment became ready (its last scan
    came before), so the lock is probed again while we wait, not only once.
    """
    deadline = time.monotonic() + ASYNC_WAIT_S
    child: int | None = None
    last_spawn = float("-inf")
    while True:
        status = spool.take_status(directory, name, identity)
        if status is not None:
            return status
        if child is not None:
            code = _exit_code(child)
            if code is not None:
                child = None
                if code != 0 and (status := spool.take_status(directory, name, identity)):
                    return status
                if code != 0:
                    raise StorageError(
                        f"the async wal-push worker {_describe_exit(code)} before archiving "
                        f"{name}: {spool.last_log_line(directory) or 'no message'} "
                        f"(see {directory / spool.LOG_FILE})"
                    )
        now = time.monotonic()
        spawn_due = child is None and now - last_spawn >= _SPAWN_INTERVAL_S
        if spawn_due and not spool.worker_running(directory):
            child, last_spawn = _spawn_worker(settings, directory, pgdata), now
        if now > deadline:
            raise StorageError(
                f"segment {name} not archived yet by the async wal-push worker after "
                f"{ASYNC_WAIT_S:.0f}s (see {directory / spool.LOG_FILE}); PostgreSQL will retry"
            )
        time.sleep(_POLL_S)


def _spawn_worker(settings: Settings, directory: Path, pgdata: Path) -> int:
    """Starts ``janua-backup wal-push-worker`` detached: its own session, stdin and
    stdout on /dev/null, stderr appended to ``worker.log``; returns its pid.

    ``posix_spawn`` rather than ``subprocess``: the worker is meant to outlive
    this call, and a ``Popen`` dropped while its child runs is reported as a
    leak. The worker inherits this call's working directory (PostgreSQL's
    archiver runs us in the data directory), so relative paths in the
    configuration mean the same to both; the data directory is passed as
    ``--pgdata``, and the repository flags as given, since only the config
    file path and the environment reach the worker otherwise.
    """
    argv = [sys.executable, "-m", "janua_backup"]
    if settings.config_path:
        argv += ["--config", settings.config_path]
    argv += ["--pgdata", str(pgdata.resolve())]
    for flag, value in (
        ("--repo", settings.repository.url),
        ("--s3-endpoint", settings.s3.endpoint),
        ("--s3-region", settings.s3.region),
    ):
        if value:
            argv += [flag, value]
    argv.append("wal-push-worker")
    log_fd = spool.open_log(directory)
    try:
        actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, log_fd, 2),
        ]
        actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inherited_fds() if fd != log_fd]
        return os.posix_spawn(
            sys.executable,
            argv,
            os.environ,
            file_actions=actions,
            setsid=True,
            setsigmask=(),
            setsigdef=_WORKER_SIGNALS,
        )
    except OSError as exc:
        raise StorageError(f"cannot start the async wal-push worker: {exc}") from exc
    finally:
        os.close(log_fd)


def _inherited_fds() -> list[int]:
    """Descriptors above stderr that an exec would pass on (PostgreSQL's, the shell's).

    Python opens its own files close-on-exec; what it inherited may not be.
    """
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return []
    found = []
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    found.append(fd)
            except OSError:
                pass  # the descriptor listdir itself used, closed by now
    return found


def _exit_code(pid: int) -> int | None:
    """The worker's exit code (negative: killed by that signal), None while it runs."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return 0  # reaped elsewhere; the lock probe tells whether one still runs
    return None if done == 0 else os.waitstatus_to_exitcode(status)


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"was killed by signal {-code}"
    return f"exited with status {code}"
