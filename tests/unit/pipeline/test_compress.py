"""Codecs of ``pipeline.compress``: levels, real gzip, bounded and strict decompression."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator

import pytest
import zstandard

from janua_backup.errors import ConfigError, IntegrityError
from janua_backup.pipeline.compress import check_codec, decompress, new_compressor
from tests.unit.pipeline.objects import CODECS, MiB, sample


def compress_all(codec: str, data: bytes, level: int | None = None) -> bytes:
    compressor = new_compressor(codec, level)
    return compressor.compress(data) + compressor.flush()


def decompress_all(codec: str, payloads: list[bytes]) -> bytes:
    return b"".join(decompress(codec, iter(payloads)))


def test_levels() -> None:
    assert check_codec("gzip", None) == 6
    assert check_codec("zstd", None) == 3
    assert check_codec("none", None) is None
    assert check_codec("gzip", 9) == 9
    for codec, level in [("gzip", 0), ("gzip", 10), ("zstd", 0), ("zstd", 20), ("none", 3)]:
        with pytest.raises(ConfigError):
            check_codec(codec, level)
    with pytest.raises(ConfigError, match="unknown compression codec 'brotli'"):
        new_compressor("brotli")
    with pytest.raises(ConfigError):
        decompress("brotli", iter([]))


def test_gzip_output_is_real_gzip() -> None:
    data = sample(100_000)
    assert gzip.decompress(compress_all("gzip", data)) == data


@pytest.mark.parametrize("codec", CODECS)
def test_payloads_of_any_size(codec: str) -> None:
    data = sample(300_000)
    stream = compress_all(codec, data)
    payloads = [stream[i : i + 777] for i in range(0, len(stream), 777)]
    assert decompress_all(codec, [b"", *payloads, b""]) == data


def test_zstd_level_19_window_is_within_the_reader_limit() -> None:
    stream = compress_all("zstd", b"x" * 1000, level=19)
    assert zstandard.get_frame_parameters(stream).window_size <= 1 << 23
    assert decompress_all("zstd", [stream]) == b"x" * 1000


def test_zstd_window_beyond_the_limit_is_refused() -> None:
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=25)
    stream = zstandard.ZstdCompressor(compression_params=params).compressobj()
    data = stream.compress(b"y" * 1000) + stream.flush()
    with pytest.raises(IntegrityError, match="zstd"):
        decompress_all("zstd", [data])


def bounded(pieces: Iterator[bytes]) -> int:
    total = 0
    for piece in pieces:
        assert len(piece) <= MiB
        total += len(piece)
    return total


def test_gzip_bomb_in_one_payload_is_decoded_in_bounded_pieces() -> None:
    bomb = zlib.compress(bytes(64 * MiB), 9, wbits=31)
    assert len(bomb) < 100_000
    assert bounded(decompress("gzip", iter([bomb]))) == 64 * MiB


def test_zstd_bomb_in_one_payload_is_decoded_in_bounded_pieces() -> None:
    bomb = zstandard.ZstdCompressor(level=3).compress(bytes(64 * MiB))
    assert bounded(decompress("zstd", iter([bomb]))) == 64 * MiB


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_damaged_truncated_or_extended_streams(codec: str) -> None:
    data = sample(50_000, kind="random")
    stream = compress_all(codec, data)
    damaged = bytearray(stream)
    # zstd has no checksum of its own (the trailer has one): break its structure, not its data.
    damaged[0 if codec == "zstd" else len(stream) // 2] ^= 0xFF
    with pytest.raises(IntegrityError, match=codec):
        decompress_all(codec, [bytes(damaged)])
    with pytest.raises(
        IntegrityError, match=f"after the end of its {codec}|{codec} stream is damaged"
    ):
        decompress_all(codec, [stream, b"more"])
    if codec == "gzip":  # zstd's streaming reader cannot tell; the trailer's size and sha256 do
        with pytest.raises(IntegrityError, match="ends early"):
            decompress_all(codec, [stream[:-10]])
