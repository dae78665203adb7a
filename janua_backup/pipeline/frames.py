"""Frames of the object format: cutting codec output into sealed frames, and back.

Owns the length words, the final frame and its trailer, the stored-bytes tap
and every structural check a reader makes (lengths, truncation, bytes after
the end); the layout is documented in ``header``. Codecs and keys come from
``compress`` and ``crypto``; nothing of storage or PostgreSQL.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from janua_backup.errors import IntegrityError
from janua_backup.pipeline.crypto import FrameCipher, Key, cipher_for
from janua_backup.pipeline.digest import Tap
from janua_backup.pipeline.header import (
    CIPHERS,
    FINAL_FLAG,
    FIXED_HEADER_BYTES,
    FRAME_PAYLOAD_BYTES,
    HEADER_MAX_BYTES,
    TAG_BYTES,
    TRAILER_BYTES,
    ObjectHeader,
    read_header,
)

__all__ = ["FrameReader", "FrameWriter", "Trailer"]

_WORD = struct.Struct(">I")
_TRAILER = struct.Struct(">Q32s32s")
_TRUNCATED = "the object is truncated: it ends before its final frame"


@dataclass(frozen=True, slots=True)
class Trailer:
    """The final frame's content: what the plaintext and the stored bytes must be."""

    plain_size_bytes: int
    plain_sha256: bytes
    body_sha256: bytes

    def to_bytes(self) -> bytes:
        return _TRAILER.pack(self.plain_size_bytes, self.plain_sha256, self.body_sha256)

    @classmethod
    def from_bytes(cls, data: bytes) -> Trailer:
        return cls(*_TRAILER.unpack(data))


class FrameWriter:
    """Turns codec output into stored bytes: header, full data frames, final frame.

    Codec output is kept as the pieces the codec returned and leaves as those
    same pieces, cut only at frame boundaries, behind each frame's length word:
    an unencrypted object's bytes are never gathered into a frame-sized buffer
    (every copy of a stored byte costs, and a 1 MiB buffer is a fresh mapping
    under the bounded allocator, see ``janua_backup.memory``). Sealing needs the
    whole payload, so an encrypted frame is joined once and sealed.
    """

    __slots__ = ("_cipher", "_header", "_index", "_pending", "_pending_bytes", "stored")

    def __init__(self, header: ObjectHeader, cipher: FrameCipher | None) -> None:
        self._header = header.to_bytes()
        self._cipher = cipher
        self._index = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.stored = Tap()

    def start(self) -> bytes:
        self.stored.add(self._header)
        return self._header

    def write(self, data: bytes) -> Iterator[bytes]:
        """Yield the frames that ``data`` completes; keep the rest for later."""
        start, end = 0, len(data)
        while end - start >= FRAME_PAYLOAD_BYTES - self._pending_bytes:
            stop = start + FRAME_PAYLOAD_BYTES - self._pending_bytes
            self._keep(data, start, stop)
            start = stop
            yield from self._flush(final=False)
        if start < end:
            self._keep(data, start, end)

    def _keep(self, data: bytes, start: int, stop: int) -> None:
        whole = start == 0 and stop == len(data)
        self._pending.append(data if whole else data[start:stop])  # copies only a cut piece
        self._pending_bytes += stop - start

    def close(self, plain_size_bytes: int, plain_sha256: bytes) -> Iterator[bytes]:
        """Yield the last data frame, if any, and the final frame."""
        if self._pending_bytes:
            yield from self._flush(final=False)
        body = self.stored.raw_sha256()  # everything before the final frame
        self._pending = [Trailer(plain_size_bytes, plain_sha256, body).to_bytes()]
        self._pending_bytes = TRAILER_BYTES
        yield from self._flush(final=True)

    def _flush(self, *, final: bool) -> Iterator[bytes]:
        """Yield the pending payload as one frame: its length word, then its bytes."""
        pieces, size = self._pending, self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        if self._cipher is not None:
            sealed = self._cipher.seal(self._index, final, b"".join(pieces))
            pieces, size = [sealed], len(sealed)
        self._index += 1
        word = _WORD.pack(size | (FINAL_FLAG if final else 0))
        self.stored.add(word)
        yield word
        for piece in pieces:
            self.stored.add(piece)
            yield piece


class _Input:
    """Exact-size reads over chunks of any size, copying only what is read."""

    __slots__ = ("_chunk", "_chunks", "_position")

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._chunk = b""
        self._position = 0

    def take(self, size: int) -> bytes:
        """Up to ``size`` bytes; fewer only at the end of the input."""
        parts: list[bytes] = []
        while size > 0 and self._advance():
            piece = self._chunk[self._position : self._position + size]
            self._position += len(piece)
            size -= len(piece)
            parts.append(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _advance(self) -> bool:
        """Make the current chunk non-empty; False at the end of the input."""
        while self._position >= len(self._chunk):
            following = next(self._chunks, None)
            if following is None:
                return False
            self._chunk, self._position = following, 0
        return True

    def at_end(self) -> bool:
        return not self._advance()


class FrameReader:
    """Parses stored bytes: header first, then data payloads, then the trailer.

    Authenticates each frame before its payload leaves, checks each length word
    before reading the payload (bounded memory) and taps the stored bytes.
    ``name`` is the object's key in the repository, bound by format version 2.
    """

    __slots__ = (
        "_body_sha256",
        "_cipher",
        "_index",
        "_input",
        "_trailer",
        "header",
        "stored",
    )

    def __init__(
        self, chunks: Iterable[bytes], key: Key | None, max_stored: int | None, name: str
    ) -> None:
        self._input = _Input(chunks)
        self.stored = Tap(max_stored, "stored object")
        prefix = self._input.take(FIXED_HEADER_BYTES)
        if len(prefix) == FIXED_HEADER_BYTES and prefix[-1] != CIPHERS["none"]:
            prefix += self._input.take(HEADER_MAX_BYTES - FIXED_HEADER_BYTES)
        self.header = read_header(prefix)
        self._account(prefix)
        self._cipher = cipher_for(self.header, key, name)
        self._index = 0
        self._body_sha256: bytes | None = None
        self._trailer: Trailer | None = None

    def payloads(self) -> Iterator[bytes]:
        """Yield the data payloads (decrypted), stopping at the final frame."""
        while self._trailer is None:
            payload = self._next_frame()
            if self._trailer is None:
                yield payload

    def finish(self) -> Trailer:
        """Check the object's end (final frame, nothing after it, stored digest); the trailer.

        Must be called after the codec consumed ``payloads()``: a data payload
        still unread here means the codec stream ended before the frames did.
        """
        for payload in self.payloads():
            if payload:
                raise IntegrityError("the object holds data after the end of its codec stream")
        assert self._trailer is not None and self._body_sha256 is not None
        if not self._input.at_end():
            raise IntegrityError("the object has unexpected bytes after its final frame")
        if self._trailer.body_sha256 != self._body_sha256:
            raise IntegrityError(
                "the stored bytes do not match the SHA-256 in the object's trailer: "
                "the object was modified"
            )
        return self._trailer

    def _next_frame(self) -> bytes:
        index = self._index
        before_word = self.stored.raw_sha256()
        (word,) = _WORD.unpack(self._read(_WORD.size))
        final = bool(word & FINAL_FLAG)
        length = word & ~FINAL_FLAG
        tag = TAG_BYTES if self._cipher is not None else 0
        if final and length != TRAILER_BYTES + tag:
            raise IntegrityError(
                f"the object's final frame has {length} bytes instead of {TRAILER_BYTES + tag}"
            )
        if length > FRAME_PAYLOAD_BYTES + tag:
            raise IntegrityError(
                f"frame {index} of the object claims {length} bytes, more than the format allows"
            )
        payload = self._read(length)
        if self._cipher is not None:
            payload = self._cipher.open(index, final, payload)
        self._index += 1
        if final:
            self._body_sha256 = before_word
            self._trailer = Trailer.from_bytes(payload)
        return payload

    def _read(self, size: int) -> bytes:
        return self._account(self._input.take(size), size)

    def _account(self, data: bytes, expected: int | None = None) -> bytes:
        if expected is not None and len(data) < expected:
            raise IntegrityError(_TRUNCATED)
        self.stored.add(data)
        return data
