"""The pipeline's public API: encode plaintext into stored objects and decode them back.

The writer chain is plaintext tap -> codec -> frames (sealed when a key is
given) -> stored tap, so the manifest gets sizes and checksums of both sides
without a second pass. The reader builds its chain from the object's header
and checks everything it can: GCM tags, the trailer, and the digests the caller
expects. Streams are processed in ~1 MiB pieces, so memory stays bounded
whatever the object size. Nothing of storage or PostgreSQL is imported here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from janua_backup.errors import IntegrityError
from janua_backup.pipeline.compress import check_codec, decompress, new_compressor
from janua_backup.pipeline.crypto import (
    FrameCipher,
    Key,
    generate_key_file,
    key_from_file,
    key_from_passphrase,
)
from janua_backup.pipeline.digest import Digest, Tap
from janua_backup.pipeline.frames import FrameReader, FrameWriter, Trailer
from janua_backup.pipeline.header import SALT_BYTES, ObjectHeader, read_header

__all__ = [
    "Digest",
    "EncodeSpec",
    "Encoder",
    "Key",
    "ObjectHeader",
    "decode",
    "decode_bytes",
    "encode_bytes",
    "generate_key_file",
    "key_from_file",
    "key_from_passphrase",
    "read_header",
]

INPUT_PIECE_BYTES = 1 << 20
"""Compressors and hashes get pieces this large: few Python calls, GIL released."""


@dataclass(frozen=True, slots=True)
class EncodeSpec:
    """How to write objects: codec, level (None: the codec's default), key (None: plaintext)."""

    codec: str = "gzip"
    level: int | None = None
    key: Key | None = None

    def __post_init__(self) -> None:
        check_codec(self.codec, self.level)  # fail at configuration time, not mid-backup


class Encoder:
    """Encodes one object; ``plain`` and ``stored`` are known once ``encode`` is exhausted."""

    __slots__ = ("_plain", "_spec", "_started", "_stored")

    def __init__(self, spec: EncodeSpec) -> None:
        self._spec = spec
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

    def encode(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Yield the stored bytes of ``chunks`` (chunks of any size), streaming."""
        if self._started:
            raise RuntimeError("an Encoder encodes one object; make a new Encoder")
        self._started = True
        return self._encode(chunks)

    def _encode(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        spec = self._spec
        header, cipher = _new_header(spec)
        writer = FrameWriter(header, cipher)
        compressor = new_compressor(spec.codec, spec.level)
        plain = Tap()
        yield writer.start()
        for piece in _rechunk(chunks, INPUT_PIECE_BYTES):
            plain.add(piece)
            yield from writer.write(compressor.compress(piece))
        yield from writer.write(compressor.flush())
        yield from writer.close(plain.size_bytes, plain.raw_sha256())
        self._plain = plain.digest()
        self._stored = writer.stored.digest()


def _new_header(spec: EncodeSpec) -> tuple[ObjectHeader, FrameCipher | None]:
    if spec.key is None:
        return ObjectHeader(codec=spec.codec), None
    header = ObjectHeader(
        codec=spec.codec,
        cipher="aes-256-gcm",
        key_id=spec.key.key_id,
        salt=os.urandom(SALT_BYTES),
    )
    return header, FrameCipher(spec.key, header)


def _rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes | memoryview]:
    """Regroup chunks of any size into pieces of ``size`` bytes (the last may be shorter).

    Large chunks are cut through a memoryview (no copy); small ones gather in
    one bytearray (no quadratic concatenation).
    """
    pending = bytearray()
    for chunk in chunks:
        view = memoryview(chunk)
        if pending:
            missing = size - len(pending)
            pending += view[:missing]
            view = view[missing:]
            if len(pending) < size:
                continue
            yield bytes(pending)
            pending.clear()
        while len(view) >= size:
            yield view[:size]
            view = view[size:]
        pending += view
    if pending:
        yield bytes(pending)


def decode(
    chunks: Iterable[bytes],
    key: Key | None,
    *,
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
    """
    reader = FrameReader(chunks, key, expect_stored.size_bytes if expect_stored else None)
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


def encode_bytes(data: bytes, spec: EncodeSpec) -> tuple[bytes, Digest, Digest]:
    """Encode a small object in memory; returns (stored bytes, plain digest, stored digest)."""
    encoder = Encoder(spec)
    stored = b"".join(encoder.encode([data]))
    return stored, encoder.plain, encoder.stored


def decode_bytes(data: bytes, key: Key | None) -> bytes:
    """Decode a small object held in memory (a manifest), with every check of ``decode``."""
    return b"".join(decode([data], key))
