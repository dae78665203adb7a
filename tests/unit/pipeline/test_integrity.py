"""Damaged, truncated, reordered, transplanted and foreign objects must never decode quietly."""

from __future__ import annotations

import functools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from janua_backup.errors import DecryptionError, FormatError, IntegrityError
from janua_backup.pipeline.crypto import Key
from janua_backup.pipeline.header import FINAL_FLAG, FIXED_HEADER_BYTES, KEY_ID_BYTES
from janua_backup.pipeline.stream import decode
from tests.unit.pipeline.objects import (
    CODECS,
    KEY,
    NAME,
    OTHER_KEY,
    MiB,
    encode,
    is_final,
    sample,
    split_frames,
)

KEYS = (None, KEY)
KEY_IDS = ["plain", "encrypted"]
SMALL = sample(700, seed=3)


def decode_all(stored: bytes, key: Key | None) -> bytes:
    return b"".join(decode([stored], key, bind=NAME))


def expected_errors(position: int, encrypted: bool) -> tuple[type[Exception], ...]:
    """What a changed byte at ``position`` may raise: exact classes, per header field."""
    if position < FIXED_HEADER_BYTES:
        # magic, version, codec or cipher: may no longer be our format at all
        return (FormatError, IntegrityError, DecryptionError)
    if encrypted and position < FIXED_HEADER_BYTES + KEY_ID_BYTES:
        return (DecryptionError,)
    return (IntegrityError,)


def assert_fails(stored: bytes, key: Key | None, allowed: tuple[type[Exception], ...]) -> None:
    with pytest.raises((FormatError, IntegrityError)) as caught:
        decode_all(stored, key)
    assert type(caught.value) in allowed, (type(caught.value), str(caught.value))


@functools.cache
def multi_frame(codec: str, key: Key | None, seed: int = 0) -> bytes:
    """An object of three data frames (random data does not compress)."""
    stored, _ = encode(sample(2 * MiB + 1000, seed, "random"), codec, key)
    assert len(split_frames(stored)[1]) == 4
    return stored


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
@pytest.mark.parametrize("codec", CODECS)
def test_every_changed_byte_is_detected(codec: str, key: Key | None) -> None:
    stored, _ = encode(SMALL, codec, key)
    for position in range(len(stored)):
        allowed = expected_errors(position, key is not None)
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(stored)
            damaged[position] ^= mask
            assert_fails(bytes(damaged), key, allowed)


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=15, deadline=None)
@given(where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255))
def test_changed_byte_in_a_large_object(
    codec: str, key: Key | None, where: float, mask: int
) -> None:
    stored = multi_frame(codec, key)
    position = int(where * len(stored))
    damaged = bytearray(stored)
    damaged[position] ^= mask
    assert_fails(bytes(damaged), key, expected_errors(position, key is not None))


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
@pytest.mark.parametrize("codec", CODECS)
def test_every_truncation_is_detected(codec: str, key: Key | None) -> None:
    stored, _ = encode(SMALL, codec, key)
    for length in range(len(stored)):
        assert_fails(stored[:length], key, (IntegrityError,))


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=10, deadline=None)
@given(where=st.floats(0, 1, exclude_max=True))
def test_truncated_large_object(codec: str, key: Key | None, where: float) -> None:
    stored = multi_frame(codec, key)
    assert_fails(stored[: int(where * len(stored))], key, (IntegrityError,))


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
@pytest.mark.parametrize("codec", CODECS)
def test_frames_cut_at_frame_boundaries(codec: str, key: Key | None) -> None:
    header, frames = split_frames(multi_frame(codec, key))
    for count in range(len(frames)):
        assert_fails(header + b"".join(frames[:count]), key, (IntegrityError,))


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
@pytest.mark.parametrize("codec", CODECS)
def test_reordered_dropped_or_repeated_frames(codec: str, key: Key | None) -> None:
    header, frames = split_frames(multi_frame(codec, key))
    first, second, third, final = frames
    assert is_final(final) and not any(is_final(frame) for frame in frames[:3])
    for order in (
        [second, first, third, final],
        [first, third, second, final],
        [first, third, final],
        [first, first, second, third, final],
        [first, second, third, final, final],
        [first, second, final, third],
    ):
        assert_fails(header + b"".join(order), key, (IntegrityError,))


@pytest.mark.parametrize("codec", CODECS)
def test_frames_transplanted_from_another_object(codec: str) -> None:
    # Same key and same plaintext: only the per-object salt tells the two apart.
    header_a, frames_a = split_frames(multi_frame(codec, KEY, seed=0))
    header_b, frames_b = split_frames(encode(sample(2 * MiB + 1000, 0, "random"), codec, KEY)[0])
    assert header_a != header_b
    for index in range(len(frames_a)):
        mixed = [*frames_a]
        mixed[index] = frames_b[index]
        assert_fails(header_a + b"".join(mixed), KEY, (IntegrityError,))
    assert_fails(header_b + b"".join(frames_a), KEY, (IntegrityError,))


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
@pytest.mark.parametrize("codec", CODECS)
def test_bytes_after_the_final_frame(codec: str, key: Key | None) -> None:
    stored, _ = encode(SMALL, codec, key)
    for tail in (b"\0", b"x" * 5000, stored):
        with pytest.raises(IntegrityError, match="after its final frame") as caught:
            decode_all(stored + tail, key)
        assert type(caught.value) is IntegrityError


def test_tampering_is_caught_before_the_damaged_frame_is_released() -> None:
    header, frames = split_frames(multi_frame("none", KEY))
    damaged = bytearray(frames[1])
    damaged[100] ^= 1
    released: list[bytes] = []
    with pytest.raises(IntegrityError, match="frame 1 failed authentication"):
        released.extend(decode([header, frames[0], bytes(damaged), *frames[2:]], KEY, bind=NAME))
    assert sum(map(len, released)) == MiB  # frame 0 only


def test_wrong_key_is_a_decryption_error() -> None:
    stored, _ = encode(SMALL, "gzip", KEY)
    with pytest.raises(DecryptionError, match="different key") as caught:
        decode_all(stored, OTHER_KEY)
    assert KEY.key_id.hex() in str(caught.value)
    assert caught.value.exit_code == 21


def test_encrypted_object_without_key_is_a_decryption_error() -> None:
    stored, _ = encode(SMALL, "zstd", KEY)
    with pytest.raises(DecryptionError, match="encryption is configured off"):
        decode_all(stored, None)


@pytest.mark.parametrize(
    "stored",
    [b"PGDMP" + bytes(100), b"\x1f\x8b\x08" + bytes(100), b"x" * 200, b"janua" + bytes(100)],
)
def test_foreign_bytes_are_a_format_error(stored: bytes) -> None:
    with pytest.raises(FormatError, match="not a janua-backup object") as caught:
        decode_all(stored, None)
    assert caught.value.exit_code == 24


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
def test_frame_lengths_are_checked_before_reading(key: Key | None) -> None:
    header, frames = split_frames(multi_frame("none", key))
    tag = 16 if key else 0
    oversized = struct.pack(">I", MiB + tag + 1) + bytes(MiB + tag + 1)
    with pytest.raises(IntegrityError, match="frame 0 of the object claims"):
        decode_all(header + oversized + b"".join(frames), key)
    huge = struct.pack(">I", 0x7FFFFFFF)
    with pytest.raises(IntegrityError, match="claims 2147483647 bytes"):
        decode_all(header + huge, key)
    short_final = struct.pack(">I", FINAL_FLAG | 40) + bytes(40)
    with pytest.raises(IntegrityError, match="final frame has 40 bytes"):
        decode_all(header + b"".join(frames[:3]) + short_final, key)


@pytest.mark.parametrize("size", [0, 700, 2 * MiB + 5], ids=["empty", "small", "frames"])
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "other",
    [
        "backups/20261125T214300Z/data/000002",
        "backups/20261126T000000Z/data/000001",
        NAME + "\0",
        NAME[:-1],
        "",
    ],
)
def test_an_encrypted_object_read_under_another_name_fails_authentication(
    codec: str, size: int, other: str
) -> None:
    stored, _ = encode(sample(size, kind="random"), codec, KEY)
    with pytest.raises(IntegrityError) as caught:
        b"".join(decode([stored], KEY, bind=other))
    assert caught.value.exit_code == 20
    assert caught.value.message == (
        f"object {other} is not the object stored under this name (it was written for "
        "another key); the repository was tampered with or objects were moved"
    )
