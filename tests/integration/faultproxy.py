"""A loopback HTTP proxy in front of the S3 server that loses answers on purpose.

The failures that matter for a backup tool are not the ones where the store
never got the request (every client retries those) but the ones where it did:
the object is stored, and the client never hears (a reset after the request
body was received), hears an error (a 500 after a successful store), or hears
half an answer (a body truncated mid-way). This proxy forwards each request to
the real server, waits for its complete answer, and then, at a seeded rate,
replaces what the client gets:

* ``reset``: the connection is reset instead of answering (the store happened).
* ``error500``: a 500 InternalError answer instead of the real one.
* ``truncate``: the real status and headers (with their Content-Length), and
  half the body, then a reset. Answers without a body are reset instead.

Bounded on purpose: it listens on 127.0.0.1 only, forwards to a loopback
server only, one thread per client connection, sockets with timeouts, bodies
streamed in 64 KiB pieces. Requests are numbered as they arrive and the fault
of each is drawn from ``random.Random(seed)`` in that order, so a run is as
reproducible as the order of its requests.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlsplit

MODES = ("reset", "error500", "truncate")
_PIECE = 64 * 1024
_TIMEOUT_S = 60.0
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_ERROR_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>injected by faultproxy after the request was served</Message></Error>"
)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str  # path and query


Aim = Callable[[Request], bool | str]
"""Which requests may get a fault (then drawn at the rate); a mode name forces that fault."""


def everything(_request: Request) -> bool:
    return True


def writes(request: Request) -> bool:
    """PUT and POST: creates, parts, completions, deletes of many keys."""
    return request.method in ("PUT", "POST")


class FaultProxy:
    """``with FaultProxy(upstream, rate=0.15, seed=1) as proxy:`` then use ``proxy.url``."""

    def __init__(
        self,
        upstream_url: str,
        *,
        rate: float,
        seed: int,
        modes: Sequence[str] = MODES,
        aim: Aim = everything,
    ) -> None:
        upstream = urlsplit(upstream_url)
        if upstream.scheme != "http" or upstream.hostname not in _LOOPBACK:
            raise ValueError(
                f"faultproxy forwards to a loopback http server only, not {upstream_url}"
            )
        if not 0 <= rate <= 1 or not set(modes) <= set(MODES) or not modes:
            raise ValueError(f"need 0 <= rate <= 1 and modes among {MODES}")
        self._upstream = (upstream.hostname or "127.0.0.1", upstream.port or 80)
        self._rate, self._modes, self._aim = rate, tuple(modes), aim
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._threads: list[threading.Thread] = []
        self._clients: set[socket.socket] = set()
        self._closed = False
        self.requests = 0
        self.faults: Counter[str] = Counter()  # mode -> faults served
        self.log: list[tuple[str, str, str]] = []  # (method, target, mode) of each fault

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> FaultProxy:
        thread = threading.Thread(target=self._accept, name="faultproxy", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients = list(self._clients)
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in progress
        self._listener.close()
        for client in clients:
            with suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=_TIMEOUT_S)

    # -- one connection ------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            client.settimeout(_TIMEOUT_S)
            with self._lock:
                if self._closed:
                    client.close()
                    return
                self._clients.add(client)
                thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
                self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        try:
            with client, client.makefile("rb") as reader:
                while self._one(client, reader):
                    pass
        except OSError:
            pass  # the client went away, or we reset it
        finally:
            with self._lock:
                self._clients.discard(client)

    def _draw(self, request: Request) -> str | None:
        with self._lock:
            self.requests += 1
            roll, pick = self._random.random(), self._random.choice(self._modes)
            verdict = self._aim(request)
            if isinstance(verdict, str):
                pick = verdict
            elif not verdict or roll >= self._rate:
                return None
            self.faults[pick] += 1
            self.log.append((request.method, request.target, pick))
            return pick

    def _one(self, client: socket.socket, reader: BinaryIO) -> bool:
        """Serve one request; False when the connection is done."""
        line = reader.readline()
        if not line.strip():
            return False
        method, target, _version = line.decode("latin-1").split(" ", 2)
        headers = _read_headers(reader)
        if _header(headers, "expect").lower() == "100-continue":
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            headers = [(k, v) for k, v in headers if k.lower() != "expect"]
        fault = self._draw(Request(method, target))
        with socket.create_connection(self._upstream, timeout=_TIMEOUT_S) as upstream:
            head = line + b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers) + b"\r\n"
            upstream.sendall(head)
            chunked = "chunked" in _header(headers, "transfer-encoding").lower()
            for piece in _body(reader, headers):
                upstream.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                upstream.sendall(b"0\r\n\r\n")
            with upstream.makefile("rb") as answer:
                return self._answer(client, answer, method, fault, headers)

    def _answer(
        self,
        client: socket.socket,
        answer: BinaryIO,
        method: str,
        fault: str | None,
        request_headers: list[tuple[str, str]],
    ) -> bool:
        status_line = answer.readline()
        while status_line.split(b" ", 2)[1:2] == [b"100"]:  # an upstream 100 Continue
            _read_headers(answer)
            status_line = answer.readline()
        headers = _read_headers(answer)
        status = int(status_line.split(b" ", 2)[1])
        has_body = method != "HEAD" and status not in (204, 304) and not 100 <= status < 200
        body = _body(answer, headers, until_close=True) if has_body else iter(())
        if fault == "truncate" and not (
            has_body and int(_header(headers, "content-length") or 0) > 1
        ):
            fault = "reset"
        if fault in ("reset", "error500"):
            for _ in body:  # the store happened: read its whole answer, then lie
                pass
            if fault == "reset":
                _reset(client)
                return False
            client.sendall(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n"
                + f"Content-Length: {len(_ERROR_BODY)}\r\n\r\n".encode()
                + _ERROR_BODY
            )
            return _header(request_headers, "connection").lower() != "close"
        head = status_line + b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers)
        client.sendall(head + b"\r\n")
        if fault == "truncate":
            left = int(_header(headers, "content-length")) // 2
            for piece in body:
                client.sendall(piece[:left])
                left -= min(left, len(piece))
                if not left:
                    break
            _reset(client)
            return False
        chunked = "chunked" in _header(headers, "transfer-encoding").lower()
        for piece in body:
            client.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            client.sendall(b"0\r\n\r\n")
        closing = "close" in (
            _header(headers, "connection") + _header(request_headers, "connection")
        )
        framed = chunked or _header(headers, "content-length") or not has_body
        return not closing and bool(framed)


def _read_headers(reader: BinaryIO) -> list[tuple[str, str]]:
    headers = []
    while True:
        line = reader.readline(65536)
        if line in (b"\r\n", b"\n", b""):
            return headers
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))


def _header(headers: Sequence[tuple[str, str]], name: str) -> str:
    return next((v for k, v in headers if k.lower() == name), "")


def _body(
    reader: BinaryIO, headers: Sequence[tuple[str, str]], *, until_close: bool = False
) -> Iterator[bytes]:
    """The body's bytes (chunked bodies de-chunked), in pieces of at most 64 KiB."""
    if "chunked" in _header(headers, "transfer-encoding").lower():
        while True:
            size = int(reader.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                _read_headers(reader)  # trailers
                return
            yield from _exactly(reader, size)
            reader.readline()
    length = _header(headers, "content-length")
    if length:
        yield from _exactly(reader, int(length))
    elif until_close:
        while piece := reader.read(_PIECE):
            yield piece


def _exactly(reader: BinaryIO, size: int) -> Iterator[bytes]:
    while size > 0:
        piece = reader.read(min(size, _PIECE))
        if not piece:
            raise ConnectionError("the peer closed the connection mid-body")
        size -= len(piece)
        yield piece


def _reset(client: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed server or a middlebox does."""
    with suppress(OSError):
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
