"""What the S3 driver decides without a server: settings, import cost, part splitting, retries.

The contract itself runs against a real server in ``tests/integration/storage``;
nothing here fakes an S3 API, only the outcome of one request.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from janua_backup.errors import AccessDenied, ConfigError, StorageError, StorageUnreachable
from janua_backup.storage.s3 import S3Location, S3Storage, _parts

REPO = Path(__file__).resolve().parents[3]
MIB = 1024 * 1024

SETTINGS = S3Location(
    bucket="bucket",
    prefix="some/prefix",
    endpoint_url="http://127.0.0.1:9",  # never contacted: requests are stubbed below
    region="us-east-1",
    access_key_id="AKIDEXAMPLE",
    secret_access_key="very-secret",
    session_token="token-secret",
    retry_base_delay_s=0.01,
)


def test_importing_the_driver_does_not_import_boto3() -> None:
    # wal-push runs once per WAL segment; boto3 costs a noticeable share of that.
    code = (
        "import sys, janua_backup.storage.s3, janua_backup.storage.s3_wire\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore'))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_settings_repr_hides_secrets() -> None:
    text = repr(SETTINGS)
    assert "very-secret" not in text and "token-secret" not in text
    assert "AKIDEXAMPLE" in text


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"bucket": ""}, "bucket name is empty"),
        ({"prefix": "/lead"}, "must not start or end"),
        ({"prefix": "trail/"}, "must not start or end"),
        ({"prefix": "a//b"}, "empty part"),
        ({"part_size_bytes": 5 * MIB - 1}, "between 5 MiB and 5 GiB"),
        ({"max_attempts": 0}, "at least 1"),
        ({"read_timeout_s": 0.0}, "must be positive"),
        ({"retry_deadline_s": -1.0}, "must not be negative"),
        ({"secret_access_key": None}, "set together"),
    ],
)
def test_settings_are_validated(change: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        replace(SETTINGS, **change)


@pytest.mark.parametrize(
    "change", [{"endpoint_url": "localhost:9000"}, {"region": "not a region!"}]
)
def test_unusable_endpoint_or_region_is_a_config_error(change: dict[str, Any]) -> None:
    storage = S3Storage(replace(SETTINGS, **change))
    with pytest.raises(ConfigError, match="cannot use the S3 settings"):
        storage.head("k")


def test_describe() -> None:
    assert S3Storage(SETTINGS).describe() == "s3://bucket/some/prefix"
    assert S3Storage(replace(SETTINGS, prefix="")).describe() == "s3://bucket"


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=40), max_size=30),
    part=st.integers(min_value=1, max_value=32),
)
def test_parts_regroup_the_stream(sizes: list[int], part: int) -> None:
    chunks = [bytes([n % 256]) * size for n, size in enumerate(sizes)]
    parts = list(_parts(iter(chunks), part))
    assert b"".join(body for body, _ in parts) == b"".join(chunks)
    assert [last for _, last in parts] == [False] * (len(parts) - 1) + [True]
    assert all(len(body) == part for body, _ in parts[:-1])
    final = parts[-1][0]
    assert len(final) <= part
    assert final or len(parts) == 1  # empty only for an empty object


def test_parts_are_pulled_lazily() -> None:
    # The first part is handed out once a byte beyond it exists, and no sooner
    # or later: put() decides single PUT versus multipart on it.
    pulled: list[int] = []

    def source() -> Iterator[bytes]:
        for n in range(10):
            pulled.append(n)
            yield b"x" * 3

    parts = _parts(source(), 6)
    assert next(parts) == (b"x" * 6, False)
    assert pulled == [0, 1, 2]


# -- the retry loop around each request --------------------------------------


def client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


class Flaky:
    """A request that fails with ``errors`` in turn, then returns ``"done"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, client: object) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


@pytest.fixture
def storage() -> Iterator[S3Storage]:
    driver = S3Storage(SETTINGS)
    yield driver
    driver.close()


def test_throttling_and_5xx_are_retried(storage: S3Storage) -> None:
    request = Flaky(client_error("SlowDown", 503), client_error("InternalError", 500))
    assert storage._call("put", "k", request) == "done"
    assert request.calls == 3


def test_connection_errors_are_retried(storage: S3Storage) -> None:
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

    request = Flaky(
        EndpointConnectionError(endpoint_url="http://x"),
        ConnectionClosedError(endpoint_url="http://x"),
    )
    assert storage._call("get", "k", request) == "done"
    assert request.calls == 3


def test_refusals_are_not_retried(storage: S3Storage) -> None:
    request = Flaky(client_error("AccessDenied", 403))
    with pytest.raises(AccessDenied):
        storage._call("put", "k", request)
    assert request.calls == 1


def test_retries_stop_at_the_deadline() -> None:
    from botocore.exceptions import EndpointConnectionError

    storage = S3Storage(replace(SETTINGS, retry_deadline_s=0.3))
    started = time.monotonic()
    with pytest.raises(StorageError, match="SlowDown") as throttled:
        storage._call("put", "k", Flaky(*[client_error("SlowDown", 503)] * 1000))
    assert type(throttled.value) is StorageError
    with pytest.raises(StorageUnreachable, match=r"127\.0\.0\.1:9"):
        storage._call("get", "k", Flaky(*[EndpointConnectionError(endpoint_url="u")] * 1000))
    assert time.monotonic() - started < 2
    storage.close()


def test_a_missing_ca_bundle_is_a_config_error_naming_it(tmp_path: Path) -> None:
    # wal-push and wal-fetch (quick_start) build the standard-library client.
    missing = str(tmp_path / "no-ca.pem")
    settings = replace(
        SETTINGS, endpoint_url="https://127.0.0.1:9", verify_tls=missing, quick_start=True
    )
    with pytest.raises(ConfigError, match=r"no-ca\.pem.*ca_bundle"):
        S3Storage(settings).head("k")
