"""The threads of a read-ahead encoder: ``ahead.ReadAhead``, ``digest.HashAside``, and
``Encoder(read_ahead_bytes=...)`` writing the very bytes the one-thread encoder writes."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator

import pytest

from janua_backup.errors import BackupError, IntegrityError
from janua_backup.pipeline.ahead import ReadAhead
from janua_backup.pipeline.digest import HASH_ASIDE_MIN_BYTES, Digest, HashAside
from janua_backup.pipeline.stream import Encoder, EncodeSpec, decode
from tests.unit.pipeline.objects import CODECS, KEY, NAME, MiB, cut, sample


def threads_settle(before: int) -> bool:
    """True once no thread started by the test is left (threads end asynchronously)."""
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    return threading.active_count() <= before


def test_read_ahead_yields_every_chunk_in_order() -> None:
    chunks = [bytes([i]) * (i * 1000) for i in range(50)]
    with ReadAhead(iter(chunks), 8000) as ahead:
        assert list(ahead) == chunks


def test_read_ahead_runs_at_most_max_bytes_ahead() -> None:
    produced = 0
    taken = 0
    worst = 0

    def source() -> Iterator[bytes]:
        nonlocal produced, worst
        for _ in range(200):
            worst = max(worst, produced - taken)
            produced += 1000
            yield b"x" * 1000

    with ReadAhead(source(), 10_000) as ahead:
        for chunk in ahead:
            taken += len(chunk)
            time.sleep(0.0005)  # a slow reader: the producer must wait for it
    assert taken == 200_000
    assert worst <= 10_000 + 1000  # the limit, plus the chunk being handed over


def test_an_error_of_the_producer_is_raised_to_the_reader_after_what_came_before() -> None:
    def source() -> Iterator[bytes]:
        yield b"first"
        raise BackupError("backup cancelled")

    got: list[bytes] = []
    with ReadAhead(source(), 1 << 20) as ahead, pytest.raises(BackupError, match="cancelled"):
        for chunk in ahead:
            got.append(chunk)
    assert got == [b"first"]


def test_a_reader_that_stops_early_stops_the_producer_and_its_clean_up_runs() -> None:
    before = threading.active_count()
    cleaned = threading.Event()

    def endless() -> Iterator[bytes]:
        try:
            while True:
                yield b"y" * 4096
        finally:
            cleaned.set()

    with ReadAhead(endless(), 64 * 1024) as ahead:
        assert next(ahead) == b"y" * 4096
    assert cleaned.is_set()
    assert threads_settle(before)
    ahead.close()  # idempotent


def test_read_ahead_refuses_a_zero_bound() -> None:
    with pytest.raises(ValueError, match="positive"):
        ReadAhead(iter([b""]), 0)


@pytest.mark.parametrize(
    "sizes", [[10, 5000], [HASH_ASIDE_MIN_BYTES], [HASH_ASIDE_MIN_BYTES + 1, 3, MiB, 0]]
)
def test_hash_aside_digest_equals_hashlib(sizes: list[int]) -> None:
    data = sample(3 * MiB, kind="random")
    before = threading.active_count()
    hasher = HashAside()
    buffer = bytearray(max(sizes) or 1)
    fed = 0
    for chunk in cut(data, sizes):
        # A reader refilling one buffer: the bytes change only after wait().
        buffer[: len(chunk)] = chunk
        hasher.add(memoryview(buffer)[: len(chunk)])
        hasher.wait()
        fed += len(chunk)
    assert hasher.digest() == Digest(fed, hashlib.sha256(data[:fed]).hexdigest())
    hasher.close()
    assert hasher.raw_sha256() == hashlib.sha256(data[:fed]).digest()  # readable after close
    assert threads_settle(before)


@pytest.mark.parametrize("codec", CODECS)
def test_read_ahead_encoder_writes_the_same_bytes_as_one_thread(codec: str) -> None:
    data = sample(5 * MiB + 777, kind="text") + sample(MiB, kind="random")
    sizes = [MiB, 3, 300_000, 2 * MiB]
    one = Encoder(EncodeSpec(codec=codec), bind=NAME)
    stored_one = b"".join(one.encode(cut(data, sizes)))
    ahead = Encoder(EncodeSpec(codec=codec), bind=NAME, read_ahead_bytes=64 * 1024)
    stored_ahead = b"".join(ahead.encode(cut(data, sizes)))
    assert stored_ahead == stored_one
    assert (ahead.plain, ahead.stored) == (one.plain, one.stored)
    assert ahead.plain == Digest(len(data), hashlib.sha256(data).hexdigest())


def test_read_ahead_encoder_round_trips_encrypted_from_a_refilled_buffer() -> None:
    data = sample(4 * MiB + 5, kind="text")

    def refilled() -> Iterator[memoryview]:
        buffer = memoryview(bytearray(MiB))
        for start in range(0, len(data), MiB):
            piece = data[start : start + MiB]
            buffer[: len(piece)] = piece
            yield buffer[: len(piece)]

    encoder = Encoder(EncodeSpec(codec="zstd", key=KEY), bind=NAME, read_ahead_bytes=128 * 1024)
    stored = b"".join(encoder.encode(refilled()))
    plain = b"".join(
        decode([stored], KEY, bind=NAME, expect_stored=encoder.stored, expect_plain=encoder.plain)
    )
    assert plain == data


def test_a_failing_source_fails_the_read_ahead_encoder_and_leaves_no_thread() -> None:
    before = threading.active_count()

    def failing() -> Iterator[bytes]:
        yield sample(2 * MiB, kind="random")
        raise OSError(5, "Input/output error")

    encoder = Encoder(EncodeSpec(codec="zstd"), bind=NAME, read_ahead_bytes=256 * 1024)
    with pytest.raises(OSError, match="Input/output"):
        b"".join(encoder.encode(failing()))
    with pytest.raises(RuntimeError):
        _ = encoder.plain
    assert threads_settle(before)


def test_closing_a_read_ahead_encoding_early_stops_its_threads() -> None:
    before = threading.active_count()
    read: list[int] = []

    def endless() -> Iterator[bytes]:
        while True:
            read.append(1)
            yield sample(MiB, kind="random")

    encoder = Encoder(EncodeSpec(codec="gzip"), bind=NAME, read_ahead_bytes=256 * 1024)
    stream = encoder.encode(endless())
    next(stream)
    next(stream)
    stream.close()  # what Repo.put does when the upload fails
    assert threads_settle(before)
    count = len(read)
    time.sleep(0.05)
    assert len(read) == count  # nothing reads on


def test_a_damaged_read_ahead_object_still_fails_verification() -> None:
    data = sample(3 * MiB, kind="text")
    encoder = Encoder(EncodeSpec(codec="zstd"), bind=NAME, read_ahead_bytes=64 * 1024)
    stored = bytearray(b"".join(encoder.encode([data])))
    stored[len(stored) // 2] ^= 1
    with pytest.raises(IntegrityError):
        b"".join(decode([bytes(stored)], None, bind=NAME))
