"""The repository lock on ``MemoryStorage``: refusal, release, expiry, races, renewal, loss.

Clocks are fake (``Clock``) so expiry is reached by advancing time, never by
sleeping; only the renewer thread runs in real time, and tests wait for what it
did, not for how long it took.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from janua_backup import locks
from janua_backup.errors import LockHeld, ObjectExists, StorageError, StorageUnreachable
from janua_backup.repository import layout
from janua_backup.storage.base import ObjectInfo, Storage
from janua_backup.storage.memory import MemoryStorage

NAME = "cluster"
TTL_S = 600.0  # the renewer thread (every 200 s) never fires during a test unless asked to


class Clock:
    """A settable clock, shared by threads."""

    def __init__(self, start: datetime | None = None) -> None:
        self.moment = start or datetime.now(UTC)
        self.start = self.moment
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.moment

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.moment += timedelta(seconds=seconds)


class Wrapped:
    """A storage in front of a shared one, so a test can stall or break one peer's calls."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    def put(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> None:
        self.inner.put(key, chunks, if_absent=if_absent)

    def get(self, key: str) -> Iterator[bytes]:
        return self.inner.get(key)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, keys: Iterable[str]) -> None:
        self.inner.delete(keys)

    def describe(self) -> str:
        return self.inner.describe()


class StalledPeer(Wrapped):
    """Holds its first conditional put until resumed: a peer that decided to take the lock,
    then stalled (a long GC pause, a network outage) before writing."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.stalled = threading.Event()
        self.resume = threading.Event()

    def put(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> None:
        if if_absent and not self.stalled.is_set():
            self.stalled.set()
            assert self.resume.wait(30)
        super().put(key, chunks, if_absent=if_absent)


class Outage(Wrapped):
    """Every call fails with ``StorageUnreachable`` while ``down`` is set."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.down = threading.Event()
        self.failures = 0

    def _gate(self) -> None:
        if self.down.is_set():
            self.failures += 1
            raise StorageUnreachable("storage unreachable (test outage)")

    def put(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> None:
        self._gate()
        super().put(key, chunks, if_absent=if_absent)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._gate()
        return super().list(prefix)


def take(
    storage: Storage, clock: Clock, *, purpose: str = "backup", ttl_s: float = TTL_S, **kw: float
) -> locks.LockHandle:
    return locks.acquire(storage, NAME, purpose=purpose, ttl_s=ttl_s, now=clock, **kw)


def seqs(storage: Storage) -> list[int]:
    return [int(info.key.rsplit("/", 1)[1]) for info in storage.list(layout.lock_prefix(NAME))]


def dead_holder(storage: Storage, clock: Clock) -> None:
    """Generation 1, written by a process that died without releasing, a minute ago."""
    then = clock() - timedelta(seconds=70)
    record = locks.LockRecord(
        purpose="backup", owner="dead", host="elsewhere", pid=1,
        started=then, renewed=then, expires=then + timedelta(seconds=10),
    )  # fmt: skip
    storage.put(layout.lock_key(NAME, 1), [record.to_bytes()])


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the renewer thread never got there"
        time.sleep(0.01)


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage("locks")


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC))


def test_held_lock_refuses_then_release_lets_the_next_in(storage: Storage, clock: Clock) -> None:
    first = take(storage, clock, purpose="expire")
    with pytest.raises(LockHeld) as refused:
        take(storage, clock)
    assert refused.value.exit_code == 42
    assert type(refused.value) is LockHeld
    assert str(refused.value) == (
        f"another expire of this cluster is running on {first.record.host} "
        f"(pid {os.getpid()}, since 2026-03-01 12:00:00Z, lock held until "
        "2026-03-01 12:10:00Z); wait for it or, if that process is gone, "
        "retry after 2026-03-01 12:10:00Z"
    )
    first.release()
    first.release()  # idempotent
    second = take(storage, clock)
    assert (first.seq, second.seq) == (1, 2)
    second.release()


def test_record_is_plain_json_naming_the_holder(storage: Storage, clock: Clock) -> None:
    with locks.hold(storage, NAME, purpose="backup", ttl_s=TTL_S, now=clock) as handle:
        assert handle.key == "locks/cluster/000000000001"
        fields = json.loads(b"".join(storage.get(handle.key)))
        assert fields == {
            "format": 1,
            "purpose": "backup",
            "owner": handle.record.owner,
            "host": handle.record.host,
            "pid": os.getpid(),
            "started": "2026-03-01T12:00:00Z",
            "renewed": "2026-03-01T12:00:00Z",
            "expires": "2026-03-01T12:10:00Z",
            "released": False,
            "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
            "pid_ns": os.readlink("/proc/self/ns/pid"),
        }
        assert locks.holder(storage, NAME) == handle.record
    after = locks.holder(storage, NAME)
    assert after is not None and after.released


def test_hold_releases_when_the_block_raises(storage: Storage, clock: Clock) -> None:
    with pytest.raises(RuntimeError), locks.hold(storage, NAME, purpose="backup", now=clock):
        raise RuntimeError("backup failed")
    take(storage, clock).release()


def test_expired_lock_is_taken_over_and_its_holder_finds_out(
    storage: Storage, clock: Clock
) -> None:
    stale = take(storage, clock, ttl_s=60)  # its renewer (every 20 s, real time) stays idle
    clock.advance(59)
    with pytest.raises(LockHeld):
        take(storage, clock)
    stale.check()
    clock.advance(1)
    fresh = take(storage, clock)
    assert fresh.seq == 2
    with pytest.raises(locks.LockLost, match="not renewed before it expired at 2026-03-01 12:01"):
        stale.check()
    stale.release()  # a lost holder leaves the new generation alone
    assert locks.holder(storage, NAME) == fresh.record
    with pytest.raises(LockHeld):
        take(storage, clock)
    fresh.release()


def test_taken_over_holder_learns_it_on_renewal(storage: Storage) -> None:
    """A host whose clock runs 2 minutes ahead sees the lock expired and takes it over;
    the holder's next renewal finds the higher generation and stops."""
    here = Clock()
    ahead = Clock(here.start + timedelta(minutes=2))
    holder = take(storage, here, ttl_s=100)
    taker = take(storage, ahead, purpose="expire", ttl_s=100)
    holder.renew()
    assert holder.lost
    with pytest.raises(locks.LockLost, match=r"taken over at .* by the expire on .* \(pid \d+\)"):
        holder.check()
    holder.release()
    taker.check()
    taker.release()


def race(
    storage: Storage, clock: Clock, contenders: int
) -> tuple[list[locks.LockHandle], list[LockHeld]]:
    """Start ``contenders`` threads at one barrier, each trying to take the lock."""
    barrier = threading.Barrier(contenders)
    won: list[locks.LockHandle] = []
    refused: list[LockHeld] = []

    def contend() -> None:
        barrier.wait()
        try:
            won.append(take(storage, clock))
        except LockHeld as exc:
            refused.append(exc)

    threads = [threading.Thread(target=contend) for _ in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won, refused


@pytest.mark.parametrize("contenders", [2, 5])
@pytest.mark.parametrize("with_expired_holder", [False, True])
def test_racing_contenders_exactly_one_wins(contenders: int, with_expired_holder: bool) -> None:
    for _ in range(60):
        storage, clock = MemoryStorage(), Clock()
        if with_expired_holder:
            dead_holder(storage, clock)
        won, refused = race(storage, clock, contenders)
        assert (len(won), len(refused)) == (1, contenders - 1)
        assert all(type(exc) is LockHeld for exc in refused)
        assert seqs(storage)[-1] == won[0].seq
        won[0].release()


def test_old_generations_are_pruned_keeping_the_previous_one(
    storage: Storage, clock: Clock
) -> None:
    for _ in range(5):
        take(storage, clock).release()
    assert seqs(storage) == [4, 5]


def test_stalled_peer_fails_the_create_on_the_kept_generation(
    storage: Storage, clock: Clock
) -> None:
    take(storage, clock).release()  # generation 1, released
    peer = StalledPeer(storage)
    outcome: list[BaseException] = []
    thread = threading.Thread(target=lambda: outcome.append(catch(lambda: take(peer, clock))))
    thread.start()
    assert peer.stalled.wait(30)  # the peer read generation 1 as free and is about to create 2
    take(storage, clock).release()  # generation 2
    holder = take(storage, clock)  # generation 3; prunes 1, keeps 2
    peer.resume.set()
    thread.join()
    assert type(outcome[0]) is LockHeld  # its create of 2 failed; 3 is live
    assert seqs(storage) == [2, 3]
    holder.check()
    holder.release()


def test_stalled_peer_recreating_a_pruned_generation_backs_off(
    storage: Storage, clock: Clock
) -> None:
    take(storage, clock).release()
    peer = StalledPeer(storage)
    outcome: list[BaseException] = []
    thread = threading.Thread(target=lambda: outcome.append(catch(lambda: take(peer, clock))))
    thread.start()
    assert peer.stalled.wait(30)  # about to create generation 2
    take(storage, clock).release()  # 2
    take(storage, clock).release()  # 3
    holder = take(storage, clock)  # 4; prunes 1 and 2
    assert seqs(storage) == [3, 4]
    peer.resume.set()
    thread.join()
    # Its create of 2 succeeded (2 was gone), but its confirming listing showed 4.
    assert type(outcome[0]) is LockHeld
    assert "another backup of this cluster is running" in str(outcome[0])
    assert seqs(storage) == [3, 4]
    holder.check()
    holder.release()


def catch(call: Callable[[], locks.LockHandle]) -> BaseException:
    try:
        handle = call()
    except LockHeld as exc:
        return exc
    handle.release()
    return AssertionError(f"the stalled peer took generation {handle.seq}")


def test_renewer_keeps_the_lock_past_its_first_expiry(storage: Storage) -> None:
    clock = Clock()
    handle = take(storage, clock, ttl_s=10, renew_interval_s=0.01)
    clock.advance(8)
    wait_for(lambda: handle.record.renewed == clock.start + timedelta(seconds=8))
    clock.advance(7)  # 15 s after the start, past the first expiry
    with pytest.raises(LockHeld):
        take(storage, clock)
    handle.check()
    handle.release()
    assert handle._thread is not None and not handle._thread.is_alive()


def test_renewal_failures_are_retried_then_lose_the_lock_at_expiry(storage: Storage) -> None:
    clock = Clock()
    flaky = Outage(storage)
    handle = take(flaky, clock, ttl_s=10, renew_interval_s=0.01)
    flaky.down.set()
    wait_for(lambda: flaky.failures >= 3)
    assert not handle.lost  # failures before the expiry are only retried
    flaky.down.clear()
    clock.advance(5)
    wait_for(lambda: handle.record.renewed == clock.start + timedelta(seconds=5))
    flaky.down.set()
    clock.advance(10)  # the expiry written at +5 s passes without a renewal
    wait_for(lambda: handle.lost)
    with pytest.raises(locks.LockLost, match="not renewed before it expired"):
        handle.check()
    flaky.down.clear()
    handle.release()
    assert locks.holder(storage, NAME) == handle.record  # not marked released: it was lost
    take(storage, clock).release()  # expired: free for the next


def test_renewal_that_lands_after_the_expiry_loses_the_lock(storage: Storage, clock: Clock) -> None:
    """A peer may have read the expired record while the slow rewrite was in flight."""

    class SlowWrite(Wrapped):
        def put(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> None:
            super().put(key, chunks, if_absent=if_absent)
            if not if_absent:
                clock.advance(20)  # the rewrite took 20 s

    handle = take(SlowWrite(storage), clock, ttl_s=10)
    clock.advance(5)
    handle.renew()
    with pytest.raises(locks.LockLost, match=r"renewal completed only at .* after it expired"):
        handle.check()
    handle.release()


def test_malformed_record_blocks_for_the_default_ttl(storage: Storage) -> None:
    storage.put(layout.lock_key(NAME, 1), [b"{not json"])
    info = storage.head(layout.lock_key(NAME, 1))
    assert info is not None
    clock = Clock(info.modified)
    with pytest.raises(LockHeld, match=r"memory://locks/locks/cluster/000000000001 is unreadable"):
        take(storage, clock)
    clock.advance(locks.DEFAULT_TTL_S - 1)
    with pytest.raises(LockHeld, match="treated as held until"):
        take(storage, clock)
    clock.advance(1)
    handle = take(storage, clock)
    assert handle.seq == 2
    handle.release()
    assert locks.holder(storage, NAME) is not None


@pytest.mark.parametrize(
    "data",
    [b"[]", b'{"format": 2}', b'{"format": 1, "purpose": "backup"}'],
)
def test_records_of_unknown_shape_are_malformed(data: bytes) -> None:
    with pytest.raises(ValueError):
        locks.LockRecord.from_bytes(data)


def test_confirming_listing_failure_frees_the_new_generation(storage: Storage) -> None:
    class FailingSecondList(Wrapped):
        lists = 0

        def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
            self.lists += 1
            if self.lists == 2:
                raise StorageUnreachable("gone")
            return super().list(prefix)

    clock = Clock()
    with pytest.raises(StorageError):
        take(FailingSecondList(storage), clock)
    record = locks.holder(storage, NAME)
    assert record is not None and record.released
    take(storage, clock).release()


@pytest.mark.parametrize(("ttl_s", "interval_s"), [(10, 0), (10, 10), (0, None), (-3, None)])
def test_renew_interval_must_fall_inside_the_ttl(
    storage: Storage, ttl_s: float, interval_s: float | None
) -> None:
    with pytest.raises(ValueError):
        locks.acquire(storage, NAME, purpose="backup", ttl_s=ttl_s, renew_interval_s=interval_s)


class LostAnswer(Wrapped):
    """The first conditional put is stored, but its answer is lost and the retry is told
    "already exists" (a store that cannot compare what it holds with what was sent)."""

    lost = 0

    def put(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> None:
        self.inner.put(key, chunks, if_absent=if_absent)
        if if_absent and not self.lost:
            self.lost += 1
            raise ObjectExists(f"{self.describe()}/{key} already exists")


def test_a_lost_answer_to_our_own_create_is_recognised_by_the_owner_token(
    storage: Storage, clock: Clock
) -> None:
    lossy = LostAnswer(storage)
    handle = take(lossy, clock)  # not "held by pid <ourselves>"
    assert lossy.lost == 1
    assert handle.seq == 1 and seqs(storage) == [1]
    assert locks.holder(storage, NAME) == handle.record
    handle.check()
    with pytest.raises(LockHeld):
        take(storage, clock)
    handle.release()
    take(storage, clock).release()


def here_record(clock: Clock, pid: int, **changes: str) -> locks.LockRecord:
    """A live record as a backup of this host, this boot and this PID namespace writes it."""
    record = locks.LockRecord(
        purpose="backup", owner="other", host=socket.gethostname(), pid=pid,
        started=clock(), renewed=clock(), expires=clock() + timedelta(seconds=TTL_S),
        boot_id=Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
        pid_ns=os.readlink("/proc/self/ns/pid"),
    )  # fmt: skip
    return replace(record, **changes)


def gone_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_a_dead_holder_on_this_host_is_taken_over_at_once(
    storage: Storage, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    pid = gone_pid()
    storage.put(layout.lock_key(NAME, 1), [here_record(clock, pid).to_bytes()])
    with caplog.at_level(logging.WARNING, logger="janua_backup.locks"):
        handle = take(storage, clock)
    assert handle.seq == 2
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert said == [f"took over the lock of backup pid {pid} on this host: that process is gone"]
    handle.release()


def test_a_zombie_holder_is_gone(storage: Storage, clock: Clock) -> None:
    child = subprocess.Popen([sys.executable, "-c", ""])
    try:
        stat = Path(f"/proc/{child.pid}/stat")
        wait_for(lambda: stat.read_text().rpartition(")")[2].split()[0] == "Z")
        storage.put(layout.lock_key(NAME, 1), [here_record(clock, child.pid).to_bytes()])
        take(storage, clock).release()
    finally:
        child.wait()


@pytest.mark.parametrize(
    "case", ["live pid", "other host", "other boot", "other namespace", "old record"]
)
def test_a_holder_not_provably_gone_keeps_the_lock_until_its_expiry(
    storage: Storage, clock: Clock, case: str
) -> None:
    pid = os.getppid() if case == "live pid" else gone_pid()
    record = here_record(clock, pid)
    if case == "other host":
        record = replace(record, host=record.host + "-twin")
    elif case == "other boot":
        record = replace(record, boot_id="00000000-0000-0000-0000-000000000000")
    elif case == "other namespace":
        record = replace(record, pid_ns="pid:[1]")
    elif case == "old record":  # written by a version that did not record its machine
        record = replace(record, boot_id=None, pid_ns=None)
    storage.put(layout.lock_key(NAME, 1), [record.to_bytes()])
    with pytest.raises(LockHeld, match=f"pid {pid},"):
        take(storage, clock)
    clock.advance(TTL_S)
    take(storage, clock).release()
