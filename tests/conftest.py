"""Fixtures shared by every test directory: the S3 server and the integration work directory.

The servers come from scripts/localstack.py, which the demo script and people use
too. A unit test requests none of these fixtures, so it never starts a server.

Environment:
  JANUA_TEST_S3_ENDPOINT (+ _ACCESS_KEY, _SECRET_KEY, _REGION)  use that S3 server
      instead of starting SeaweedFS; tests that stop S3 are then skipped.
  JANUA_TEST_KEEP_DIRS=1  keep the work directory (clusters, logs, S3 data) for a post-mortem.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from localstack import ExternalS3, SeaweedServer  # noqa: E402

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

KEEP_DIRS = os.environ.get("JANUA_TEST_KEEP_DIRS", "") not in ("", "0")
EXTERNAL_S3_SKIP = (
    "JANUA_TEST_S3_ENDPOINT names an external S3 server, which the tests cannot stop or restart"
)


class ExternalS3ForTests(ExternalS3):
    """The server of JANUA_TEST_S3_ENDPOINT: a test that would stop it is skipped."""

    is_running = True

    def start(self) -> None:
        pytest.skip(EXTERNAL_S3_SKIP)

    def stop(self) -> None:
        pytest.skip(EXTERNAL_S3_SKIP)

    def restart(self) -> None:
        pytest.skip(EXTERNAL_S3_SKIP)


S3Server = SeaweedServer | ExternalS3ForTests


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """Base directory for integration tests, under /tmp and 0755 so postgres can reach it.

    Not pytest's tmp_path: that is 0700 root, out of reach of the postgres user.
    """
    base = Path(tempfile.mkdtemp(prefix="janua-it-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    if KEEP_DIRS:
        sys.stderr.write(f"\nJANUA_TEST_KEEP_DIRS: kept {base}\n")
    else:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server(workdir: Path) -> Iterator[S3Server]:
    """One S3 server for the session: SeaweedFS started here, or the external one."""
    external = ExternalS3ForTests.from_env(os.environ)
    if external is not None:
        yield external
        return
    server = SeaweedServer(workdir / "seaweedfs")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def local_s3_server(s3_server: S3Server) -> Iterator[SeaweedServer]:
    """The S3 server when the tests may stop it (skips with an external one); left running."""
    if not isinstance(s3_server, SeaweedServer):
        pytest.skip(EXTERNAL_S3_SKIP)
    yield s3_server
    if not s3_server.is_running:
        s3_server.start()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """A fresh, empty bucket with a random name; deleted afterwards on an external server."""
    if isinstance(s3_server, SeaweedServer) and not s3_server.is_running:
        s3_server.start()  # an earlier test stopped it and failed before starting it again
    name = f"janua-test-{secrets.token_hex(6)}"
    s3_server.create_bucket(name)
    yield name
    if isinstance(s3_server, ExternalS3):
        s3_server.delete_bucket(name)
    elif s3_server.is_running:
        # SeaweedFS gives each bucket volumes of its own and has a fixed number of
        # them: a suite that kept every bucket ran out ("no writable volumes").
        with contextlib.suppress(Exception):  # a failed clean-up must not fail the test
            s3_server.delete_bucket(name)


@pytest.fixture
def s3_client(s3_server: S3Server) -> Iterator[S3Client]:
    """A boto3 client on the session's S3 server with its credentials, closed afterwards."""
    client = s3_server.client()
    yield client
    client.close()
