"""The local test stack itself: S3 with credentials, PostgreSQL as postgres, restarts."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from localstack import (
    ExternalS3,
    PgCluster,
    SeaweedServer,
    StackError,
    archiving_settings,
    free_port,
    running_as_root,
)

from tests.conftest import REPO, S3Server
from tests.integration.conftest import PgFactory

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def test_s3_put_and_get_with_the_credentials(s3_bucket: str, s3_client: S3Client) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="a/b.txt", Body=b"hello")

    assert s3_client.get_object(Bucket=s3_bucket, Key="a/b.txt")["Body"].read() == b"hello"


@pytest.mark.parametrize("wrong", ["secret", "key"])
def test_s3_refuses_wrong_credentials(s3_server: S3Server, s3_bucket: str, wrong: str) -> None:
    key = "nobody" if wrong == "key" else s3_server.access_key_id
    secret = "wrong-secret" if wrong == "secret" else s3_server.secret_access_key
    client = ExternalS3(s3_server.endpoint_url, key, secret, s3_server.region).client()

    with contextlib.closing(client), pytest.raises(ClientError) as info:
        client.put_object(Bucket=s3_bucket, Key="x", Body=b"x")

    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_s3_conditional_put_refuses_to_overwrite(s3_bucket: str, s3_client: S3Client) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="wal", Body=b"1", IfNoneMatch="*")

    with pytest.raises(ClientError) as info:
        s3_client.put_object(Bucket=s3_bucket, Key="wal", Body=b"2", IfNoneMatch="*")

    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_s3_restarts_on_the_same_port_with_its_objects(
    local_s3_server: SeaweedServer, s3_bucket: str, s3_client: S3Client
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="kept", Body=b"still here")
    endpoint = local_s3_server.endpoint_url

    local_s3_server.stop()
    with pytest.raises(EndpointConnectionError):
        s3_client.head_bucket(Bucket=s3_bucket)
    local_s3_server.start()

    assert local_s3_server.endpoint_url == endpoint
    # The S3 port answers before the volume server has re-registered its volumes: on a
    # loaded machine a GET can meet "InternalError" for a few seconds. Wait for it, bounded.
    deadline = time.monotonic() + 60
    while True:
        try:
            body = s3_client.get_object(Bucket=s3_bucket, Key="kept")["Body"].read()
            break
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "InternalError" or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert body == b"still here"


def _process_uid(pgdata: Path) -> int:
    pid = (pgdata / "postmaster.pid").read_text().split()[0]
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def test_pg_cluster_round_trip(pg_factory: PgFactory) -> None:
    cluster = pg_factory(archiving_settings("/bin/true", archive_timeout_s=60))

    assert cluster.is_running
    assert cluster.sql("show wal_level") == [("replica",)]
    assert cluster.sql("show archive_mode") == [("on",)]
    cluster.sql("create table t (x int)")
    cluster.sql("insert into t values (%s), (%s)", (1, 2))
    if running_as_root():
        assert _process_uid(cluster.pgdata) != 0
    cluster.stop()
    assert not cluster.is_running
    cluster.start()

    assert cluster.sql("select x from t order by x") == [(1,), (2,)]


def test_existing_data_dir_starts_on_the_port_it_is_given(pg_factory: PgFactory) -> None:
    source = pg_factory()
    source.stop()

    moved = pg_factory.adopt(source.pgdata, start=True)

    assert moved.port != source.port
    assert moved.sql("show port") == [(str(moved.port),)]


def test_failed_start_shows_the_server_log(pg_factory: PgFactory) -> None:
    cluster = pg_factory({"shared_buffers": "lots"}, start=False)

    with pytest.raises(StackError, match="invalid value for parameter"):
        cluster.start()


def test_server_object_refuses_an_unknown_bindir(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="initdb missing"):
        PgCluster(tmp_path, port=free_port(), socket_dir=tmp_path, bindir=tmp_path)


def test_cli_up_prints_exports_and_stops_on_ctrl_c(workdir: Path) -> None:
    if os.environ.get("JANUA_TEST_S3_ENDPOINT"):
        pytest.skip("JANUA_TEST_S3_ENDPOINT is set: no local S3 server")
    argv = [sys.executable, str(REPO / "scripts/localstack.py"), "up"]
    argv += ["--dir", str(workdir / "cli-s3"), "--bucket", "made-by-cli"]
    exports: dict[str, str] = {}
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("#"):  # the last line it prints once S3 is up
                break
            name, value = line.removeprefix("export ").split("=", 1)
            exports[name] = shlex.split(value)[0]
        s3 = ExternalS3(
            exports["JANUA_TEST_S3_ENDPOINT"],
            exports["JANUA_TEST_S3_ACCESS_KEY"],
            exports["JANUA_TEST_S3_SECRET_KEY"],
        )
        with contextlib.closing(s3.client()) as client:
            client.head_bucket(Bucket="made-by-cli")

        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0

    with pytest.raises(OSError):  # nothing listens any more
        urllib.request.urlopen(s3.endpoint_url, timeout=2)
