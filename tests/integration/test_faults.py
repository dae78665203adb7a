"""Faults and bad input, against the real stack: each a clear one-line error, a
non-zero exit, nothing written; and restore_command never says "not found"
when storage is the problem."""

from __future__ import annotations

import secrets
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from localstack import chown_to_postgres

from tests.integration import janua
from tests.integration.janua import RepoSpec
from tests.integration.test_pitr import make_key, s3_spec

PREFIX = "cluster-a/"


class Stack:
    """One archiving cluster with one backup in an S3 repository."""

    def __init__(self, factory: Any, exe: Path, spec: RepoSpec) -> None:
        self.factory, self.exe, self.spec = factory, exe, spec
        self.home = factory.empty_dir()
        self.config = self.home / "janua.toml"
        janua.write_config(self.config, spec, fetch_deadline_s=2, s3_deadline_s=1)
        self.cluster = janua.archiving_cluster(factory, exe, self.config)
        janua.write_config(
            self.config,
            spec,
            pgdata=self.cluster.pgdata,
            dsn=self.cluster.dsn,
            fetch_deadline_s=2,
            s3_deadline_s=1,
        )
        self.cluster.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
        janua.insert_rows(self.cluster, 1, 3, pause_s=0)
        self.backup = janua.run_json(exe, self.config, "backup")
        self.last_wal = janua.switch_and_wait_archived(self.cluster)

    def variant(self, name: str, **changes: Any) -> Path:
        path = self.home / f"{name}.toml"
        janua.write_config(path, replace(self.spec, **changes), fetch_deadline_s=2, s3_deadline_s=1)
        return path

    def run(self, *args: str, config: Path | None = None, cwd: Path | None = None) -> Any:
        return janua.run(self.exe, config or self.config, *args, cwd=cwd)


@pytest.fixture
def stack(s3_server: Any, s3_bucket: str, pg_factory: Any, janua_exe: Path) -> Stack:
    return Stack(pg_factory, janua_exe, s3_spec(s3_server, s3_bucket))


def flip_byte(client: Any, bucket: str, key: str, offset: int) -> None:
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[offset % len(body)] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))


def test_wal_fetch_exits_1_only_for_a_file_the_archive_lacks(
    stack: Stack, pg_factory: Any, local_s3_server: Any
) -> None:
    spool = pg_factory.empty_dir()
    dest = spool / "RECOVERYXLOG"
    done = stack.run("wal-fetch", stack.last_wal, str(dest), cwd=spool)
    assert done.returncode == 0 and dest.stat().st_size == 16 * 1024 * 1024
    assert stack.run("wal-fetch", "00000099.history", str(spool / "x"), cwd=spool).returncode == 1

    local_s3_server.stop()
    try:
        down = stack.run("wal-fetch", stack.last_wal, str(spool / "y"), cwd=spool)
        janua.one_line_error(down, 128, stack.last_wal)
        missing = stack.run("wal-fetch", "00000099.history", str(spool / "z"), cwd=spool)
        assert missing.returncode == 128, "an unreachable archive must never read as 'not found'"
        (spool / "standby.signal").touch()
        standby = stack.run("wal-fetch", stack.last_wal, str(spool / "y"), cwd=spool)
        assert standby.returncode == 1  # a standby just asks again later
        assert not (spool / "y").exists()
    finally:
        local_s3_server.start()


def test_archiving_survives_an_s3_outage_without_a_gap(stack: Stack, local_s3_server: Any) -> None:
    cluster = stack.cluster
    (failed_before,) = cluster.sql("SELECT failed_count FROM pg_stat_archiver")[0]
    local_s3_server.stop()
    try:
        janua.insert_rows(cluster, 100, 5, pause_s=0)
        (name,) = cluster.sql("SELECT pg_walfile_name(pg_switch_wal())")[0]
        for _ in range(100):
            (failed,) = cluster.sql("SELECT failed_count FROM pg_stat_archiver")[0]
            if failed > failed_before:
                break
            __import__("time").sleep(0.2)
        assert failed > failed_before
        assert (cluster.pgdata / "pg_wal" / "archive_status" / f"{name}.ready").exists()
        assert (cluster.pgdata / "pg_wal" / name).exists()  # PostgreSQL keeps it
    finally:
        local_s3_server.start()
    janua.wait_archived(cluster, name, timeout_s=120)
    listing = janua.run_json(stack.exe, stack.config, "list")
    window = listing["backups"][0]["window"]
    assert window["restorable"] and window["missing_wal"] is None
    assert window["last_wal"] >= name


def test_a_flipped_byte_is_detected_in_wal_and_in_backup_objects(
    stack: Stack, s3_client: Any, s3_bucket: str, pg_factory: Any
) -> None:
    flip_byte(s3_client, s3_bucket, f"{PREFIX}wal/{stack.last_wal}", 5000)
    spool = pg_factory.empty_dir()
    bad = stack.run("wal-fetch", stack.last_wal, str(spool / "RECOVERYXLOG"), cwd=spool)
    janua.one_line_error(bad, 128, stack.last_wal, "object")
    assert janua.tree_snapshot(spool) == []

    listing = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=f"{PREFIX}backups/")
    data_key = next(o["Key"] for o in listing["Contents"] if "/data/" in o["Key"])
    flip_byte(s3_client, s3_bucket, data_key, 100_000)
    target = pg_factory.empty_dir() / "restore"
    done = stack.run("restore", "--pgdata", str(target), "--target", "immediate")
    janua.one_line_error(done, 20)
    assert janua.tree_snapshot(target) == ["<absent>"]


@pytest.mark.parametrize("case", ["credentials", "bucket", "key"])
def test_wrong_credentials_bucket_or_key_are_one_line_errors(
    stack: Stack, case: str, pg_factory: Any
) -> None:
    if case == "credentials":
        s3 = dict(stack.spec.s3, secret_access_key="not-the-secret")
        config, code, needle = stack.variant("creds", s3=s3), 12, "credentials"
    elif case == "bucket":
        config = stack.variant("bucket", url="s3://no-such-bucket-here/cluster-a")
        code, needle = 13, "no-such-bucket-here"
    else:
        # An encrypted repository (another prefix) read with another key.
        url = stack.spec.url.replace("cluster-a", "cluster-b")
        with_a = stack.variant("key-a", url=url, key_file=make_key(pg_factory.empty_dir()))
        wal = sorted((stack.cluster.pgdata / "pg_wal").glob("0000000100000000000000*"))[-1]
        janua.ok(stack.run("wal-push", str(wal), config=with_a, cwd=stack.cluster.pgdata))
        config = stack.variant("key-b", url=url, key_file=make_key(pg_factory.empty_dir()))
        code, needle = 21, "wrong encryption key"
    target = pg_factory.empty_dir() / "restore"
    for args in (["list"], ["restore", "--pgdata", str(target)]):
        janua.one_line_error(stack.run(*args, config=config), code, needle)
    assert janua.tree_snapshot(target) == ["<absent>"]


def test_bad_targets_and_a_non_empty_directory_are_refused_untouched(
    stack: Stack, pg_factory: Any
) -> None:
    target = pg_factory.empty_dir() / "restore"
    cases = [
        (["--target-time", "yesterday at noon"], 4, "target time"),
        (["--target-time", "2026-11-25 12:00:00"], 4, "time zone"),
        (["--target-time", "2001-01-01T00:00:00Z"], 5, "recoverable window"),
        (["--target-time", "2999-01-01T00:00:00+02:00"], 5, "recoverable window"),
        (["--target-lsn", "not/an/lsn"], 4, "lsn"),
        (["--target-lsn", "FFFF/0"], 5, "recoverable window"),
        (["--target-time", "2026-11-25T12:00:00Z", "--target-xid", "5"], 4, "one recovery target"),
    ]
    for args, code, needle in cases:
        done = stack.run("restore", "--pgdata", str(target), *args)
        janua.one_line_error(done, code, needle)
        assert janua.tree_snapshot(target) == ["<absent>"], args

    # A directory that cannot be created: one sentence, not a traceback.
    done = stack.run("restore", "--pgdata", "/proc/janua-cannot-create-this")
    janua.one_line_error(done, 32, "cannot create")

    occupied = pg_factory.empty_dir()
    (occupied / "PG_VERSION").write_text("15\n")
    before = janua.tree_snapshot(occupied)
    janua.one_line_error(stack.run("restore", "--pgdata", str(occupied)), 4, "not empty")
    assert janua.tree_snapshot(occupied) == before


def test_another_cluster_and_a_different_wal_file_are_refused(
    stack: Stack, pg_factory: Any, janua_exe: Path
) -> None:
    other = pg_factory({"wal_level": "replica"})
    wal = sorted((other.pgdata / "pg_wal").glob("0000000100000000000000*"))[0]
    done = janua.run(janua_exe, stack.config, "wal-push", str(wal), cwd=other.pgdata)
    janua.one_line_error(done, 23, "system identifier")

    # Same cluster, an archived name, different bytes: never overwritten.
    forged = stack.home / stack.last_wal
    original = stack.home / "original"
    janua.ok(stack.run("wal-fetch", stack.last_wal, str(original), cwd=stack.home))
    data = bytearray(original.read_bytes())
    data[-1] ^= 0xFF
    forged.write_bytes(bytes(data))
    chown_to_postgres(forged)
    janua.one_line_error(
        stack.run("wal-push", str(forged), cwd=stack.cluster.pgdata), 22, "different content"
    )
    again = stack.home / "again"
    janua.ok(stack.run("wal-fetch", stack.last_wal, str(again), cwd=stack.home))
    assert again.read_bytes() == original.read_bytes()
    # And pushing the very same bytes again is success (archive_command retries).
    same = stack.home / "same" / stack.last_wal
    same.parent.mkdir()
    same.write_bytes(original.read_bytes())
    janua.ok(stack.run("wal-push", str(same), cwd=stack.cluster.pgdata))


def test_random_token_is_not_a_wal_name(stack: Stack) -> None:
    done = stack.run("wal-push", f"/tmp/{secrets.token_hex(4)}")
    janua.one_line_error(done, 4, "not a WAL file name")
