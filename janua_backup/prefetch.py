"""The prefetch spool: WAL segments fetched ahead of PostgreSQL, handed over by rename.

PostgreSQL runs ``restore_command`` once per segment and waits for each, so
replay from an object store is paced by one round trip (plus a process start
and a decompression) per 16 MiB. ``wal-fetch`` therefore starts a prefetcher
(``commands.wal_prefetch``) that downloads the next segments of the same
timeline in parallel into this spool; the next ``wal-fetch`` finds its segment
here and hands it over with one ``rename``. The model is WAL-G's
``wal_prefetcher.go``. What differs: one long-lived prefetcher per recovery
that follows PostgreSQL's requests (WAL-G forks one per call), so the S3
client, its connections and the interpreter start once; a ``wal-fetch`` that
finds its segment still downloading waits for it rather than downloading it
a second time; and a spooled file is checked again when it is handed over.

Layout of ``<spool>/prefetch/`` (``<spool>``: ``wal.spool_dir``, default
``<pgdata>/pg_wal/.janua-spool``, which is on the filesystem of ``%p`` =
``pg_wal/RECOVERYXLOG``, so the hand-over is an atomic rename; a ``spool_dir``
elsewhere must serve one data directory only, and a copy replaces the rename
when it is on another filesystem):

* ``<segment name>``: a complete segment. It only ever appears under its final
  name: the prefetcher writes ``.<name>.janua-tmp`` (``localfs.atomic_write``),
  checks the archive's checksums, the size and the first page header on the
  way, fsyncs, then renames. A crash leaves a temp file, never a short segment
  under a segment's name.
* ``request``: the segment PostgreSQL asked for last, rewritten (atomically) by
  every ``wal-fetch`` of a segment. The prefetcher follows it: it keeps the
  ``N`` segments after it on its timeline, so a timeline switch (the request
  jumps to the new timeline) moves the window with it.
* ``lock``: ``flock`` held by the running prefetcher. ``wal-fetch`` takes it
  when it is free and lets the prefetcher it starts inherit the locked
  descriptor: the lock is held from the moment the start is decided, so the
  dozens of ``wal-fetch`` calls PostgreSQL makes while a new prefetcher is
  still importing its libraries start no second one. The kernel releases it
  when the prefetcher dies, however it dies.
* ``prefetch.log``: the prefetcher's stderr (moved to ``prefetch.log.1``
  beyond 1 MiB when a new prefetcher starts).

Verification: a file here is used only if its size is the cluster's segment
size and its first page header passes ``wal.check_segment_header`` for the name
PostgreSQL asked for and the system identifier in ``pg_control`` of the data
directory being recovered (the check ``wal-fetch`` applies to the archive too).
A file that fails is deleted and the segment is fetched from the archive as if
it had never been prefetched. The full check (archive
checksums) happened before the file got its name; fsync before the rename
makes that check still hold after a crash.

Who removes what: the prefetcher removes every segment outside its window
(the requested one and the ``N`` after it), which covers segments PostgreSQL
has passed and those of a timeline it left; when recovery ends, the server
stops, or nobody asks for a minute, it removes all it spooled and exits.
``wal-fetch``, when no prefetcher runs, removes everything that is not ahead
of the segment it was asked for, and stray temp files.

Prefetching happens only while the data directory is in archive recovery
(``recovery.signal`` or ``standby.signal`` beside a ``global/pg_control``):
``restore_command`` runs with the data directory as working directory, and a
``wal-fetch`` run by hand elsewhere behaves exactly as without prefetch.

Nothing of storage, pipeline, repository or PostgreSQL connections: this
module handles local files only; downloads live in ``commands.wal_prefetch``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import stat
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from janua_backup.errors import FormatError, InputError, JanuaError
from janua_backup.localfs import atomic_write, read_chunks
from janua_backup.pg import control
from janua_backup.pg.control import ControlData
from janua_backup.pg.wal import WalSegment, check_segment_header, checked_segment
from janua_backup.spool import hand_over_line, install_script, resolve_root, secure_dir

log = logging.getLogger(__name__)

SUBDIR = "prefetch"
LOCK_FILE = "lock"
REQUEST_FILE = "request"
LOG_FILE = "prefetch.log"
LOG_ROTATE_BYTES = 1024 * 1024
TEMP_SUFFIX = ".janua-tmp"  # localfs.atomic_write's temp files: .<name>.janua-tmp
HEADER_BYTES = 64  # the long page header is 40 bytes
SIGNAL_FILES = ("recovery.signal", "standby.signal")
_SEGMENT_RE = re.compile(r"[0-9A-F]{24}")
_POLL_S = 0.02  # wal-fetch waiting for a segment the prefetcher is writing
_STALL_S = 3.0  # ... gives up once that file stopped growing for this long


HAND_OVER_SCRIPT = "wal-fetch.1.sh"  # a new number when its arguments or exit codes change

# The script, as ``sh <spool>/wal-fetch.1.sh %f "%p"`` runs it in the data
# directory. A link under a segment's name is not handed over (the prefetcher
# writes files), and the request goes through a temp name of this shell's own,
# created with noclobber (O_EXCL): a file or link found there is never written through.
HAND_OVER_TEXT = f"""\
# janua-backup: the start of restore_command with [wal] prefetch_segments.
# Written by janua-backup, which rewrites it whenever it differs: do not edit.
# Exit 0 once the prefetched segment $1 is moved to $2; 1 for anything else,
# and the command line then runs wal-fetch itself.
set -C
d=${{0%/*}}/{SUBDIR}
t=$d/{REQUEST_FILE}.new.$$
[ -f "$d/$1" ] && [ ! -h "$d/$1" ] && printf %s "$1" > "$t" &&
    mv -f "$t" "$d/{REQUEST_FILE}" &&
    mv -f "$d/$1" "$2" || exit 1
echo "$(date -u '+%Y-%m-%d %H:%M:%SZ') INFO janua_backup.prefetch:" \
    "wal-fetch name=$1 source=prefetch (shell)" >&2
"""


def shell_hand_over(spool_dir: str | None) -> str:
    """The start of ``restore_command``: a spooled segment goes to PostgreSQL without
    starting Python.

    Replay is otherwise paced by one interpreter start per segment (~80 ms, most of
    a hit's cost). Everything the Python hand-over would add is already true here:
    a segment appears under its name in the spool only after the prefetcher checked
    its archive checksums, size and first page header and fsynced it, and the
    spool is this user's, mode 0700 (``spool.secure_dir``, checked by every
    wal-fetch and prefetcher before it installs this script), so nobody else can
    have put a file there. The script records the request like ``wal-fetch``
    does, so the prefetcher keeps following, and logs one line. Anything else (a
    miss, a history file, a failed ``mv``, no script yet) runs ``wal-fetch``
    itself, through ``exec`` so that its exit status is the command's.
    """
    return hand_over_line(spool_dir, HAND_OVER_SCRIPT, '"%p"')


def directory(spool_dir: str | None, pgdata: Path) -> Path:
    """``<spool>/prefetch``: the part of the spool that belongs to prefetching."""
    return resolve_root(spool_dir, pgdata) / SUBDIR


def recovery_control(pgdata: Path) -> ControlData | None:
    """``pg_control`` of ``pgdata`` if it is a data directory in archive recovery, else None.

    None means "do not prefetch" (run by hand outside a data directory,
    ``pg_rewind``, recovery over); the caller then fetches as without prefetch.
    """
    if not any((pgdata / name).exists() for name in SIGNAL_FILES):
        return None
    try:
        return control.read_control(pgdata)
    except (InputError, FormatError):
        return None


def window(after: WalSegment, count: int) -> list[WalSegment]:
    """The ``count`` segments after ``after`` on its timeline (what PostgreSQL asks next).

    Only the same timeline: where a timeline switch comes, PostgreSQL asks
    for a name on the new one, which the request file then carries.
    """
    result: list[WalSegment] = []
    for step in range(1, count + 1):
        try:
            result.append(
                WalSegment.from_number(after.timeline, after.number + step, after.segment_size)
            )
        except InputError:  # the end of the 64-bit WAL address space
            break
    return result


def check_segment(
    head: bytes, size_bytes: int, segment: WalSegment, system_identifier: int
) -> None:
    """Raise ``FormatError`` or ``RepositoryMismatch`` unless these are ``segment``'s bytes.

    ``head`` is the start of the file (at least the 40-byte long page header);
    the check is ``wal.check_segment_header``, the one every path uses.
    """
    check_segment_header(head, segment, system_identifier)
    if size_bytes != segment.segment_size:
        raise FormatError(
            f"{segment.name} is {size_bytes} bytes long, not the segment size "
            f"{segment.segment_size}"
        )


def verified(
    chunks: Iterable[bytes], segment: WalSegment, system_identifier: int
) -> Iterator[bytes]:
    """Pass ``chunks`` through, checking the header on the way and the size at the end.

    Meant as the input of ``atomic_write``: an error raised here, even after
    the last chunk, comes before the rename, so a segment that fails never
    gets its name.
    """
    return checked_segment(chunks, segment, system_identifier)


@dataclass(frozen=True, slots=True)
class Request:
    """The last segment asked for; ``stamp`` tells a repeated ask of the same name apart."""

    name: str
    stamp: tuple[int, int]  # inode and mtime of the request file: each write makes a new file


@dataclass(frozen=True, slots=True)
class PrefetchSpool:
    """``<spool>/prefetch`` and the operations both sides perform on it."""

    path: Path

    @classmethod
    def open(cls, path: Path) -> PrefetchSpool:
        """The spool at ``path`` (``<root>/prefetch``), created (mode 0700) if missing,
        with the shell hand-over script in ``<root>``; ``ConfigError`` if either level
        is not this user's alone (``spool.secure_dir``)."""
        secure_dir(path.parent)
        secure_dir(path)
        install_script(path.parent, HAND_OVER_SCRIPT, HAND_OVER_TEXT)
        return cls(path)

    def segment_path(self, name: str) -> Path:
        return self.path / name

    def temp_path(self, name: str) -> Path:
        return self.path / f".{name}{TEMP_SUFFIX}"

    @property
    def log_path(self) -> Path:
        return self.path / LOG_FILE

    def spooled(self) -> list[str]:
        """Names of the complete segment files, in name order."""
        return sorted(name for name in os.listdir(self.path) if _SEGMENT_RE.fullmatch(name))

    # -- the request file ------------------------------------------------------------------

    def note_request(self, name: str) -> None:
        """Record that PostgreSQL asked for ``name`` (temp + rename: never read half-written).

        No fsync: after a crash PostgreSQL asks again and the file is rewritten.
        """
        # Not a temp name (prune must not take it), and this process's own: created
        # with O_EXCL | O_NOFOLLOW, so a file or link found there is never written through.
        tmp = self.path / f"{REQUEST_FILE}.new.{os.getpid()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileExistsError:  # left by a killed process with this pid
            tmp.unlink()
            fd = os.open(tmp, flags, 0o600)
        try:
            os.write(fd, name.encode("ascii"))
        finally:
            os.close(fd)
        os.replace(tmp, self.path / REQUEST_FILE)

    def request(self) -> Request | None:
        """The last request, or None if there is none (or the file is not a segment name)."""
        try:
            fd = os.open(self.path / REQUEST_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, IsADirectoryError):
            return None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            return None  # a link: not a request anyone here wrote
        try:
            st = os.fstat(fd)
            name = os.read(fd, 64).decode("ascii", "replace")
        finally:
            os.close(fd)
        if not _SEGMENT_RE.fullmatch(name):
            return None
        return Request(name, (st.st_ino, st.st_mtime_ns))

    # -- the lock --------------------------------------------------------------------------

    def try_lock(self) -> int | None:
        """The locked descriptor of ``lock``, or None if a prefetcher holds it."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.path / LOCK_FILE, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def adopt_lock(self, fd: int) -> int:
        """Check that the inherited descriptor ``fd`` is this spool's lock, and holds it."""
        try:
            mine = os.stat(self.path / LOCK_FILE)
            theirs = os.fstat(fd)
            same = (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)
            if same:
                # Converts our own lock in place: succeeds at once if we hold it.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise InputError(f"--lock-fd {fd} is not usable: {exc.strerror}") from exc
        if not same:
            raise InputError(f"--lock-fd {fd} is not {self.path / LOCK_FILE}")
        os.set_inheritable(fd, False)
        return fd

    # -- hand-over -------------------------------------------------------------------------

    def take(self, segment: WalSegment, dest: Path, system_identifier: int) -> int | None:
        """Move the spooled ``segment`` to ``dest`` after checking it; its size, or None.

        None when it is not spooled, or was spooled but fails the check (then
        it is deleted): the caller fetches it from the archive.
        """
        path = self.segment_path(segment.name)
        try:
            found = _head(path)
            if found is None:
                return None
            size, head = found
            check_segment(head, size, segment, system_identifier)
        except JanuaError as exc:
            log.warning(
                "wal-fetch name=%s prefetched file rejected (%s); fetching it from the archive",
                segment.name,
                exc.message,
            )
            _unlink(path)
            return None
        try:
            os.rename(path, dest)
        except FileNotFoundError:
            return None  # removed by the prefetcher in the meantime: the archive has it
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # wal.spool_dir on another filesystem: a copy, still atomic at dest.
            atomic_write(dest, read_chunks(path), mode=0o600)
            _unlink(path)
        return size

    def drop_unverified(self, system_identifier: int, segment_size: int) -> list[str]:
        """Remove every spooled file that is not a segment of this cluster (the check
        ``take`` makes); the names removed.

        For a prefetcher starting on a spool it did not fill (one killed before it,
        a ``wal.spool_dir`` an earlier recovery used): the shell hand-over trusts
        what is there, so what is there must be what a prefetcher of this
        cluster wrote and verified.
        """
        dropped = []
        for name in self.spooled():
            try:
                segment = WalSegment.parse(name, segment_size)
                found = _head(self.segment_path(name))
                if found is not None:
                    check_segment(found[1], found[0], segment, system_identifier)
            except JanuaError:
                _unlink(self.segment_path(name))
                dropped.append(name)
        return dropped

    def wait_in_flight(self, name: str, stall_s: float = _STALL_S) -> bool:
        """Wait while the prefetcher writes ``name``; True once it is complete.

        False at once if no download of it is under way, and as soon as its temp
        file disappears without the segment (failed) or stops growing for
        ``stall_s`` (storage stalled): the caller then asks the archive itself.
        Downloading the same segment twice at once would only slow both down.
        """
        final, temp = self.segment_path(name), self.temp_path(name)
        last_size, last_growth = -1, time.monotonic()
        while True:
            if final.exists():
                return True
            try:
                size = temp.stat().st_size
            except FileNotFoundError:
                return final.exists()
            now = time.monotonic()
            if size != last_size:
                last_size, last_growth = size, now
            elif now - last_growth > stall_s:
                return False
            time.sleep(_POLL_S)

    # -- cleaning --------------------------------------------------------------------------

    def prune(self, keep: Collection[str], *, keep_temps: Collection[str] = ()) -> set[str]:
        """Remove segment files not in ``keep`` and temp files not in ``keep_temps``.

        Returns the names of the segment files that remain.
        """
        remaining: set[str] = set()
        for entry in os.listdir(self.path):
            if _SEGMENT_RE.fullmatch(entry):
                if entry in keep:
                    remaining.add(entry)
                else:
                    _unlink(self.path / entry)
            elif _is_temp(entry) and entry[1 : -len(TEMP_SUFFIX)] not in keep_temps:
                _unlink(self.path / entry)
        return remaining

    def clean(self, current: WalSegment) -> None:
        """Keep only segments ahead of ``current`` on its timeline; drop every temp file.

        For ``wal-fetch`` when no prefetcher runs (it holds the lock): what is
        behind, or on a timeline PostgreSQL has left, will not be asked for.
        """
        ahead = set()
        for name in self.spooled():
            try:
                segment = WalSegment.parse(name, current.segment_size)
            except InputError:
                continue
            if segment.timeline == current.timeline and segment.number > current.number:
                ahead.add(name)
        self.prune(ahead)

    def rotate_log(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.log_path.stat().st_size > LOG_ROTATE_BYTES:
                os.replace(self.log_path, self.path / f"{LOG_FILE}.1")

    # -- starting the prefetcher -----------------------------------------------------------

    def start(self, argv: Sequence[str], lock_fd: int) -> int:
        """Start ``argv`` detached (own session, no terminal, stdin and stdout on /dev/null,
        stderr appended to ``prefetch.log``), inheriting the locked ``lock_fd``; its pid.

        ``posix_spawn`` rather than ``subprocess``: nothing to import on the
        ``wal-fetch`` path, and no child object whose collection warns.
        """
        self.rotate_log()
        os.set_inheritable(lock_fd, True)
        try:
            actions = [
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (
                    os.POSIX_SPAWN_OPEN,
                    2,
                    str(self.log_path),
                    os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW,
                    0o600,
                ),
            ]
            return os.posix_spawn(
                argv[0], list(argv), dict(os.environ), file_actions=actions, setsid=True
            )
        finally:
            os.set_inheritable(lock_fd, False)


def _head(path: Path) -> tuple[int, bytes] | None:
    """Size and first bytes of the regular file at ``path``; None if there is none.

    ``O_NOFOLLOW``: a link under a segment's name is not a file the prefetcher
    wrote (it writes files and renames them), so it is refused, never followed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise FormatError(f"{path} is a symbolic link, not a segment file") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FormatError(f"{path} is not a regular file")
        return st.st_size, os.read(fd, HEADER_BYTES)
    finally:
        os.close(fd)


def _is_temp(entry: str) -> bool:
    return entry.startswith(".") and entry.endswith(TEMP_SUFFIX)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
