"""pigz-style parallel gzip: one ordinary gzip member, whatever the cuts."""

from __future__ import annotations

import gzip
import os
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st
from zlib_ng import zlib_ng

from janua_backup.pipeline.pargzip import ParallelGzip

BLOCK = 32 * 1024  # the smallest block: many cuts in little data


def squeeze(pieces: list[bytes], threads: int = 2, block: int = BLOCK) -> bytes:
    engine = ParallelGzip(zlib_ng, 6, threads, block)
    return b"".join(engine.compress(p) for p in pieces) + engine.flush()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(max_size=3 * BLOCK) | st.just(b"ab" * BLOCK), max_size=8),
    st.integers(2, 4),
)
def test_any_reader_gets_the_bytes_back(pieces: list[bytes], threads: int) -> None:
    stream = squeeze(pieces, threads)
    whole = b"".join(pieces)
    assert zlib.decompress(stream, 31) == whole  # one member: wbits 31 reads it all
    assert gzip.decompress(stream) == whole


def test_matches_reach_back_across_cuts() -> None:
    # Random blocks repeated one block later: only the primed window finds the repeats.
    unit = os.urandom(BLOCK // 2)
    data = unit * 40
    stream = squeeze([data])
    assert zlib.decompress(stream, 31) == data
    assert len(stream) < len(unit) * 2


def test_nothing_in_is_an_empty_member() -> None:
    assert gzip.decompress(squeeze([])) == b""


def test_costs_a_few_bytes_per_block_over_serial() -> None:
    data = b"".join(f"row {n} shipped to city {n % 97}\n".encode() for n in range(200000))
    serial = zlib_ng.compressobj(6, zlib_ng.DEFLATED, 31)
    one = serial.compress(data) + serial.flush()
    blocks = len(data) // BLOCK + 1
    assert len(squeeze([data])) <= len(one) * 1.02 + 16 * blocks
