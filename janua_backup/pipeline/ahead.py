"""Produce a byte stream in a thread of its own, a bounded number of bytes ahead of its reader.

Uploading an object is a loop of "encode a few MiB, send them, wait for the
store's answer". In one thread the compressor idles while a request is in
flight, and the upload idles while the compressor works; with the stream
produced in another thread both go on at once (zlib, zstd, hashlib and the
socket release the GIL). The chunks already produced and not yet taken are
bounded by ``max_bytes``, so memory stays bounded; the producer then waits.
Each side wakes the other only once a quarter of ``max_bytes`` is ready (or
free): a wake-up per small chunk would cost more thread switches, and GIL
hand-overs, than the chunks cost to produce.

Errors keep their meaning: an exception of the producer (a file that cannot be
read, a cancelled backup) is raised by the reader's ``next()``, and ``close()``
(on any exit of the reader, including its own error) stops the producer and
waits for it, so no thread outlives the call that needed it. Only the standard
library is imported.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Self

__all__ = ["ReadAhead"]


class ReadAhead(Iterator[bytes]):
    """Iterates ``source`` in a new thread; this iterator yields its chunks in order.

    Use it as a context manager (or call ``close``) so the producer stops when
    the reader stops early. Chunks must not be changed once yielded by the
    source (bytes are not; an Encoder yields bytes).
    """

    def __init__(self, source: Iterable[bytes], max_bytes: int, name: str = "") -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self._source = source
        self._max_bytes = max_bytes
        self._lock = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._queued_bytes = 0
        self._wake_bytes = max(1, max_bytes // 4)
        self._done = False  # the producer ended, by exhaustion or by an error
        self._closed = False  # the reader wants no more
        self._reader_waits = False
        self._producer_waits = False
        self._error: BaseException | None = None
        label = name or f"{threading.current_thread().name}-ahead"
        self._thread = threading.Thread(target=self._produce, name=label, daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        error: BaseException | None = None
        iterator = iter(self._source)
        try:
            for chunk in iterator:
                with self._lock:
                    while self._queued_bytes >= self._max_bytes and not self._closed:
                        self._producer_waits = True
                        self._lock.wait()
                    self._producer_waits = False
                    if self._closed:
                        break
                    self._chunks.append(chunk)
                    self._queued_bytes += len(chunk)
                    if self._reader_waits and self._queued_bytes >= self._wake_bytes:
                        self._lock.notify_all()
        except BaseException as exc:  # handed to the reader, raised there
            error = exc
        finally:
            close = getattr(iterator, "close", None)
            if close is not None and error is None:
                try:
                    close()  # a generator stopped early runs its finally blocks here
                except BaseException as exc:
                    error = exc
            with self._lock:
                self._done = True
                self._error = error
                self._lock.notify_all()

    def __next__(self) -> bytes:
        with self._lock:
            while not self._chunks and not self._done:
                self._reader_waits = True
                self._lock.wait()
            self._reader_waits = False
            if self._chunks:
                chunk = self._chunks.popleft()
                self._queued_bytes -= len(chunk)
                if (
                    self._producer_waits
                    and self._queued_bytes <= self._max_bytes - self._wake_bytes
                ):
                    self._lock.notify_all()
                return chunk
            error, self._error = self._error, None
        if error is not None:
            raise error
        raise StopIteration

    def close(self) -> None:
        """Stop the producer (if it still runs) and wait for it; chunks not taken are dropped."""
        with self._lock:
            self._closed = True
            self._chunks.clear()
            self._queued_bytes = 0
            self._lock.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
