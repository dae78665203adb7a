"""Shared helpers for the pipeline tests: keys, sample data, and cutting objects into frames."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable, Iterator

from janua_backup.pipeline.crypto import Key
from janua_backup.pipeline.header import FINAL_FLAG, read_header
from janua_backup.pipeline.stream import Encoder, EncodeSpec

KEY = Key(bytes(range(32)))
OTHER_KEY = Key(bytes(range(100, 132)))
NAME = "backups/20261125T214300Z/data/000001"
"""The repository key the pipeline tests write and read their objects under."""
CODECS = ("none", "gzip", "zstd")
MiB = 1 << 20


def sample(size: int, seed: int = 0, kind: str = "text") -> bytes:
    """Deterministic data: "random" (incompressible), "zeros", or "text" (semi-compressible)."""
    rnd = random.Random(seed)
    if kind == "random":
        return rnd.randbytes(size)
    if kind == "zeros":
        return bytes(size)
    words = [rnd.randbytes(rnd.randint(1, 6)).hex().encode() for _ in range(300)]
    text = b" ".join(rnd.choices(words, k=size // 4 + 1))
    return (text * (size // max(len(text), 1) + 1))[:size]


def cut(data: bytes, sizes: Iterable[int], max_chunks: int = 64) -> list[bytes]:
    """Cut ``data`` into chunks of the given sizes (cycled), keeping empty chunks.

    Every size is used at least once; past ``max_chunks`` the rest is one chunk.
    """
    sizes = list(sizes)
    chunks: list[bytes] = []
    position = 0
    index = 0
    while sizes and (index < len(sizes) or position < len(data)) and index < max_chunks:
        size = sizes[index % len(sizes)]
        chunks.append(data[position : position + size])
        position += size
        index += 1
    if position < len(data):
        chunks.append(data[position:])
    return chunks


def encode(data: bytes, codec: str = "gzip", key: Key | None = None) -> tuple[bytes, Encoder]:
    encoder = Encoder(EncodeSpec(codec=codec, key=key), bind=NAME)
    return b"".join(encoder.encode([data])), encoder


def split_frames(stored: bytes) -> tuple[bytes, list[bytes]]:
    """The header bytes and the frames (length word included) of a well-formed object."""
    header_size = read_header(stored).size_bytes
    frames: list[bytes] = []
    position = header_size
    while position < len(stored):
        (word,) = struct.unpack_from(">I", stored, position)
        end = position + 4 + (word & ~FINAL_FLAG)
        frames.append(stored[position:end])
        position = end
    return stored[:header_size], frames


def is_final(frame: bytes) -> bool:
    return bool(struct.unpack_from(">I", frame)[0] & FINAL_FLAG)


def counting(chunks: Iterable[bytes], seen: list[int]) -> Iterator[bytes]:
    """Pass chunks through, recording how many were pulled (to test early failure)."""
    for chunk in chunks:
        seen.append(len(chunk))
        yield chunk
