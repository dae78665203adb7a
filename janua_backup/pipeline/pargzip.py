"""One gzip member deflated on several threads, as pigz does it.

Why: ``wal-push`` compresses one 16 MiB segment, and gzip 6 is most of its
time; a backup spreads files over its jobs, but one segment is one stream and
would keep one core busy while the others wait. The input is cut into blocks;
each block is deflated on its own (a raw deflate stream primed with the 32 KiB
before it, so matches may reach back across the cut as in a serial stream),
ended with a sync flush (byte-aligned, not final), and the last one with the
final bit. Their concatenation is one ordinary deflate stream, wrapped in one
gzip header and trailer (CRC-32 and size of the whole): any gzip reader reads
it, the existing repositories' reader included. The output is a few bytes per
block larger than a serial stream's.

zlib-ng (or zlib) releases the GIL while deflating, so threads suffice.
Memory: at most ``2 x threads`` blocks in flight, input and output.
"""

from __future__ import annotations

import struct
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from types import ModuleType

__all__ = ["BLOCK_BYTES", "ParallelGzip"]

BLOCK_BYTES = 1 << 20
_WINDOW_BYTES = 32 * 1024  # deflate's window: what a block may refer back to
# A gzip header (RFC 1952): magic, deflate, no flags, no mtime, no extra flags, OS unknown.
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


class ParallelGzip:
    """A ``Compressor`` (see ``compress``) whose deflate runs on ``threads`` threads."""

    def __init__(
        self, deflate: ModuleType, level: int, threads: int, block_bytes: int = BLOCK_BYTES
    ) -> None:
        if threads < 2 or block_bytes < _WINDOW_BYTES:
            raise ValueError("ParallelGzip wants 2+ threads and blocks of at least 32 KiB")
        self._deflate, self._level, self._block_bytes = deflate, level, block_bytes
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="gzip")
        self._limit = 2 * threads
        self._pending: deque[Future[bytes]] = deque()
        self._buffer = bytearray()
        self._window = b""
        self._crc = 0
        self._size = 0
        self._started = False

    def compress(self, data: bytes | bytearray | memoryview, /) -> bytes:
        self._crc = self._deflate.crc32(data, self._crc)
        self._size += len(data)
        self._buffer += data
        out = [self._start()]
        while len(self._buffer) >= self._block_bytes:
            block = bytes(self._buffer[: self._block_bytes])
            del self._buffer[: self._block_bytes]
            self._submit(block, last=False)
            out.append(self._collect(wait=len(self._pending) > self._limit))
        return b"".join(out)

    def flush(self) -> bytes:
        out = [self._start()]
        self._submit(bytes(self._buffer), last=True)
        self._buffer = bytearray()
        while self._pending:
            out.append(self._pending.popleft().result())
        self._pool.shutdown()
        out.append(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))
        return b"".join(out)

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return _HEADER

    def _submit(self, block: bytes, *, last: bool) -> None:
        window, self._window = self._window, block[-_WINDOW_BYTES:]
        self._pending.append(self._pool.submit(self._deflate_block, block, window, last))

    def _collect(self, *, wait: bool) -> bytes:
        """Finished blocks in order; with ``wait``, at least the oldest one."""
        out = []
        while self._pending and (wait or self._pending[0].done()):
            out.append(self._pending.popleft().result())
            wait = False
        return b"".join(out)

    def _deflate_block(self, block: bytes, window: bytes, last: bool) -> bytes:
        d = self._deflate
        kwargs = {"zdict": window} if window else {}
        engine = d.compressobj(self._level, d.DEFLATED, -15, 8, d.Z_DEFAULT_STRATEGY, **kwargs)
        out: bytes = engine.compress(block) + engine.flush(d.Z_FINISH if last else d.Z_SYNC_FLUSH)
        return out
