"""The codecs: none, gzip and zstd, as incremental compressors and bounded decompressors.

Owns codec names, levels and the streaming calls; it knows nothing of frames,
keys or storage. Decompression never produces more than ``OUTPUT_PIECE_BYTES``
at a time, so a zip bomb or a 1 GiB file of zeros costs ~1 MiB of memory.
``zstandard`` is imported only when the zstd codec is used, to keep the start
of short-lived commands fast.

gzip runs on zlib-ng when it is installed (a dependency; the standard zlib is
the fallback): the same deflate format and the same levels, about three times
faster at level 6. Backups and WAL pushes are bound by this CPU, and anything
zlib-ng writes, any gzip reader reads (and the other way round).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from types import ModuleType
from typing import IO, TYPE_CHECKING, Protocol, cast

from janua_backup.errors import ConfigError, IntegrityError
from janua_backup.pipeline.header import CODECS, FRAME_PAYLOAD_BYTES

if TYPE_CHECKING:
    import zstandard

__all__ = [
    "DEFAULT_LEVELS",
    "LEVEL_RANGES",
    "OUTPUT_PIECE_BYTES",
    "ZSTD_MAX_WINDOW_BYTES",
    "Compressor",
    "check_codec",
    "decompress",
    "new_compressor",
]

OUTPUT_PIECE_BYTES = 1 << 20
DEFAULT_LEVELS: dict[str, int] = {"gzip": 6, "zstd": 3}
LEVEL_RANGES: dict[str, tuple[int, int]] = {"gzip": (1, 9), "zstd": (1, 19)}
ZSTD_MAX_WINDOW_BYTES = 1 << 23
"""Levels 1-19 use windows of at most 8 MiB; refusing larger ones bounds a reader's memory."""
_ZSTD_MIN_JOB_BYTES = 1 << 20
_INFLATE_PIECE_BYTES = 128 * 1024
"""Decompressed pieces stay below the allocator's mmap threshold (memory.py):
a fresh mapping per 1 MiB piece cost page faults on every restored byte."""
_INFLATE_INPUT_BYTES = 32 * 1024
"""Input is handed to zlib in slices this small: a call that stops at max_length
copies the input it has not read (``unconsumed_tail``) into a new bytes object,
and with whole 1 MiB payloads that copy (a fresh mapping each time, ~28 per
payload at 3.5x) was most of a restore's page faults and system time."""
_GZIP_WBITS = 31  # 16 + 15: a real gzip member (RFC 1952), not a bare zlib stream


def _deflate_module() -> ModuleType:
    try:
        from zlib_ng import zlib_ng
    except ImportError:  # pragma: no cover - zlib-ng is a dependency; zlib still works
        return zlib
    return zlib_ng


_deflate = _deflate_module()


class Compressor(Protocol):
    """An incremental compressor: feed pieces, then flush once at the end."""

    def compress(self, data: bytes | bytearray | memoryview, /) -> bytes: ...

    def flush(self) -> bytes: ...


class _Identity:
    """The codec "none": the plaintext itself is the codec output."""

    __slots__ = ()

    def compress(self, data: bytes | bytearray | memoryview, /) -> bytes:
        return bytes(data)  # a copy: the caller may reuse its buffer

    def flush(self) -> bytes:
        return b""


def check_codec(codec: str, level: int | None) -> int | None:
    """Validate a codec and level from the configuration; return the level to use."""
    if codec not in CODECS:
        raise ConfigError(
            f"unknown compression codec {codec!r}; use one of {', '.join(sorted(CODECS))}"
        )
    if codec == "none":
        if level is not None:
            raise ConfigError("compression codec 'none' takes no level; remove the level")
        return None
    low, high = LEVEL_RANGES[codec]
    if level is None:
        return DEFAULT_LEVELS[codec]
    if isinstance(level, bool) or not isinstance(level, int) or not low <= level <= high:
        raise ConfigError(f"{codec} compression level must be between {low} and {high}")
    return level


def new_compressor(codec: str, level: int | None = None, threads: int = 1) -> Compressor:
    """A fresh compressor for one object (compressor objects are not thread-safe).

    ``threads`` > 1 spreads one stream over that many threads: gzip as pigz
    does (``pargzip``), zstd with its own worker threads. Both write what a
    one-thread compressor's reader reads.
    """
    resolved = check_codec(codec, level)
    if resolved is None:
        return _Identity()
    if codec == "gzip":
        if threads > 1:
            from janua_backup.pipeline.pargzip import ParallelGzip

            return ParallelGzip(_deflate, resolved, threads)
        return cast(Compressor, _deflate.compressobj(resolved, zlib.DEFLATED, _GZIP_WBITS))
    if threads > 1:
        import zstandard

        # Jobs of one window each: zstd's default (4 windows per job, several
        # jobs buffered per thread) would add tens of MiB to a backup's memory.
        window = 1 << zstandard.ZstdCompressionParameters.from_level(resolved).window_log
        params = zstandard.ZstdCompressionParameters.from_level(
            resolved, threads=threads, job_size=max(window, _ZSTD_MIN_JOB_BYTES)
        )
        engine = zstandard.ZstdCompressor(compression_params=params)
        return cast(Compressor, engine.compressobj())
    return _ZstdFrames(resolved)


class _ZstdFrames:
    """zstd as a sequence of frames of one window's worth of plaintext each.

    A streaming zstd compressor keeps its window in a ring buffer; once the ring
    wraps, every block is matched against two separate memory areas (zstd's
    "extDict" mode), its slowest path, which took most of a backup's zstd time.
    A frame no larger than the window never wraps: measured on table files at
    level 3, 4.2 ms/MiB instead of 4.6, for 0.4% more bytes (a match cannot
    reach back across a frame boundary), and no more memory. Frames back to
    back are one zstd stream (RFC 8878), which every reader of ours decodes.
    """

    __slots__ = ("_compressor", "_current", "_frame_bytes", "_room")

    def __init__(self, level: int) -> None:
        import zstandard

        # A new ZstdCompressor per object: sharing one between threads crashes.
        self._compressor = zstandard.ZstdCompressor(level=level)
        params = zstandard.ZstdCompressionParameters.from_level(level)
        self._frame_bytes = 1 << params.window_log
        self._current = self._compressor.compressobj()
        self._room = self._frame_bytes

    def compress(self, data: bytes | bytearray | memoryview, /) -> bytes:
        view = memoryview(data).cast("B")
        out: list[bytes] = []
        while len(view) > 0:
            if self._room == 0:  # ended lazily: no empty frame after the last full one
                out.append(self._current.flush())
                self._current = self._compressor.compressobj()
                self._room = self._frame_bytes
            take = min(self._room, len(view))
            out.append(self._current.compress(view[:take]))
            self._room -= take
            view = view[take:]
        if len(out) == 1:
            return out[0]
        return b"".join(out)

    def flush(self) -> bytes:
        return self._current.flush()


def decompress(codec: str, payloads: Iterator[bytes]) -> Iterator[bytes]:
    """Decode a codec stream given in pieces; yield plaintext pieces of at most 1 MiB.

    Codec errors become IntegrityError. Data after the end of the compressed
    stream is an error too: the writer never puts anything there. A zstd stream
    may hold several zstd frames (see ``_ZstdFrames``).
    """
    if codec == "gzip":
        return _gunzip(payloads)
    if codec == "zstd":
        return _unzstd(payloads)
    if codec == "none":
        return _split(payloads)
    raise ConfigError(f"unknown compression codec {codec!r}")


def _split(payloads: Iterator[bytes]) -> Iterator[bytes]:
    for payload in payloads:
        for start in range(0, len(payload), OUTPUT_PIECE_BYTES):
            yield payload[start : start + OUTPUT_PIECE_BYTES]


def _gunzip(payloads: Iterator[bytes]) -> Iterator[bytes]:
    inflater = _deflate.decompressobj(_GZIP_WBITS)
    for payload in payloads:
        if inflater.eof and payload:
            raise IntegrityError("the object holds data after the end of its gzip stream")
        view = memoryview(payload)
        for start in range(0, len(view), _INFLATE_INPUT_BYTES):
            data: bytes | memoryview = view[start : start + _INFLATE_INPUT_BYTES]
            while True:
                # max_length bounds each output; the rest of the input waits in
                # unconsumed_tail. A full output may hide more pending output, so
                # only a short one with no input left ends the loop.
                out = _inflate(inflater, data)
                data = inflater.unconsumed_tail
                if out:
                    yield out
                if not data and len(out) < _INFLATE_PIECE_BYTES:
                    break
        if inflater.unused_data:
            raise IntegrityError("the object holds data after the end of its gzip stream")
    if not inflater.eof:
        raise IntegrityError("the object's gzip stream ends early: the object is truncated")


def _inflate(inflater: zlib._Decompress, data: bytes | memoryview) -> bytes:
    try:
        return inflater.decompress(data, _INFLATE_PIECE_BYTES)
    except (zlib.error, _deflate.error) as exc:
        raise IntegrityError(f"the object's gzip stream is damaged: {exc}") from exc


class _PayloadSource:
    """A read()-able view of the payload iterator, as zstd's stream_reader wants."""

    __slots__ = ("_current", "_payloads", "_position")

    def __init__(self, payloads: Iterator[bytes]) -> None:
        self._payloads = payloads
        self._current = b""
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        while self._position >= len(self._current):
            following = next(self._payloads, None)
            if following is None:
                return b""
            self._current, self._position = following, 0
        if self._position == 0 and (size < 0 or size >= len(self._current)):
            piece = self._current  # the common case: hand over a whole payload, no copy
        else:
            end = len(self._current) if size < 0 else self._position + size
            piece = self._current[self._position : end]
        self._position += len(piece)
        return piece


def _unzstd(payloads: Iterator[bytes]) -> Iterator[bytes]:
    import zstandard

    source = _PayloadSource(payloads)
    # stream_reader is zstandard's only API whose output per call is bounded:
    # decompressobj() returns everything a piece of input expands to. Without
    # read_across_frames a read() returns at the end of a zstd frame and the
    # next one goes on with the next frame: the loop below reads them all, as
    # it has since the first release (so older readers read objects of several
    # frames too).
    reader = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW_BYTES).stream_reader(
        cast(IO[bytes], source),
        read_size=FRAME_PAYLOAD_BYTES,
        read_across_frames=False,
        closefd=False,
    )
    while out := _read_zstd(reader):
        yield out
    if source.read():
        raise IntegrityError("the object holds data after the end of its zstd stream")


def _read_zstd(reader: zstandard.ZstdDecompressionReader) -> bytes:
    import zstandard

    try:
        return reader.read(_INFLATE_PIECE_BYTES)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"the object's zstd stream is damaged: {exc}") from exc
