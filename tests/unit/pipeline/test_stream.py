"""Round trips and the public API of ``pipeline.stream``."""

from __future__ import annotations

import hashlib
import itertools
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from janua_backup.errors import ConfigError, IntegrityError
from janua_backup.pipeline.crypto import Key
from janua_backup.pipeline.stream import (
    Digest,
    Encoder,
    EncodeSpec,
    ObjectHeader,
    decode,
    decode_bytes,
    encode_bytes,
    read_header,
)
from tests.unit.pipeline.objects import CODECS, KEY, NAME, MiB, counting, cut, sample

KEYS = (None, KEY)


@st.composite
def plaintexts(draw: st.DrawFn) -> bytes:
    """Mostly small arbitrary bytes; sometimes megabytes, to cross frame boundaries."""
    if draw(st.integers(0, 2)) > 0:
        return draw(st.binary(max_size=3000))
    kind = draw(st.sampled_from(["random", "text", "zeros"]))
    # Hypothesis favours small integers, so aim at the frame boundaries explicitly.
    size = draw(st.sampled_from([MiB - 64, MiB, 2 * MiB + 300_000])) + draw(st.integers(0, 64))
    return sample(size, draw(st.integers(0, 9)), kind)


chunk_sizes = st.lists(
    st.one_of(st.integers(0, 3), st.integers(0, 70_000), st.integers(MiB - 5, 3 * MiB)),
    max_size=6,
)


@pytest.mark.parametrize("key", KEYS, ids=["plain", "encrypted"])
@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=plaintexts(),
    write_sizes=chunk_sizes,
    read_sizes=chunk_sizes,
    threads=st.sampled_from([1, 2]),  # 2: one stream compressed on threads (wal-push)
    name=st.one_of(st.just(NAME), st.text(max_size=300)),  # any repository key, UTF-8
)
def test_round_trip(
    codec: str,
    key: Key | None,
    data: bytes,
    write_sizes: list[int],
    read_sizes: list[int],
    threads: int,
    name: str,
) -> None:
    encoder = Encoder(EncodeSpec(codec=codec, key=key, threads=threads), bind=name)
    stored = b"".join(encoder.encode(cut(data, write_sizes)))
    assert encoder.plain == Digest(len(data), hashlib.sha256(data).hexdigest())
    assert encoder.stored == Digest(len(stored), hashlib.sha256(stored).hexdigest())
    header = read_header(stored)
    assert (header.codec, header.encrypted) == (codec, key is not None)
    assert header.version == (2 if key is not None else 1)

    pieces = list(
        decode(
            cut(stored, read_sizes),
            key,
            bind=name,
            expect_stored=encoder.stored,
            expect_plain=encoder.plain,
        )
    )
    assert b"".join(pieces) == data
    assert all(len(piece) <= MiB for piece in pieces)


@pytest.mark.parametrize("codec", CODECS)
def test_empty_input_and_empty_chunks(codec: str) -> None:
    for chunks in ([], [b""], [b"", b"", b""]):
        encoder = Encoder(EncodeSpec(codec=codec, key=KEY), bind=NAME)
        stored = b"".join(encoder.encode(chunks))
        assert encoder.plain == Digest(0, hashlib.sha256(b"").hexdigest())
        assert list(decode([stored], KEY, bind=NAME)) == []
        assert decode_bytes(stored, KEY, bind=NAME) == b""


@pytest.mark.parametrize("codec", CODECS)
def test_a_key_reads_unencrypted_objects(codec: str) -> None:
    stored, _, _ = encode_bytes(
        b"written before encryption was on", EncodeSpec(codec=codec), bind=NAME
    )
    assert not read_header(stored).encrypted
    assert decode_bytes(stored, KEY, bind=NAME) == b"written before encryption was on"


def test_encode_bytes_returns_both_digests() -> None:
    data = sample(10_000)
    stored, plain, stored_digest = encode_bytes(data, EncodeSpec(codec="zstd", level=19), bind=NAME)
    assert plain == Digest(len(data), hashlib.sha256(data).hexdigest())
    assert stored_digest == Digest(len(stored), hashlib.sha256(stored).hexdigest())
    assert decode_bytes(stored, None, bind=NAME) == data


def test_digests_are_known_only_after_encoding() -> None:
    encoder = Encoder(EncodeSpec(), bind=NAME)
    stream = encoder.encode([b"abc"])
    with pytest.raises(RuntimeError):
        _ = encoder.plain
    next(stream)
    with pytest.raises(RuntimeError):
        _ = encoder.stored
    list(stream)
    assert encoder.plain.size_bytes == 3
    with pytest.raises(RuntimeError):
        encoder.encode([b"again"])


@pytest.mark.parametrize(
    ("codec", "level"),
    [("lz4", None), ("gzip", 0), ("gzip", 10), ("zstd", 20), ("zstd", True), ("none", 1)],
)
def test_bad_spec_is_a_config_error(codec: str, level: int | None) -> None:
    with pytest.raises(ConfigError):
        EncodeSpec(codec=codec, level=level)


def test_expected_digests_are_checked() -> None:
    data = sample(50_000)
    stored, plain, stored_digest = encode_bytes(data, EncodeSpec(key=KEY), bind=NAME)
    wrong: list[tuple[Digest | None, Digest | None]] = [
        (Digest(stored_digest.size_bytes, "0" * 64), None),
        (Digest(stored_digest.size_bytes + 1, stored_digest.sha256), None),
        (Digest(stored_digest.size_bytes - 1, stored_digest.sha256), None),
        (None, Digest(plain.size_bytes, "0" * 64)),
        (None, Digest(plain.size_bytes + 1, plain.sha256)),
        (None, Digest(plain.size_bytes - 1, plain.sha256)),
    ]
    for expect_stored, expect_plain in wrong:
        with pytest.raises(IntegrityError) as caught:
            list(
                decode(
                    [stored], KEY, bind=NAME, expect_stored=expect_stored, expect_plain=expect_plain
                )
            )
        assert type(caught.value) is IntegrityError
        assert "expected" in str(caught.value)
    upper = Digest(plain.size_bytes, plain.sha256.upper())
    assert b"".join(decode([stored], KEY, bind=NAME, expect_plain=upper)) == data


def test_a_too_large_object_fails_before_it_is_read_to_the_end() -> None:
    data = sample(3 * MiB, kind="random")
    stored, _, digest = encode_bytes(data, EncodeSpec(codec="none"), bind=NAME)
    seen: list[int] = []
    chunks = counting(cut(stored, [64 * 1024]), seen)
    with pytest.raises(IntegrityError, match="larger than the expected"):
        list(decode(chunks, None, bind=NAME, expect_stored=Digest(MiB, digest.sha256)))
    assert sum(seen) < 2 * MiB


def test_highly_compressible_200_mib_stays_bounded() -> None:
    zero_mib = bytes(MiB)
    encoder = Encoder(EncodeSpec(codec="zstd"), bind=NAME)
    tracemalloc.start()
    try:
        stored = b"".join(encoder.encode(itertools.repeat(zero_mib, 200)))
        _, encode_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        total = 0
        for piece in decode([stored], None, bind=NAME, expect_plain=encoder.plain):
            assert len(piece) <= MiB
            total += len(piece)
        _, decode_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 200 * MiB
    assert encode_peak < 8 * MiB
    assert decode_peak < 8 * MiB


def test_on_header_can_refuse_an_object_before_any_plaintext() -> None:
    stored, _, _ = encode_bytes(b"unencrypted", EncodeSpec(codec="gzip"), bind=NAME)
    seen: list[ObjectHeader] = []

    def require_encryption(header: ObjectHeader) -> None:
        seen.append(header)
        if not header.encrypted:
            raise IntegrityError("the repository requires encrypted objects")

    with pytest.raises(IntegrityError, match="requires encrypted"):
        next(decode([stored], KEY, bind=NAME, on_header=require_encryption))
    assert seen == [ObjectHeader(codec="gzip")]
    encrypted, _, _ = encode_bytes(b"secret", EncodeSpec(codec="gzip", key=KEY), bind=NAME)
    assert b"".join(decode([encrypted], KEY, bind=NAME, on_header=require_encryption)) == b"secret"
