"""The repository lock: one backup or expire of a cluster at a time, across hosts.

Two cron jobs, two daemons on two hosts, or a person at a terminal may start a
backup (or an expire) of the same cluster at once; they share nothing but the
repository, so the lock lives there. Must not import: ``janua_backup.pg``,
``janua_backup.pipeline``, ``janua_backup.commands``. Records are plain JSON
bytes (they hold no secret), written without the pipeline so that any version
of janua-backup, whatever its key, can read who holds the lock.

Storage offers conditional *create* (``put(..., if_absent=True)``: S3
``If-None-Match: *``, a hard link on ``file://``) but no compare-and-swap, so
the lock is a sequence of generations ``locks/<name>/<seq>``
(``layout.lock_key``). The highest generation is the lock; its JSON record
names the purpose, owner, host, pid, start time and an expiry the live holder
pushes forward by rewriting its own key every ``ttl/3``.

* **acquire**: list the generations; if the highest record is live (not
  released, not expired), refuse with ``LockHeld`` (exit 42), unless its holder
  is provably gone (below). Otherwise create ``top + 1`` with ``if_absent``;
  ``ObjectExists`` means a peer won that generation: start over. A record
  carrying our own owner token (random per acquisition) is ours: our create
  landed although its answer was lost, so we hold that generation. After
  winning, list again: a generation above ours means a slower peer's stale
  create (below) raced us: delete ours, refuse. Then delete generations
  ``<= seq - 2``.
* **renew**: list; a generation above ours means we were taken over (we failed
  to renew in time), so the handle is *lost*; else overwrite our own key with
  a new expiry. A renewal that fails, or completes only after the previous
  expiry, also loses the lock: a peer may have read the expired record.
* **release**: stop the renewer, then rewrite our record with ``released``, so
  the next acquirer goes ahead at once instead of waiting for the expiry.

Why at most one live holder. (1) Each key is created at most once while it is
absent, so two processes cannot both win generation N. (2) The highest
generation never goes away: pruning deletes only ``<= seq - 2`` below the
pruner's own generation, and the race loser deletes only its own key, which is
below a higher one. So "the highest generation" only grows. (3) A process
holds N only if, after creating N, its listing shows nothing above N. By (2)
nothing above N existed when it created N either; and N did not exist, so the
highest was N-1 (which it had read as released or expired). A stalled peer
that read an old listing and creates a generation pruned long ago finds, on
its confirming listing, the higher generation that was already there: it
backs off. Keeping ``seq - 1`` means the common stalled peer, the one that saw
``seq - 1`` as the top and tries ``seq``, fails already on the create. (4) The
previous holder's lease ends at its written ``expires``: its renewer lists
before every rewrite and stops at the first generation above its own, and
``check()`` refuses once ``expires`` has passed without a renewal, so a long
backup that calls ``check()`` between files stops within one file of losing.

A holder that died (SIGKILL, OOM, a reboot of the container) cannot release.
When the live record names this host, this boot (``/proc/sys/kernel/random/boot_id``)
and this PID namespace, and its pid no longer exists (or is a zombie), nobody
can be renewing it: the acquirer takes over at once and logs one line saying so
(pgBackRest does the same with its lock files). A pid that exists may be a
reused one; that, another host, another boot or another namespace still waits
for the expiry: only a proof of death shortens the lease.

Limits. Expiry compares the holder's written ``expires`` with the acquirer's
clock: the ttl must exceed the clock skew between hosts (NTP keeps it far below
the default five minutes). A lock held by a process that died on another host
is taken over only once its ``expires`` passes (at most ``ttl`` after the death). A record
that cannot be parsed is treated as held until its object's modified time plus
``DEFAULT_TTL_S``, and the message names its key so a person can remove it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from janua_backup.errors import LockHeld, ObjectExists, ObjectNotFound, StorageError
from janua_backup.repository import layout
from janua_backup.storage.base import ObjectInfo, Storage

__all__ = [
    "DEFAULT_TTL_S",
    "LockHandle",
    "LockLost",
    "LockRecord",
    "acquire",
    "hold",
    "holder",
]

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 300.0
"""How long a lock lives without renewal; also how long an unreadable record blocks."""

RECORD_FORMAT = 1
_ATTEMPTS = 5  # rounds of list-then-create before giving up under heavy contention

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class LockLost(LockHeld):
    """A holder's lease ran out or another process took the lock over: stop the work."""


@dataclass(frozen=True, slots=True)
class LockRecord:
    """One generation's JSON record: who holds it, since when, and until when."""

    purpose: str  # "backup", "expire": what the holder is doing
    owner: str  # a random id per acquisition
    host: str
    pid: int
    started: datetime
    renewed: datetime
    expires: datetime
    released: bool = False
    boot_id: str | None = None  # the holder host's boot, None where unknown
    pid_ns: str | None = None  # the holder's PID namespace (containers share a boot id)

    def is_live(self, now: datetime) -> bool:
        return not self.released and now < self.expires

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "format": RECORD_FORMAT,
                "purpose": self.purpose,
                "owner": self.owner,
                "host": self.host,
                "pid": self.pid,
                "started": _iso(self.started),
                "renewed": _iso(self.renewed),
                "expires": _iso(self.expires),
                "released": self.released,
                "boot_id": self.boot_id,
                "pid_ns": self.pid_ns,
            },
            indent=1,
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LockRecord:
        """Raises ``ValueError`` for anything but a record this version understands."""
        fields = json.loads(data)
        if not isinstance(fields, dict) or fields.get("format") != RECORD_FORMAT:
            raise ValueError("not a lock record of format 1")
        texts = {name: fields.get(name) for name in ("purpose", "owner", "host")}
        pid, released = fields.get("pid"), fields.get("released")
        if not all(isinstance(text, str) for text in texts.values()):
            raise ValueError("purpose, owner and host must be strings")
        if type(pid) is not int or type(released) is not bool:
            raise ValueError("pid must be an integer and released a boolean")
        machine = {name: fields.get(name) for name in ("boot_id", "pid_ns")}
        if not all(value is None or isinstance(value, str) for value in machine.values()):
            raise ValueError("boot_id and pid_ns must be strings")
        return cls(
            purpose=str(texts["purpose"]),
            owner=str(texts["owner"]),
            host=str(texts["host"]),
            pid=pid,
            started=_parse_time(fields.get("started")),
            renewed=_parse_time(fields.get("renewed")),
            expires=_parse_time(fields.get("expires")),
            released=released,
            boot_id=machine["boot_id"],
            pid_ns=machine["pid_ns"],
        )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("times must be ISO 8601 strings")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"time {value!r} has no timezone")
    return moment.astimezone(UTC)


def _human(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")  # output.format.utc's form


@dataclass(frozen=True, slots=True)
class _Generation:
    seq: int
    info: ObjectInfo


def _generations(storage: Storage, name: str) -> list[_Generation]:
    """Every generation of lock ``name``, lowest first; foreign keys are ignored."""
    prefix = layout.lock_prefix(name)
    found = []
    for info in storage.list(prefix):
        tail = info.key[len(prefix) :]
        if tail.isdigit() and info.key == layout.lock_key(name, int(tail)):
            found.append(_Generation(int(tail), info))
    found.sort(key=lambda gen: gen.seq)
    return found


def _read(storage: Storage, gen: _Generation) -> LockRecord:
    """Raises ``ValueError`` for a malformed record, ``ObjectNotFound`` if it is gone."""
    return LockRecord.from_bytes(b"".join(storage.get(gen.info.key)))


def _read_top(storage: Storage, gen: _Generation) -> LockRecord | ValueError:
    """The record of ``gen``, or why it cannot be parsed; ``ObjectNotFound`` if it is gone."""
    try:
        return _read(storage, gen)
    except ValueError as exc:
        return exc


def _refusal(
    storage: Storage, gen: _Generation, record: LockRecord | ValueError, now: datetime
) -> LockHeld | None:
    """The error that keeps us out while generation ``gen`` is held, or None if it is free."""
    where = f"{storage.describe()}/{gen.info.key}"
    if isinstance(record, ValueError):
        until = gen.info.modified + timedelta(seconds=DEFAULT_TTL_S)
        if now >= until:
            return None
        return LockHeld(
            f"the lock record {where} is unreadable ({record}); it is treated as held until "
            f"{_human(until)}: retry then, or delete it if no backup or expire of this cluster "
            "is running"
        )
    if not record.is_live(now):
        return None
    if _holder_is_gone(record):
        log.warning(
            "took over the lock of %s pid %d on this host: that process is gone",
            record.purpose, record.pid,
        )  # fmt: skip
        return None
    return _held_error(record)


@functools.cache
def _machine() -> tuple[str | None, str | None]:
    """(boot id, PID namespace) of this process; None for what this system does not tell."""
    try:
        boot_id: str | None = Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        boot_id = None
    try:
        pid_ns: str | None = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = None
    return boot_id, pid_ns


def _holder_is_gone(record: LockRecord) -> bool:
    """True only with proof: the holder ran on this host, this boot and in this PID
    namespace (so its pid means the same process here), and that pid is gone."""
    boot_id, pid_ns = _machine()
    same_machine = (
        record.host == socket.gethostname()
        and boot_id is not None
        and pid_ns is not None
        and (record.boot_id, record.pid_ns) == (boot_id, pid_ns)
    )
    return same_machine and record.pid != os.getpid() and not _pid_alive(record.pid)


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` names a process that may still run (a zombie has finished)."""
    if pid <= 0:
        return True  # not a process id: no proof of anything
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _held_error(record: LockRecord) -> LockHeld:
    expires = _human(record.expires)
    return LockHeld(
        f"another {record.purpose} of this cluster is running on {record.host} "
        f"(pid {record.pid}, since {_human(record.started)}, lock held until {expires}); "
        f"wait for it or, if that process is gone, retry after {expires}"
    )


def _durations(ttl_s: float, renew_interval_s: float | None) -> tuple[timedelta, float]:
    interval = ttl_s / 3 if renew_interval_s is None else renew_interval_s
    if not 0 < interval < ttl_s:
        raise ValueError(f"need 0 < renew_interval_s < ttl_s, got {interval} and {ttl_s}")
    return timedelta(seconds=ttl_s), interval


def acquire(
    storage: Storage,
    name: str,
    *,
    purpose: str,
    ttl_s: float = DEFAULT_TTL_S,
    renew_interval_s: float | None = None,
    now: Clock = utcnow,
) -> LockHandle:
    """Take lock ``name`` or raise ``LockHeld``; the handle renews itself until released.

    Never waits for a holder: a cron job that finds the lock taken should exit
    (exit code 42) rather than pile up behind it.
    """
    ttl, interval = _durations(ttl_s, renew_interval_s)
    owner = uuid.uuid4().hex
    boot_id, pid_ns = _machine()
    for _ in range(_ATTEMPTS):
        gens = _generations(storage, name)
        top = gens[-1].seq if gens else 0
        if gens:
            try:
                current = _read_top(storage, gens[-1])
            except ObjectNotFound:
                continue  # deleted by hand between list and get: look again
            if isinstance(current, LockRecord) and current.owner == owner:
                if current.is_live(now()):  # our create landed, its answer was lost
                    handle = LockHandle(storage, name, top, current, ttl, interval, now)
                    handle._confirm()
                    return handle
            else:
                refusal = _refusal(storage, gens[-1], current, now())
                if refusal is not None:
                    raise refusal
        started = now()
        record = LockRecord(
            purpose=purpose, owner=owner, host=socket.gethostname(), pid=os.getpid(),
            started=started, renewed=started, expires=started + ttl,
            boot_id=boot_id, pid_ns=pid_ns,
        )  # fmt: skip
        try:
            storage.put(layout.lock_key(name, top + 1), [record.to_bytes()], if_absent=True)
        except ObjectExists:
            continue  # a peer took generation top + 1 first: judge its record
        handle = LockHandle(storage, name, top + 1, record, ttl, interval, now)
        handle._confirm()
        return handle
    raise LockHeld(
        f"could not take the lock {storage.describe()}/{layout.lock_prefix(name)} after "
        f"{_ATTEMPTS} attempts: other processes keep taking it; retry later"
    )


@contextmanager
def hold(
    storage: Storage,
    name: str,
    *,
    purpose: str,
    ttl_s: float = DEFAULT_TTL_S,
    renew_interval_s: float | None = None,
    now: Clock = utcnow,
) -> Iterator[LockHandle]:
    """``with hold(storage, "cluster", purpose="backup") as handle:``; released on exit.

    Leaving the block does not raise when the lock was lost meanwhile: call
    ``handle.check()`` before any step that must not run twice (committing a
    manifest, deleting expired backups).
    """
    handle = acquire(
        storage, name, purpose=purpose, ttl_s=ttl_s, renew_interval_s=renew_interval_s, now=now
    )
    try:
        yield handle
    finally:
        handle.release()


def holder(storage: Storage, name: str) -> LockRecord | None:
    """The record of the highest generation (live or not); None if none or unreadable."""
    gens = _generations(storage, name)
    if not gens:
        return None
    try:
        return _read(storage, gens[-1])
    except (ValueError, ObjectNotFound):
        return None


class LockHandle:
    """A held lock: renewed by a daemon thread until ``release``; ``check`` says if still ours.

    Thread-safe: the renewer thread and the caller share the state under a lock.
    """

    def __init__(
        self,
        storage: Storage,
        name: str,
        seq: int,
        record: LockRecord,
        ttl: timedelta,
        interval_s: float,
        now: Clock,
    ) -> None:
        self._storage, self._name, self._seq = storage, name, seq
        self._ttl, self._interval_s, self._now = ttl, interval_s, now
        self._state = threading.Lock()
        self._record = record
        self._lost: str | None = None
        self._released = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def key(self) -> str:
        return layout.lock_key(self._name, self._seq)

    @property
    def record(self) -> LockRecord:
        """The record as last written by this holder."""
        with self._state:
            return self._record

    @property
    def lost(self) -> bool:
        with self._state:
            return self._lost is not None

    def _confirm(self) -> None:
        """Just after winning: back off if a stalled peer's create raced ours, prune, renew."""
        try:
            gens = _generations(self._storage, self._name)
        except StorageError:
            self._give_up()
            raise
        higher = [gen for gen in gens if gen.seq > self._seq]
        if higher:
            self._storage.delete([self.key])
            try:
                top = _read_top(self._storage, higher[-1])
                refusal = _refusal(self._storage, higher[-1], top, self._now())
            except ObjectNotFound:
                refusal = None
            raise refusal or LockHeld(
                f"another process took the lock {self._storage.describe()}/{higher[-1].info.key} "
                "at the same moment; retry"
            )
        doomed = [gen.info.key for gen in gens if gen.seq <= self._seq - 2]
        if doomed:
            try:
                self._storage.delete(doomed)
            except StorageError as exc:  # old generations only cost a listing entry
                log.warning("lock prune failed name=%s: %s", self._name, exc)
        log.info(
            "lock acquired name=%s seq=%d purpose=%s", self._name, self._seq, self._record.purpose
        )
        self._thread = threading.Thread(
            target=self._run, name=f"janua-lock-{self._name}", daemon=True
        )
        self._thread.start()

    def _give_up(self) -> None:
        """Free a generation we created but could not confirm, so nobody waits out its ttl."""
        with self._state:
            self._released = True
            record = replace(self._record, released=True)
        try:
            self._storage.put(self.key, [record.to_bytes()])
        except StorageError as exc:
            log.warning("lock %s stays until %s: %s", self.key, _human(record.expires), exc)

    def _lose(self, reason: str) -> None:
        with self._state:
            if self._lost is None:
                self._lost = reason
                log.error("lock lost name=%s seq=%d: %s", self._name, self._seq, reason)

    def _expired_reason(self, now: datetime) -> str | None:
        with self._state:
            expires = self._record.expires
        if now < expires:
            return None
        return f"it was not renewed before it expired at {_human(expires)}"

    def check(self) -> None:
        """Raise ``LockLost`` if the lock may now belong to someone else (or was released)."""
        reason = self._expired_reason(self._now())
        if reason is not None:
            self._lose(reason)
        with self._state:
            reason = self._lost or ("it was released" if self._released else None)
            purpose = self._record.purpose
        if reason is not None:
            raise LockLost(
                f"lost the {purpose} lock {self._storage.describe()}/{self.key}: {reason}; "
                f"this {purpose} stops, as another one may be running now"
            )

    def renew(self) -> None:
        """One renewal (the thread calls it every interval); a storage error propagates."""
        if self.lost:
            return
        reason = self._expired_reason(self._now())
        if reason is not None:
            self._lose(reason)
            return
        higher = [gen for gen in _generations(self._storage, self._name) if gen.seq > self._seq]
        if higher:
            self._lose(self._takeover_reason(higher[-1]))
            return
        with self._state:
            previous = self._record
        renewed = self._now()
        record = replace(previous, renewed=renewed, expires=renewed + self._ttl)
        self._storage.put(self.key, [record.to_bytes()])
        finished = self._now()
        if finished >= previous.expires:  # a peer may have read the expired record meanwhile
            self._lose(f"its renewal completed only at {_human(finished)}, after it expired")
            return
        with self._state:
            self._record = record

    def _takeover_reason(self, gen: _Generation) -> str:
        try:
            record = _read(self._storage, gen)
        except (ValueError, ObjectNotFound):
            return f"it was taken over as generation {gen.seq}"
        return (
            f"it was taken over at {_human(record.started)} by the {record.purpose} "
            f"on {record.host} (pid {record.pid})"
        )

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.renew()
            except StorageError as exc:  # retried next round, unless the lease ran out
                log.warning("lock renewal failed name=%s seq=%d: %s", self._name, self._seq, exc)
                if self._expired_reason(self._now()) is not None:
                    self._lose(f"it could not be renewed before it expired ({exc})")
            if self.lost:
                return

    def release(self) -> None:
        """Stop renewing and mark the record released; idempotent. A lost lock is left alone."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._state:
            if self._released:
                return
            self._released = True
            lost = self._lost is not None
            record = replace(self._record, renewed=self._now(), released=True)
        if lost:  # the key is no longer the lock: writing it would only leave litter
            return
        try:
            self._storage.put(self.key, [record.to_bytes()])
        except StorageError as exc:  # it expires by itself; the work already finished
            log.warning(
                "lock release failed name=%s seq=%d; it expires at %s: %s",
                self._name, self._seq, _human(record.expires), exc,
            )  # fmt: skip
            return
        log.info("lock released name=%s seq=%d", self._name, self._seq)
