"""The storage contract of ``janua_backup.storage.base.Storage``, as one suite for every driver.

A driver's test module subclasses ``StorageContract`` (``Test...``) and supplies
a function-scoped ``storage`` fixture: an empty store. The suite then runs
unchanged on memory, posix and a real S3 server, so the rules the repository
relies on (atomic puts, one winner among ``if_absent`` racers, ``ObjectNotFound``
raised by ``get`` itself, lexicographic listings) hold on all of them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from janua_backup.errors import ObjectExists, ObjectNotFound
from janua_backup.storage.base import ObjectInfo, Storage

MIB = 1024 * 1024
# Larger than two 5 MiB parts (S3's minimum part size, which the S3 suite uses),
# so S3 takes the multipart path with a short last part.
BIG_BYTES = 11 * MIB + 12345
CHUNK_BOUND_BYTES = MIB  # every driver yields get() chunks of at most 1 MiB


class Boom(Exception):
    """The caller's stream failing midway (a file that vanished, a compressor error)."""


def pattern(size: int, seed: int = 0) -> bytes:
    """Non-repeating-looking bytes, so misplaced parts cannot compare equal."""
    block = bytes((seed + i * 7 + i // 251) % 256 for i in range(65521))
    return (block * (size // len(block) + 1))[:size]


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def failing(data: bytes, size: int) -> Iterator[bytes]:
    yield from chunked(data, size)
    raise Boom("the stream broke")


def read(storage: Storage, key: str) -> bytes:
    return b"".join(storage.get(key))


def keys(infos: Iterable[ObjectInfo]) -> list[str]:
    return [info.key for info in infos]


class StorageContract:
    """Test cases every ``Storage`` driver must pass; see ``Storage``'s docstring."""

    # -- put / get round trips ------------------------------------------------

    def test_round_trip_small(self, storage: Storage) -> None:
        storage.put("dir/sub/small.txt", [b"hello ", b"", b"world"])
        assert read(storage, "dir/sub/small.txt") == b"hello world"

    def test_round_trip_empty(self, storage: Storage) -> None:
        storage.put("empty-iterable", [])
        storage.put("empty-chunk", [b""])
        assert read(storage, "empty-iterable") == b""
        assert read(storage, "empty-chunk") == b""
        info = storage.head("empty-chunk")
        assert info is not None and info.size_bytes == 0

    def test_round_trip_larger_than_a_part(self, storage: Storage) -> None:
        data = pattern(BIG_BYTES)
        storage.put("big/object", chunked(data, 1_000_003))
        chunks = list(storage.get("big/object"))
        assert b"".join(chunks) == data
        assert max(len(chunk) for chunk in chunks) <= CHUNK_BOUND_BYTES
        info = storage.head("big/object")
        assert info is not None and info.size_bytes == len(data)

    def test_round_trip_one_huge_chunk(self, storage: Storage) -> None:
        data = pattern(BIG_BYTES, seed=3)
        storage.put("huge-chunk", [data])
        assert read(storage, "huge-chunk") == data

    def test_put_replaces_existing_object(self, storage: Storage) -> None:
        storage.put("k", [b"old"])
        storage.put("k", [b"new content"])
        assert read(storage, "k") == b"new content"

    def test_get_can_be_closed_before_and_during_reading(self, storage: Storage) -> None:
        storage.put("big", chunked(pattern(3 * MIB), MIB))
        unread = storage.get("big")
        unread.close()  # type: ignore[attr-defined]
        started = storage.get("big")
        assert len(next(started)) > 0
        started.close()  # type: ignore[attr-defined]
        assert read(storage, "big") == pattern(3 * MIB)

    # -- missing objects ------------------------------------------------------

    def test_get_missing_raises_on_the_call(self, storage: Storage) -> None:
        # Raised by get() itself, before any chunk is consumed: wal-fetch maps
        # it to "not in the archive" without starting to write a file.
        with pytest.raises(ObjectNotFound):
            storage.get("no/such/key")

    def test_a_prefix_is_not_an_object(self, storage: Storage) -> None:
        storage.put("dir/file", [b"x"])
        with pytest.raises(ObjectNotFound):
            storage.get("dir")
        with pytest.raises(ObjectNotFound):
            storage.get("dir/file/below")
        assert storage.head("dir") is None
        assert storage.head("dir/file/below") is None

    def test_head(self, storage: Storage) -> None:
        assert storage.head("absent") is None
        before = datetime.now(UTC)
        storage.put("present", [b"12345"])
        info = storage.head("present")
        assert info is not None
        assert (info.key, info.size_bytes) == ("present", 5)
        assert info.modified.utcoffset() == timedelta(0)
        # Generous: store clocks and second-granular timestamps.
        assert before - timedelta(minutes=5) <= info.modified <= before + timedelta(minutes=5)

    # -- list -----------------------------------------------------------------

    def test_list_empty(self, storage: Storage) -> None:
        assert list(storage.list()) == []
        assert list(storage.list("anything/")) == []

    def test_list_is_lexicographic(self, storage: Storage) -> None:
        # "-" and "." sort before "/": a driver walking directories (posix,
        # SeaweedFS) naively would put "x/y" before "x-y".
        wanted = ["x-y", "x.y", "x/y", "x/z/w", "x0", "xa", "y/1", "y/10", "y/2", "zé"]
        for number, key in enumerate(reversed(wanted)):
            storage.put(key, [b"v" * number])
        infos = list(storage.list())
        assert keys(infos) == sorted(wanted) == wanted
        sizes = {info.key: info.size_bytes for info in infos}
        assert sizes == {key: n for n, key in enumerate(reversed(wanted))}

    def test_list_filters_by_prefix(self, storage: Storage) -> None:
        for key in ["x-y", "x/y", "x/z/w", "x0", "y/1"]:
            storage.put(key, [b"v"])
        assert keys(storage.list("x/")) == ["x/y", "x/z/w"]
        assert keys(storage.list("x")) == ["x-y", "x/y", "x/z/w", "x0"]
        assert keys(storage.list("x/z")) == ["x/z/w"]
        assert keys(storage.list("x/y")) == ["x/y"]
        assert keys(storage.list("y/")) == ["y/1"]
        assert keys(storage.list("nope")) == []
        assert keys(storage.list("x/z/w/deeper")) == []

    # -- delete ---------------------------------------------------------------

    def test_delete_is_idempotent(self, storage: Storage) -> None:
        storage.put("a/1", [b"1"])
        storage.put("a/2", [b"2"])
        storage.delete(["a/1", "never/existed"])
        assert storage.head("a/1") is None
        assert read(storage, "a/2") == b"2"
        storage.delete(iter(["a/1", "a/2"]))
        storage.delete(["a/1", "a/2"])
        storage.delete([])
        assert list(storage.list()) == []

    # -- if_absent ------------------------------------------------------------

    def test_if_absent_creates_a_new_object(self, storage: Storage) -> None:
        storage.put("new", [b"data"], if_absent=True)
        assert read(storage, "new") == b"data"

    def test_if_absent_refuses_an_existing_object(self, storage: Storage) -> None:
        storage.put("wal/seg", [b"first"])
        with pytest.raises(ObjectExists):
            storage.put("wal/seg", [b"second"], if_absent=True)
        assert read(storage, "wal/seg") == b"first"

    def test_if_absent_refuses_an_existing_object_larger_than_a_part(
        self, storage: Storage
    ) -> None:
        first = pattern(BIG_BYTES, seed=1)
        storage.put("big", chunked(first, MIB), if_absent=True)
        with pytest.raises(ObjectExists):
            storage.put("big", chunked(pattern(BIG_BYTES, seed=2), MIB), if_absent=True)
        assert read(storage, "big") == first

    def test_if_absent_is_idempotent_for_the_same_bytes(self, storage: Storage) -> None:
        # A retry whose first attempt was stored but whose answer was lost meets
        # its own object: success, nothing rewritten.
        storage.put("once", [b"the ", b"same bytes"], if_absent=True)
        storage.put("once", [b"the same", b" bytes"], if_absent=True)
        assert read(storage, "once") == b"the same bytes"
        with pytest.raises(ObjectExists):
            storage.put("once", [b"the same bytez"], if_absent=True)
        with pytest.raises(ObjectExists):
            storage.put("once", [b"the same bytes", b"!"], if_absent=True)
        with pytest.raises(ObjectExists):
            storage.put("once", [b"the same"], if_absent=True)
        assert read(storage, "once") == b"the same bytes"

    def test_if_absent_is_idempotent_for_the_same_bytes_larger_than_a_part(
        self, storage: Storage
    ) -> None:
        data = pattern(BIG_BYTES, seed=4)
        storage.put("big", chunked(data, MIB), if_absent=True)
        storage.put("big", chunked(data, 777_777), if_absent=True)
        other = bytearray(data)
        other[-1] ^= 0xFF
        with pytest.raises(ObjectExists):
            storage.put("big", chunked(bytes(other), MIB), if_absent=True)
        with pytest.raises(ObjectExists):
            storage.put("big", chunked(data + b"x", MIB), if_absent=True)
        assert read(storage, "big") == data
        assert keys(storage.list()) == ["big"]

    def test_racing_if_absent_writers_have_one_winner(self, storage: Storage) -> None:
        writers = 8
        barrier = threading.Barrier(writers)
        outcomes: dict[int, str] = {}

        def write(number: int) -> None:
            barrier.wait()
            try:
                storage.put("race", [b"writer %d" % number], if_absent=True)
                outcomes[number] = "won"
            except ObjectExists:
                outcomes[number] = "exists"

        threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [n for n, outcome in outcomes.items() if outcome == "won"]
        assert len(outcomes) == writers
        assert len(winners) == 1, outcomes
        assert read(storage, "race") == b"writer %d" % winners[0]

    # -- atomicity ------------------------------------------------------------

    def test_failed_stream_leaves_no_object(self, storage: Storage) -> None:
        with pytest.raises(Boom):
            storage.put("partial", failing(b"some bytes", 4))
        self._assert_absent(storage, "partial")

    def test_failed_stream_larger_than_a_part_leaves_no_object(self, storage: Storage) -> None:
        with pytest.raises(Boom):
            storage.put("partial", failing(pattern(BIG_BYTES), MIB), if_absent=True)
        self._assert_absent(storage, "partial")

    def test_failed_stream_keeps_the_previous_object(self, storage: Storage) -> None:
        storage.put("k", [b"previous"])
        with pytest.raises(Boom):
            storage.put("k", failing(pattern(BIG_BYTES), MIB))
        assert read(storage, "k") == b"previous"

    def test_describe(self, storage: Storage) -> None:
        assert isinstance(storage.describe(), str) and storage.describe()

    @staticmethod
    def _assert_absent(storage: Storage, key: str) -> None:
        assert storage.head(key) is None
        with pytest.raises(ObjectNotFound):
            storage.get(key)
        assert list(storage.list()) == []
