"""``s3.verify_tls = false`` is said once per process, on both S3 clients.

A loopback https server with a certificate no client trusts answers every request;
nothing else about S3 is faked: the test is about what the clients say, not the API.
"""

from __future__ import annotations

import http.server
import logging
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from benchlib.tls import write_tls_files

from janua_backup.storage import s3
from janua_backup.storage.s3 import S3Location, S3Storage


class _Everything(http.server.BaseHTTPRequestHandler):
    """200 with an empty body and the headers a HEAD on an object carries."""

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.send_header("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def untrusted_https(tmp_path: Path) -> Iterator[str]:
    files = write_tls_files(tmp_path / "tls")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Everything)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert_file, files.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("quick_start", [True, False], ids=["s3_wire", "boto3"])
def test_unverified_tls_is_one_warning_line_per_process(
    untrusted_https: str,
    quick_start: bool,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(s3, "_unverified_warned", False)
    location = S3Location(
        bucket="bucket",
        prefix="p",
        endpoint_url=untrusted_https,
        region="us-east-1",
        access_key_id="AKIDEXAMPLE",
        secret_access_key="very-secret",
        verify_tls=False,
        quick_start=quick_start,
    )
    with caplog.at_level(logging.WARNING):
        # Two clients, several requests each (HeadBucket, then HeadObject): pytest turns
        # a urllib3 InsecureRequestWarning per request into an error.
        for _ in range(2):
            storage = S3Storage(location)
            try:
                assert storage.head("a") is not None
                assert storage.head("b") is not None
            finally:
                storage.close()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert "s3.verify_tls is false" in lines[0] and untrusted_https in lines[0]
