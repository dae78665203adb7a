"""The repository lock between two OS processes, on a real S3 server and on a directory.

A child python process takes the lock and keeps renewing it; the parent is
refused. The child is then killed with SIGKILL, so it never releases. The
child poses as another host (its records name another host name): the parent
cannot see that process, so it stays refused until the record's expiry passes,
then takes over. A killed backup on this very host is taken over at once (the
last test).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from janua_backup import locks
from janua_backup.errors import LockHeld
from janua_backup.storage.base import Storage
from janua_backup.storage.posix import PosixStorage
from janua_backup.storage.s3 import S3Location, S3Storage
from tests.integration import janua
from tests.integration.test_pitr import s3_spec

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from tests.conftest import S3Server

NAME = "cluster"
TTL_S = 3.0
RENEW_S = 0.5

CHILD = """
import json, socket, sys, time
from pathlib import Path
from janua_backup import locks

spec = json.loads(sys.argv[1])
socket.gethostname = lambda: spec["host"]  # a holder on another host
if spec["kind"] == "s3":
    from janua_backup.storage.s3 import S3Location, S3Storage
    storage = S3Storage(S3Location(**spec["location"]))
else:
    from janua_backup.storage.posix import PosixStorage
    storage = PosixStorage(Path(spec["root"]))
handle = locks.acquire(
    storage, spec["name"], purpose="backup", ttl_s=spec["ttl_s"], renew_interval_s=spec["renew_s"]
)
print(handle.seq, flush=True)
while True:  # a long backup, checking its lock between files
    time.sleep(0.2)
    handle.check()
"""


@dataclass(frozen=True, slots=True)
class Repo:
    storage: Storage
    spec: dict[str, object]  # how the child builds the same storage


@pytest.fixture(params=["s3", "posix"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    base = {"name": NAME, "ttl_s": TTL_S, "renew_s": RENEW_S, "host": "another-host"}
    if request.param == "posix":
        yield Repo(PosixStorage(tmp_path), {**base, "kind": "posix", "root": str(tmp_path)})
        return
    server: S3Server = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    where = S3Location(
        bucket=bucket,
        prefix="repo",
        endpoint_url=server.endpoint_url,
        region=server.region,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
    )
    storage = S3Storage(where)
    yield Repo(storage, {**base, "kind": "s3", "location": asdict(where)})
    storage.close()


@pytest.fixture
def child(repo: Repo) -> Iterator[subprocess.Popen[str]]:
    """The holding process, started and seen to hold the lock; killed at the end regardless."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(repo.spec)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip():
            proc.wait(timeout=30)
            errors = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"the child did not take the lock:\n{errors}")
        assert line.strip() == "1"  # a fresh repository: the child holds generation 1
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_killed_holder_blocks_until_its_expiry_then_is_taken_over(
    repo: Repo, child: subprocess.Popen[str]
) -> None:
    with pytest.raises(LockHeld) as refused:
        locks.acquire(repo.storage, NAME, purpose="expire", ttl_s=TTL_S)
    assert refused.value.exit_code == 42
    assert "another backup of this cluster is running on" in str(refused.value)
    assert f"(pid {child.pid}, since " in str(refused.value)

    child.send_signal(signal.SIGKILL)  # no release: the record stays until it expires
    child.wait(timeout=30)
    record = locks.holder(repo.storage, NAME)
    assert record is not None and record.pid == child.pid and not record.released
    child_seq = 1

    refusals = 0
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "the dead holder's lock was never taken over"
        before = datetime.now(UTC)
        try:
            handle = locks.acquire(repo.storage, NAME, purpose="expire", ttl_s=TTL_S)
        except LockHeld:
            refusals += 1
            latest = locks.holder(repo.storage, NAME)  # (a write in flight at the kill may land)
            assert latest is not None and before < latest.expires, "refused after the expiry"
            time.sleep(0.2)
            continue
        break
    assert datetime.now(UTC) >= record.expires, "taken over before the expiry"
    assert refusals >= 1  # the record still had at least 2.5 s to live right after the kill
    assert handle.seq == child_seq + 1
    assert locks.holder(repo.storage, NAME) == handle.record
    assert handle.record.pid == os.getpid()
    handle.check()
    handle.release()
    final = locks.holder(repo.storage, NAME)
    assert final is not None and final.released
    with locks.hold(repo.storage, NAME, purpose="backup", ttl_s=TTL_S) as again:
        assert again.seq == child_seq + 2


def test_a_killed_backup_does_not_block_the_next_one(
    s3_server: S3Server, s3_bucket: str, s3_client: S3Client, pg_factory: Any, janua_exe: Path
) -> None:
    """SIGKILL a backup once its lock record exists; the next backup, on the same host,
    takes the lock over at once (not after the 5-minute lease) and is the only one listed."""
    spec = s3_spec(s3_server, s3_bucket)
    config = pg_factory.empty_dir() / "janua.toml"
    janua.write_config(config, spec)
    cluster = janua.archiving_cluster(pg_factory, janua_exe, config)
    janua.write_config(config, spec, pgdata=cluster.pgdata, dsn=cluster.dsn)
    # Enough data that the backup is still copying when it is killed.
    cluster.sql("CREATE TABLE filler AS SELECT g, md5(random()::text) || md5(g::text) AS t"
                " FROM generate_series(1, 400000) AS g")  # fmt: skip
    locks_prefix = "cluster-a/locks/"

    def lock_keys() -> list[str]:
        listing = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=locks_prefix)
        return [o["Key"] for o in listing.get("Contents", [])]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("JANUA_BACKUP_", "AWS_"))}
    first = subprocess.Popen(
        [str(janua_exe), "--config", str(config), "backup"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd="/", env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not lock_keys():
            assert first.poll() is None, f"the backup ended before it was killed: {first.stderr}"
            assert time.monotonic() < deadline, "the backup never took its lock"
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
    finally:
        if first.poll() is None:
            first.kill()
        first.wait(timeout=30)  # reaped: its pid is gone, not a zombie
        if first.stderr is not None:
            first.stderr.close()
    assert first.returncode == -signal.SIGKILL
    listing = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="cluster-a/backups/")
    keys = [o["Key"] for o in listing.get("Contents", [])]
    assert not any(k.endswith("/manifest.json") for k in keys), "killed after its commit"
    (record_key,) = lock_keys()
    record = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=record_key)["Body"].read())
    assert record["pid"] == first.pid and not record["released"]

    second = janua.ok(janua.run(janua_exe, config, "backup", "--json"))
    taken_over = f"took over the lock of backup pid {first.pid} on this host: that process is gone"
    assert taken_over in second.stderr
    backup_id = json.loads(second.stdout)["backup_id"]
    listed = janua.run_json(janua_exe, config, "list")
    assert [b["backup_id"] for b in listed["backups"]] == [backup_id]
