"""The pipeline's public API: encode plaintext into stored objects and decode them back.

The writer chain is plaintext tap -> codec -> frames (sealed when a key is
given) -> stored tap, so the manifest gets sizes and checksums of both sides
without a second pass. The reader builds its chain from the object's header
and checks everything it can: GCM tags, the trailer, and the digests the caller
expects. Streams are processed in pieces of at most 1 MiB, so memory stays
bounded whatever the object size. Nothing of storage or PostgreSQL is imported here.

Per byte, the writer does what the format needs and little else: the plaintext
is hashed once, compressed in 128 KiB pieces, and the codec's output leaves in
the pieces the codec returned (no frame-sized copies unless a frame is sealed).
A backup's big objects use the read-ahead encoder (see ``Encoder``), which
spreads that work over threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass

from janua_backup.errors import IntegrityError
from janua_backup.pipeline.ahead import ReadAhead
from janua_backup.pipeline.compress import check_codec, decompress, new_compressor
from janua_backup.pipeline.crypto import (
    FrameCipher,
    Key,
    Passphrase,
    generate_key_file,
    key_from_file,
    key_from_passphrase,
)
from janua_backup.pipeline.digest import Digest, HashAside, Tap
from janua_backup.pipeline.frames import FrameReader, FrameWriter, Trailer
from janua_backup.pipeline.header import BOUND_VERSION, SALT_BYTES, ObjectHeader, read_header

__all__ = [
    "Digest",
    "EncodeSpec",
    "Encoder",
    "Key",
    "ObjectHeader",
    "Passphrase",
    "decode",
    "decode_bytes",
    "encode_bytes",
    "generate_key_file",
    "key_from_file",
    "key_from_passphrase",
    "read_header",
]

Chunk = bytes | bytearray | memoryview
"""What ``Encoder.encode`` accepts: any contiguous bytes (a reader may reuse its buffer)."""

INPUT_PIECE_BYTES = 128 * 1024
"""Compressors and hashes get pieces of up to this size (and of at least half of it,
except for the last). Big enough that Python's share per byte is small, and below
the allocator's mmap threshold (``janua_backup.memory``): a codec's output for a
piece comes from reused heap memory, not from fresh pages the kernel must fault in
and clear, which cost as much as hashing the bytes. Measured with zstd -3 on table
files: 4.6 ms/MiB with these pieces, 4.9 with 1 MiB pieces."""


@dataclass(frozen=True, slots=True)
class EncodeSpec:
    """How to write objects: codec, level (None: the codec's default), key (None: plaintext).

    A ``Passphrase`` key must have been derived (``Passphrase.derive``: the
    repository does it from its marker) before an object is encoded with it.
    ``threads`` > 1 compresses one object on that many threads (``wal-push``:
    one segment is one stream; a backup spreads files over its jobs instead).
    """

    codec: str = "gzip"
    level: int | None = None
    key: Key | Passphrase | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        check_codec(self.codec, self.level)  # fail at configuration time, not mid-backup


class Encoder:
    """Encodes one object; ``plain`` and ``stored`` are known once ``encode`` is exhausted.

    With ``read_ahead_bytes`` the work is spread over threads, so one big object
    is not bound by one core doing everything in turn: a producer thread reads
    ``chunks`` and compresses them, up to that many bytes of codec output ahead
    of the caller's thread, which frames, hashes and hands the stored bytes on
    (to a storage upload, which then overlaps with compression); the plaintext
    is hashed in a helper thread while the same bytes are being compressed.
    zlib, zstd and hashlib release the GIL, so these run at once. The stored
    bytes are the same either way.

    ``bind`` is the object's key relative to the repository root: an encrypted
    object binds it into every frame's AAD (format version 2), and is then
    readable only under that name.
    """

    __slots__ = ("_bind", "_plain", "_read_ahead_bytes", "_spec", "_started", "_stored")

    def __init__(self, spec: EncodeSpec, *, bind: str, read_ahead_bytes: int = 0) -> None:
        self._spec = spec
        self._bind = bind
        self._read_ahead_bytes = read_ahead_bytes
        self._started = False
        self._plain: Digest | None = None
        self._stored: Digest | None = None

    @property
    def plain(self) -> Digest:
        """Size and SHA-256 of the plaintext that went in."""
        if self._plain is None:
            raise RuntimeError("Encoder.plain is known only after encode() is exhausted")
        return self._plain

    @property
    def stored(self) -> Digest:
        """Size and SHA-256 of every stored byte, header included."""
        if self._stored is None:
            raise RuntimeError("Encoder.stored is known only after encode() is exhausted")
        return self._stored

    def encode(self, chunks: Iterable[Chunk]) -> Generator[bytes, None, None]:
        """Yield the stored bytes of ``chunks`` (chunks of any size), streaming.

        A chunk is used up before the next one is asked for (its bytes are
        copied if they must wait), so a reader may refill one buffer and yield
        views of it. Close the generator if it is not exhausted: that stops
        the producer thread of a read-ahead encoder at once.
        """
        if self._started:
            raise RuntimeError("an Encoder encodes one object; make a new Encoder")
        self._started = True
        return self._encode(chunks)

    def _encode(self, chunks: Iterable[Chunk]) -> Generator[bytes, None, None]:
        spec = self._spec
        header, cipher = _new_header(spec, self._bind)
        writer = FrameWriter(header, cipher)
        threaded = self._read_ahead_bytes > 0
        plain = HashAside() if threaded else Tap()
        codec_output: Iterator[bytes] = _compress(chunks, spec, plain)
        if threaded:
            codec_output = ReadAhead(codec_output, self._read_ahead_bytes)
        try:
            yield writer.start()
            for output in codec_output:
                yield from writer.write(output)
        finally:
            if isinstance(codec_output, ReadAhead):
                codec_output.close()  # joins the producer: plain is complete below
            if isinstance(plain, HashAside):
                plain.close()
        yield from writer.close(plain.size_bytes, plain.raw_sha256())
        self._plain = plain.digest()
        self._stored = writer.stored.digest()


def _compress(chunks: Iterable[Chunk], spec: EncodeSpec, plain: Tap | HashAside) -> Iterator[bytes]:
    """The codec output of ``chunks``, hashing them into ``plain`` on the way.

    A HashAside hashes a large chunk in its thread while the chunk is being
    compressed here, and is waited for before the next chunk is asked for
    (the reader may refill the same buffer).
    """
    compressor = new_compressor(spec.codec, spec.level, spec.threads)
    pieces = _Pieces(INPUT_PIECE_BYTES)
    for chunk in chunks:
        plain.add(chunk)
        for piece in pieces.feed(chunk):
            output = compressor.compress(piece)
            if output:
                yield output
        if isinstance(plain, HashAside):
            plain.wait()
    for piece in pieces.finish():
        output = compressor.compress(piece)
        if output:
            yield output
    yield compressor.flush()


def _new_header(spec: EncodeSpec, bind: str) -> tuple[ObjectHeader, FrameCipher | None]:
    key = spec.key.key if isinstance(spec.key, Passphrase) else spec.key
    if key is None and spec.key is not None:
        raise RuntimeError("a passphrase key is derived from the repository's marker first")
    if key is None:
        return ObjectHeader(codec=spec.codec), None
    header = ObjectHeader(
        codec=spec.codec,
        cipher="aes-256-gcm",
        key_id=key.key_id,
        salt=os.urandom(SALT_BYTES),
        version=BOUND_VERSION,
    )
    return header, FrameCipher(key, header, bind)


class _Pieces:
    """Regroups chunks of any size into pieces of ``size // 2`` to ``size`` bytes (the
    last may be shorter); a piece is used up before the next chunk is fed.

    Large chunks are cut through a memoryview (no copy); small ones gather in
    a bytearray, so tiny files in a bundle cost few compressor calls.
    """

    __slots__ = ("_pending", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._pending = bytearray()

    def feed(self, chunk: Chunk) -> Iterator[bytes | bytearray | memoryview]:
        size = self._size
        view = memoryview(chunk).cast("B")
        if self._pending:
            missing = size - len(self._pending)
            self._pending += view[:missing]
            view = view[missing:]
            if len(self._pending) < size:
                return
            full, self._pending = self._pending, bytearray()
            yield full
        while len(view) >= size:
            yield view[:size]
            view = view[size:]
        if len(view) >= size // 2:
            yield view
        elif view:
            self._pending += view

    def finish(self) -> Iterator[bytearray]:
        if self._pending:
            full, self._pending = self._pending, bytearray()
            yield full


def decode(
    chunks: Iterable[bytes],
    key: Key | None,
    *,
    bind: str,
    expect_stored: Digest | None = None,
    expect_plain: Digest | None = None,
    on_header: Callable[[ObjectHeader], None] | None = None,
) -> Iterator[bytes]:
    """Yield the plaintext of a stored object in pieces of at most 1 MiB.

    Raises IntegrityError as soon as something is wrong and at the latest when
    the iterator ends: trust the data only once it is exhausted. The header
    decides codec and cipher. A missing or different key is a DecryptionError;
    a key may read unencrypted objects (written before encryption was turned
    on). ``on_header`` sees the header before any plaintext and may raise to
    refuse the object, e.g. an unencrypted one where only encrypted ones may be.
    ``bind`` is the key the object was read from, relative to the repository
    root: an encrypted object of format version 2 written for another key
    fails authentication (IntegrityError); version 1 objects bind no name.
    """
    max_stored = expect_stored.size_bytes if expect_stored else None
    reader = FrameReader(chunks, key, max_stored, bind)
    if on_header is not None:
        on_header(reader.header)
    plain = Tap(expect_plain.size_bytes if expect_plain else None, "decoded plaintext")
    for piece in decompress(reader.header.codec, reader.payloads()):
        plain.add(piece)
        yield piece
    trailer = reader.finish()
    _check_trailer(trailer, plain)
    _check_expected("stored object", reader.stored.digest(), expect_stored)
    _check_expected("decoded plaintext", plain.digest(), expect_plain)


def _check_trailer(trailer: Trailer, plain: Tap) -> None:
    if trailer.plain_size_bytes != plain.size_bytes:
        raise IntegrityError(
            f"the object decodes to {plain.size_bytes} bytes but its trailer records "
            f"{trailer.plain_size_bytes}: the object is damaged"
        )
    if trailer.plain_sha256 != plain.raw_sha256():
        raise IntegrityError(
            "the decoded bytes do not match the SHA-256 in the object's trailer: "
            "the object is damaged"
        )


def _check_expected(what: str, actual: Digest, expected: Digest | None) -> None:
    if expected is None or expected.matches(actual):
        return
    raise IntegrityError(
        f"the {what} does not match what the manifest records: it is {actual.size_bytes} "
        f"bytes with sha256 {actual.sha256}, expected {expected.size_bytes} bytes with "
        f"sha256 {expected.sha256}"
    )


def encode_bytes(data: bytes, spec: EncodeSpec, *, bind: str) -> tuple[bytes, Digest, Digest]:
    """Encode a small object in memory; returns (stored bytes, plain digest, stored digest)."""
    encoder = Encoder(spec, bind=bind)
    stored = b"".join(encoder.encode([data]))
    return stored, encoder.plain, encoder.stored


def decode_bytes(data: bytes, key: Key | None, *, bind: str) -> bytes:
    """Decode a small object held in memory (a manifest), with every check of ``decode``."""
    return b"".join(decode([data], key, bind=bind))
