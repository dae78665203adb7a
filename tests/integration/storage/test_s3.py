"""The storage contract on ``S3Storage`` against a real S3 server, plus S3's own failures.

The server and buckets come from ``tests/conftest.py`` (``s3_server``,
``s3_bucket``, ``s3_client``). Nothing here mocks boto3: error translation is
checked against the answers a real server gives.
"""

from __future__ import annotations

import secrets
import socket
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

from janua_backup.errors import (
    AccessDenied,
    BucketNotFound,
    ObjectNotFound,
    StorageUnreachable,
)
from janua_backup.storage.s3 import S3Location, S3Storage
from tests.unit.storage.contract import (
    BIG_BYTES,
    MIB,
    Boom,
    StorageContract,
    chunked,
    failing,
    pattern,
    read,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tests.conftest import S3Server

PART_BYTES = 5 * MIB  # S3's minimum: objects above it take the multipart path


def location(server: S3Server, bucket: str, prefix: str = "repo/one", **extra: Any) -> S3Location:
    return S3Location(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=server.endpoint_url,
        region=server.region,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
        part_size_bytes=PART_BYTES,
        **extra,
    )


@pytest.fixture(params=["boto3", "wire"])
def open_s3(request: pytest.FixtureRequest) -> Iterator[Callable[[S3Location], S3Storage]]:
    """Makes S3Storage instances and closes them (both clients pool sockets).

    Every test runs twice: with boto3, and with the standard-library client
    that wal-push and wal-fetch use (``quick_start``), so both give the same
    answers to the same server.
    """
    made: list[S3Storage] = []
    quick = request.param == "wire"

    def make(settings: S3Location) -> S3Storage:
        made.append(S3Storage(replace(settings, quick_start=quick)))
        return made[-1]

    yield make
    for storage in made:
        storage.close()


class TestS3Storage(StorageContract):
    @pytest.fixture
    def storage(
        self,
        s3_server: S3Server,
        s3_bucket: str,
        open_s3: Callable[[S3Location], S3Storage],
    ) -> S3Storage:
        return open_s3(location(s3_server, s3_bucket))


def test_keys_live_under_the_prefix(
    s3_server: S3Server,
    s3_bucket: str,
    s3_client: S3Client,
    open_s3: Callable[[S3Location], S3Storage],
) -> None:
    team = open_s3(location(s3_server, s3_bucket, prefix="team"))
    teamx = open_s3(location(s3_server, s3_bucket, prefix="teamx"))
    bare = open_s3(location(s3_server, s3_bucket, prefix=""))
    team.put("wal/1", [b"a"])
    teamx.put("wal/1", [b"b"])
    assert team.describe() == f"s3://{s3_bucket}/team"
    assert bare.describe() == f"s3://{s3_bucket}"
    assert [i.key for i in team.list()] == ["wal/1"]
    assert [i.key for i in teamx.list("wal/")] == ["wal/1"]
    assert [i.key for i in bare.list()] == ["team/wal/1", "teamx/wal/1"]
    raw = s3_client.get_object(Bucket=s3_bucket, Key="team/wal/1")["Body"]
    with raw:
        assert raw.read() == b"a"
    bare.delete(["team/wal/1"])
    assert team.head("wal/1") is None
    assert read(teamx, "wal/1") == b"b"


def test_failed_multipart_upload_is_aborted(
    s3_server: S3Server,
    s3_bucket: str,
    s3_client: S3Client,
    open_s3: Callable[[S3Location], S3Storage],
) -> None:
    storage = open_s3(location(s3_server, s3_bucket))
    with pytest.raises(Boom):
        storage.put("big", failing(pattern(BIG_BYTES), MIB))
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_put_buffers_about_one_part(
    s3_server: S3Server, s3_bucket: str, open_s3: Callable[[S3Location], S3Storage]
) -> None:
    storage = open_s3(location(s3_server, s3_bucket))
    assert storage.head("warm-up") is None  # the client's own allocations come first
    block = pattern(MIB)
    tracemalloc.start()
    try:
        storage.put("big", (block for _ in range(6 * PART_BYTES // MIB)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One part being uploaded, plus the copy made when the next one is cut.
    assert peak < 2.5 * PART_BYTES, peak


def test_list_and_delete_beyond_one_page(
    s3_server: S3Server, s3_bucket: str, open_s3: Callable[[S3Location], S3Storage]
) -> None:
    storage = open_s3(location(s3_server, s3_bucket, max_pool_connections=16))
    wanted = [f"many/{n:05d}" for n in range(1005)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: storage.put(key, [key.encode()]), wanted))
    assert [info.key for info in storage.list("many/")] == wanted
    storage.delete(wanted)  # two DeleteObjects batches: 1000 + 5
    assert list(storage.list()) == []


# -- failures the repository must tell apart --------------------------------


def every_operation(storage: S3Storage) -> list[tuple[str, Callable[[], Any]]]:
    return [
        ("get", lambda: storage.get("wal/x")),
        ("head", lambda: storage.head("wal/x")),
        ("list", lambda: storage.list("wal/")),
        ("put", lambda: storage.put("wal/x", [b"data"])),
        ("put if_absent", lambda: storage.put("wal/x", [b"data"], if_absent=True)),
        ("put multipart", lambda: storage.put("big", chunked(pattern(BIG_BYTES), MIB))),
        ("delete", lambda: storage.delete(["wal/x"])),
    ]


@pytest.mark.parametrize("which", ["secret", "key id"])
def test_refused_credentials_are_access_denied(
    s3_server: S3Server,
    s3_bucket: str,
    open_s3: Callable[[S3Location], S3Storage],
    which: str,
) -> None:
    good = location(s3_server, s3_bucket)
    wrong = (
        replace(good, secret_access_key="not-the-secret")
        if which == "secret"
        else replace(good, access_key_id="nobody" + secrets.token_hex(4))
    )
    storage = open_s3(replace(wrong, retry_deadline_s=1.0))
    for name, call in every_operation(storage):
        with pytest.raises(AccessDenied, match="AWS_ACCESS_KEY_ID") as caught:
            call()
        assert "not-the-secret" not in str(caught.value), name


def test_missing_bucket_is_bucket_not_found_never_object_not_found(
    s3_server: S3Server, s3_client: S3Client, open_s3: Callable[[S3Location], S3Storage]
) -> None:
    bucket = f"janua-missing-{secrets.token_hex(6)}"
    storage = open_s3(location(s3_server, bucket))
    for name, call in every_operation(storage):
        with pytest.raises(BucketNotFound, match=f"{bucket}.*create it or fix repository.url"):
            call()
        assert name  # (for the traceback)
    # SeaweedFS creates a missing bucket on a PUT by an admin identity; the
    # driver checks first, so a typo in repository.url cannot create one.
    assert bucket not in [b["Name"] for b in s3_client.list_buckets().get("Buckets", [])]


def test_object_not_found_needs_an_existing_bucket(
    s3_server: S3Server, s3_bucket: str, open_s3: Callable[[S3Location], S3Storage]
) -> None:
    storage = open_s3(location(s3_server, s3_bucket))
    with pytest.raises(ObjectNotFound, match="does not exist"):
        storage.get("wal/absent")
    assert storage.head("wal/absent") is None


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_endpoint_is_storage_unreachable_quickly(
    s3_server: S3Server, open_s3: Callable[[S3Location], S3Storage]
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    settings = replace(
        location(s3_server, "any-bucket"),
        endpoint_url=endpoint,
        max_attempts=2,
        retry_deadline_s=0.5,
        retry_base_delay_s=0.05,
        connect_timeout_s=1.0,
    )
    storage = open_s3(settings)
    for name, call in every_operation(storage):
        started = time.monotonic()
        with pytest.raises(StorageUnreachable, match=endpoint):
            call()
        assert time.monotonic() - started < 5, name


def test_quick_start_uses_the_wire_client_only_where_it_applies(
    s3_server: S3Server, s3_bucket: str
) -> None:
    from janua_backup.storage.s3_wire import WireClient

    quick = replace(location(s3_server, s3_bucket), quick_start=True)
    cases = [
        (quick, True),
        (replace(quick, quick_start=False), False),
        (replace(quick, path_style=False), False),  # virtual-host addressing: boto3's rules
    ]
    for settings, wire in cases:
        storage = S3Storage(settings)
        try:
            assert storage.head("absent") is None
            assert isinstance(storage._client(), WireClient) is wire, settings
        finally:
            storage.close()
