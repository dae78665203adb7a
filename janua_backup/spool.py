"""The local spool of asynchronous ``wal-push``: status files, the worker lock, its log.

With ``[wal] archive_async = true`` a background worker pushes the segments
PostgreSQL has marked ready (``pg_wal/archive_status/<name>.ready``) ahead of
the archiver, several at once, and records the outcome of each here, in
``<spool>/archive/``:

* ``<name>.ok``: the segment is durably stored. One line: size, mtime (ns) and
  inode of the file that was pushed, then the outcome ("stored" or "already
  archived"). The foreground ``wal-push`` trusts an ``.ok`` only if its own
  file still has that identity, so a status file that outlived its segment
  (a copied or rewound data directory) can never vouch for other bytes.
* ``<name>.error``: the push failed. One line: the exit code, a tab, the
  message. The foreground call for that segment removes it and raises the
  error, so PostgreSQL logs it and retries (and the retry pushes again).

Status files are written atomically (temp file, fsync, rename, fsync of the
directory): a worker killed mid-write leaves a temp file, never a half status.
Nothing is marked ``.ok`` before the storage call that stores it returned.

Who removes what: the worker removes the status of every segment whose
``.ready`` file is gone (PostgreSQL renamed it to ``.done``), at start and on
every scan, and temp files a killed worker left. The foreground removes an
``.error`` it reports; it leaves an ``.ok`` in place (see ``take_status``).
The worker never lets the status files outnumber ``wal.async_max_segments``.

One worker per cluster and host: it holds ``worker.lock`` (``flock``, released
by the kernel when the process dies, even by SIGKILL) and writes its pid to
``worker.pid``; its stderr goes to ``worker.log``. The spool directory is made
mode 0700 by whoever comes first, normally the postgres user; one that another
user owns or others may enter is refused (``secure_dir``), and files in it are
opened without following links.

The root of the spool also holds the hand-over script of ``archive_command``
(``HAND_OVER_SCRIPT``) and, from ``prefetch``, that of ``restore_command``: the
root is where both sides find them, it belongs to the user PostgreSQL runs as
(checked here, and by ``[ -O ]`` in the line), the default is a short relative
path inside the data directory (whose mode PostgreSQL itself enforces), and
``pg_wal``'s contents are never backed up, so a restore never brings one back.

Imports only ``errors`` and ``localfs``: nothing of storage, PostgreSQL
connections or configuration.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from janua_backup.errors import ConfigError, JanuaError
from janua_backup.localfs import atomic_write

ARCHIVE_SUBDIR = "archive"
DEFAULT_SUBDIR = ".janua-spool"  # under pg_wal: same filesystem, skipped by base backups
OK_SUFFIX = ".ok"
ERROR_SUFFIX = ".error"
TEMP_SUFFIX = ".janua-tmp"  # localfs.atomic_write's temp files: .<name>.janua-tmp
LOCK_FILE = "worker.lock"
PID_FILE = "worker.pid"
LOG_FILE = "worker.log"
LOG_ROTATE_BYTES = 1024 * 1024  # worker.log is moved to worker.log.1 beyond this
LOCK_RETRY_S = 0.5  # a foreground probe holds the lock for microseconds; wait that out
_LOCK_RETRY_STEP_S = 0.01
_SEGMENT_RE = re.compile(r"[0-9A-F]{24}")


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What tells one WAL file from another under the same name (a recycled or copied one)."""

    size_bytes: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        st = path.stat()
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(frozen=True, slots=True)
class Status:
    """A recorded outcome: ``ok`` with the pushed file's identity, or an error."""

    name: str
    ok: bool
    detail: str  # the outcome ("stored", "already archived") or the error message
    exit_code: int = 0
    identity: FileIdentity | None = None


def resolve_root(spool_dir: str | None, pgdata: Path) -> Path:
    """``wal.spool_dir``, or ``<pgdata>/pg_wal/.janua-spool`` when unset."""
    return Path(spool_dir) if spool_dir else pgdata / "pg_wal" / DEFAULT_SUBDIR


def archive_dir(root: Path) -> Path:
    """``<root>/archive``, created (mode 0700, both levels) if missing, both checked
    with ``secure_dir``; the shell hand-over script installed (``install_script``)."""
    secure_dir(root)
    directory = secure_dir(root / ARCHIVE_SUBDIR)
    install_script(root, HAND_OVER_SCRIPT, HAND_OVER_TEXT)
    return directory


def secure_dir(path: Path) -> Path:
    """``path``, created mode 0700 if missing; ``ConfigError`` unless this user owns it
    and nobody else has any access to it.

    Everything in a spool is trusted: a status there says a segment is stored,
    a segment there goes to PostgreSQL as WAL, a script there runs as
    PostgreSQL's own commands. A directory another user owns, or one others may
    write, could hold any of them planted; it is refused, never repaired.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()  # follows: a spool_dir may be a link its administrator made
    except OSError as exc:
        raise ConfigError(
            f"cannot create the WAL spool directory {path}: {exc.strerror}; "
            "set wal.spool_dir to a directory the PostgreSQL user may write"
        ) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"the WAL spool directory {path} is not a directory; remove it")
    if st.st_uid != os.geteuid():
        raise ConfigError(
            f"the WAL spool directory {path} belongs to uid {st.st_uid}, not to this user "
            f"(uid {os.geteuid()}), so its files cannot be trusted; remove it, or set "
            "wal.spool_dir to a directory of the PostgreSQL user with mode 0700"
        )
    if st.st_mode & 0o077:
        raise ConfigError(
            f"the WAL spool directory {path} has mode {stat.S_IMODE(st.st_mode):04o}, so "
            f"other users may plant files in it; run chmod 700 {path}"
        )
    return path


def install_script(root: Path, name: str, text: str) -> Path:
    """``<root>/<name>`` holding exactly ``text``, mode 0700, this user's: rewritten
    (atomically) whenever it is anything else.

    Run before every use by the Python side of a hand-over, so a script of
    another release, a damaged or edited one, is replaced before PostgreSQL's
    next call; the command line runs it only when it and ``root`` are this
    user's (``[ -O ]``), and ``secure_dir`` made sure nobody else writes there.
    """
    path = root / name
    want = text.encode()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        fd = None  # missing, or a link: replaced below
    if fd is not None:
        try:
            st = os.fstat(fd)
            found = os.read(fd, len(want) + 1)
        finally:
            os.close(fd)
        if (
            stat.S_ISREG(st.st_mode)
            and st.st_uid == os.geteuid()
            and stat.S_IMODE(st.st_mode) == 0o700
            and found == want
        ):
            return path
    try:
        atomic_write(path, [want], mode=0o700)
        os.chmod(path, 0o700, follow_symlinks=False)  # whatever the umask took away
    except OSError as exc:
        raise ConfigError(
            f"cannot write {path}: {exc.strerror}; remove it, or set wal.spool_dir to a "
            "directory of the PostgreSQL user with mode 0700"
        ) from exc
    return path


def shell_root(spool_dir: str | None) -> str:
    """The spool's root as a command PostgreSQL runs in the data directory names it:
    quoted for sh and %-escaped for PostgreSQL, relative for the default spool."""
    import shlex  # only commands that write those commands need it, not wal-push

    if spool_dir:
        return shlex.quote(str(Path(spool_dir))).replace("%", "%%")
    return f"pg_wal/{DEFAULT_SUBDIR}"


def hand_over_line(spool_dir: str | None, script: str, path: str) -> str:
    """The start of a command line that runs ``script`` of the spool with ``%f`` and
    ``path``, and on any other outcome than exit 0 ``exec``s what follows.

    The script runs only if both the spool and the script belong to the user
    PostgreSQL runs as: a file of another user there (a spool_dir made by
    someone else in /tmp) is never run; wal-push or wal-fetch then refuse that
    spool with an error. A missing script (the first call, a fresh spool) simply
    means the Python program runs, which installs it.
    """
    quoted = f'"$d/{script}"'
    return (
        f'd={shell_root(spool_dir)}; [ -O "$d" ] && [ -O {quoted} ]'
        f" && /bin/sh {quoted} %f {path} || exec "
    )


SHELL_WAIT_POLLS = 250  # archive_command's shell waits at most ~5 s for a running worker
HAND_OVER_SCRIPT = "wal-push.1.sh"  # a new number when its arguments or exit codes change

# The script, as ``sh <spool>/wal-push.1.sh %f %p`` runs it in the data directory.
# The shell trusts an .ok exactly as take_status does: only if the file now at %p
# has the size, mtime (ns) and inode the line records (GNU stat; on a stat that
# prints anything else nothing matches); "seconds.nanoseconds" loses its dot to tr
# and becomes the recorded mtime_ns. An .ok of another file ends the wait at once
# (wal-push removes it and pushes). While the worker named in worker.pid lives and
# no .error is there, the shell waits for the .ok (at most SHELL_WAIT_POLLS x 20 ms)
# instead of starting Python to wait: in a backlog those starts took the CPU the
# worker compresses with. A sleep that refuses fractions ends the wait.
HAND_OVER_TEXT = f"""\
# janua-backup: the start of archive_command with [wal] archive_async.
# Written by janua-backup, which rewrites it whenever it differs: do not edit.
# Exit 0 only when the async worker stored the very file at $2 (name $1);
# 1 for anything else, and the command line then runs wal-push itself.
d=${{0%/*}}/{ARCHIVE_SUBDIR}
n=0
while :; do
    if [ -f "$d/$1{OK_SUFFIX}" ]; then
        if read -r size mtime inode outcome < "$d/$1{OK_SUFFIX}" &&
            [ "$size $mtime $inode" = "$(stat -c '%s %.9Y %i' "$2" | tr -d .)" ]; then
            echo "$(date -u '+%Y-%m-%d %H:%M:%SZ') INFO janua_backup.spool:" \
                "wal-push name=$1 outcome=$outcome mode=async (shell)" >&2
            exit 0
        fi
        exit 1
    fi
    [ $n -lt {SHELL_WAIT_POLLS} ] && [ ! -f "$d/$1{ERROR_SUFFIX}" ] && [ -f "$d/{PID_FILE}" ] &&
        read -r pid < "$d/{PID_FILE}" && kill -0 "$pid" 2>/dev/null && sleep 0.02 || exit 1
    n=$((n + 1))
done
"""


def shell_hand_over(spool_dir: str | None) -> str:
    """The start of ``archive_command`` with ``archive_async``: a segment the worker
    has already stored is acknowledged without starting Python.

    In a backlog the worker runs ahead of the archiver, and each archive_command
    then only finds its ``.ok``; an interpreter start per segment (~0.1 s) was
    most of that, and paced the drain. The logic lives in ``HAND_OVER_TEXT``,
    a script in the spool that ``archive_dir`` installs: the line only calls
    it, so it stays far below PostgreSQL's 1024-byte limit (``pg.command_line``).
    Without that ``.ok`` it waits while the worker runs; anything else (no
    worker, an ``.error``, a stale or unreadable status, a history file, the
    wait over, no script yet) runs ``wal-push`` itself, through ``exec`` so
    that its exit status is the command's. It leaves the ``.ok`` in place, as
    the Python call does. The archiver runs the command in the data directory:
    the default spool is a relative path.
    """
    return hand_over_line(spool_dir, HAND_OVER_SCRIPT, "%p")


def ready_segments(pg_wal: Path) -> list[str]:
    """Names of the WAL segments PostgreSQL has marked ready to archive, oldest first.

    Only segments: timeline history, backup history and ``.partial`` files
    are pushed by the foreground call itself.
    """
    try:
        entries = os.listdir(pg_wal / "archive_status")
    except FileNotFoundError:
        return []
    names = (e[: -len(".ready")] for e in entries if e.endswith(".ready"))
    return sorted(n for n in names if _SEGMENT_RE.fullmatch(n))


def is_ready(pg_wal: Path, name: str) -> bool:
    return (pg_wal / "archive_status" / f"{name}.ready").exists()


def write_ok(directory: Path, name: str, identity: FileIdentity, outcome: str) -> None:
    line = f"{identity.size_bytes} {identity.mtime_ns} {identity.inode} {outcome}\n"
    atomic_write(directory / f"{name}{OK_SUFFIX}", [line.encode()], mode=0o600)


def write_error(directory: Path, name: str, message: str, exit_code: int) -> None:
    one_line = " ".join(message.split())
    line = f"{exit_code}\t{one_line}\n"
    atomic_write(directory / f"{name}{ERROR_SUFFIX}", [line.encode()], mode=0o600)


def read_status(directory: Path, name: str) -> Status | None:
    """The recorded outcome for ``name``, or None; an ``.ok`` wins over an ``.error``."""
    ok = _read_line(directory / f"{name}{OK_SUFFIX}")
    if ok is not None:
        parts = ok.split(" ", 3)
        with contextlib.suppress(ValueError, IndexError):
            identity = FileIdentity(int(parts[0]), int(parts[1]), int(parts[2]))
            return Status(name, ok=True, detail=parts[3], identity=identity)
        # Unreadable: treat it as absent; the worker overwrites or prunes it.
    error = _read_line(directory / f"{name}{ERROR_SUFFIX}")
    if error is not None:
        code, _, message = error.partition("\t")
        exit_code = int(code) if code.isdigit() else JanuaError.exit_code
        return Status(name, ok=False, detail=message or error, exit_code=exit_code)
    return None


def take_status(directory: Path, name: str, identity: FileIdentity) -> Status | None:
    """The status the foreground call for ``name`` acts on, consumed as it should be.

    An ``.error`` is removed (reported once; PostgreSQL's retry pushes again).
    An ``.ok`` for this very file stays: removing it would let the worker see
    the segment's ``.ready`` (PostgreSQL renames it only after we exit) with no
    status and push it a second time; the worker prunes it once ``.ready`` has
    gone. An ``.ok`` for another file under this name is stale: it is removed
    and None returned, so the segment is pushed again.
    """
    status = read_status(directory, name)
    if status is None:
        return None
    if status.ok and status.identity == identity:
        return status
    clear_status(directory, name)
    return None if status.ok else status


def clear_status(directory: Path, name: str) -> None:
    for suffix in (OK_SUFFIX, ERROR_SUFFIX):
        with contextlib.suppress(FileNotFoundError):
            (directory / f"{name}{suffix}").unlink()


def status_names(directory: Path) -> set[str]:
    """Segments with a status file (``.ok`` or ``.error``)."""
    names: set[str] = set()
    for entry in os.listdir(directory):
        stem, dot, suffix = entry.rpartition(".")
        if dot and f".{suffix}" in (OK_SUFFIX, ERROR_SUFFIX) and _SEGMENT_RE.fullmatch(stem):
            names.add(stem)
    return names


def prune(directory: Path, ready: Collection[str], *, temp_files: bool = False) -> set[str]:
    """Removes the status of segments not in ``ready``; returns the names still with one.

    ``temp_files``: also remove temp files a killed worker left (only safe
    while holding the worker lock, when nobody else writes here).
    """
    kept: set[str] = set()
    for name in status_names(directory):
        if name in ready:
            kept.add(name)
        else:
            clear_status(directory, name)
    if temp_files:
        for entry in os.listdir(directory):
            if entry.startswith(".") and entry.endswith(TEMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    (directory / entry).unlink()
    return kept


def recorded_error(status: Status) -> JanuaError:
    """The error a status recorded, as the class with that exit code when there is one."""
    cls = _classes_by_exit_code().get(status.exit_code)
    message = f"{status.name}: {status.detail} (recorded by the async wal-push worker)"
    if cls is not None:
        return cls(message)
    error = JanuaError(message)
    error.exit_code = status.exit_code  # an exit code of a newer release: keep it
    return error


def _classes_by_exit_code() -> dict[int, type[JanuaError]]:
    """The classes of ``errors`` by exit code; of two with one code, the more derived
    (``StorageError`` rather than its base). Subclasses defined elsewhere do not count."""
    from janua_backup import errors

    found: dict[int, type[JanuaError]] = {}
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, JanuaError):
            known = found.get(value.exit_code)
            if known is None or len(value.__mro__) > len(known.__mro__):
                found[value.exit_code] = value
    return found


class WorkerLock:
    """``flock`` on ``worker.lock``: at most one worker per spool, held while it runs.

    ``acquire`` retries for ``LOCK_RETRY_S``: a foreground ``worker_running``
    probe takes the lock for an instant, and a worker starting in that instant
    must not give up. A worker that really runs holds it for much longer.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait_s: float = LOCK_RETRY_S) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(_LOCK_RETRY_STEP_S)
                continue
            self._fd = fd
            return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> WorkerLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def worker_running(directory: Path) -> bool:
    """True if a worker holds the lock (probed by taking it for an instant)."""
    probe = WorkerLock(directory)
    if probe.acquire(wait_s=0.0):
        probe.release()
        return False
    return True


def write_pid(directory: Path) -> None:
    atomic_write(directory / PID_FILE, [f"{os.getpid()}\n".encode()], sync_dir=False)


def read_pid(directory: Path) -> int | None:
    line = _read_line(directory / PID_FILE)
    return int(line) if line and line.isdigit() else None


def clear_pid(directory: Path) -> None:
    """Removes ``worker.pid`` if it names this process."""
    if read_pid(directory) == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            (directory / PID_FILE).unlink()


def open_log(directory: Path) -> int:
    """A descriptor appending to ``worker.log`` (rotated once beyond ``LOG_ROTATE_BYTES``)."""
    path = directory / LOG_FILE
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(path, directory / f"{LOG_FILE}.1")
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)


def last_log_line(directory: Path) -> str:
    """The last non-empty line of ``worker.log`` ("" if none), for error messages."""
    try:
        with (directory / LOG_FILE).open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            tail = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _read_line(path: Path) -> str | None:
    """The file's text, stripped; None if it is missing, or a link (never followed:
    nothing here writes one, so it was planted)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, IsADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    with os.fdopen(fd, "rb") as handle:
        return handle.read(4096).decode("utf-8", errors="replace").strip()
