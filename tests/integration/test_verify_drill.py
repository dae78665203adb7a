"""The restore drill against the real stack: it passes on a good backup with honest numbers,
and fails, naming the cause, on each thing that would hurt on the worst day.

One archiving cluster and one backup serve every case: each fault is put in
place, drilled, and taken back out, so the cases stay independent and the
file runs a single cluster.
"""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from localstack import chown_to_postgres

from tests.integration import janua
from tests.integration.test_pitr import s3_spec


def write_policy(path: Path, min_items: int) -> Path:
    path.write_text(
        "[verify]\n"
        "timeout_s = 120\n"
        "[[verify.checks]]\n"
        'name = "items"\n'
        'database = "postgres"\n'
        'query = "SELECT count(*) FROM items"\n'
        f"min = {min_items}\n"
    )
    return path


def drill(exe: Path, config: Path, scratch: Path, *args: str) -> Any:
    done = janua.run(exe, config, "verify", "--scratch-dir", str(scratch), "--json", *args)
    return done, json.loads(done.stdout) if done.stdout.strip().startswith("{") else None


@pytest.mark.pg_matrix
def test_drill_passes_then_fails_on_each_fault(
    s3_server: Any, s3_bucket: str, s3_client: Any, pg_factory: Any, janua_exe: Path
) -> None:
    home = pg_factory.empty_dir()
    home.chmod(0o755)
    config = home / "janua.toml"
    spec = s3_spec(s3_server, s3_bucket)
    janua.write_config(config, spec)
    # Data checksums on, so the drill runs pg_checksums (initdb's default from 18 on).
    cluster = janua.archiving_cluster(
        pg_factory, janua_exe, config, initdb_args=["--data-checksums"]
    )
    janua.write_config(
        config, spec, pgdata=cluster.pgdata, dsn=cluster.dsn, bindir=pg_factory.bindir
    )
    # postgresql.conf includes a file from outside PGDATA, as packaged setups do.
    site = home / "site.conf"
    site.write_text("work_mem = '8MB'\n")
    chown_to_postgres(site)
    with (cluster.pgdata / "postgresql.conf").open("a") as conf:
        conf.write(f"include '{site}'\n")
    cluster.sql("SELECT pg_reload_conf()")
    cluster.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
    janua.insert_rows(cluster, 1, 5)
    backup_id = janua.run_json(janua_exe, config, "backup")["backup_id"]
    committed = janua.insert_rows(cluster, 6, 10)
    segments = [janua.switch_and_wait_archived(cluster)]
    for first in (16, 21):
        janua.insert_rows(cluster, first, 5, pause_s=0)
        segments.append(janua.switch_and_wait_archived(cluster))
    last_commit = cluster.sql("SELECT max(pg_xact_commit_timestamp(xmin)) FROM items")[0][0]
    scratch = pg_factory.empty_dir()
    good = write_policy(home / "good.toml", 25)

    # A good backup: passes, with the recovery point at the last commit.
    done, report = drill(janua_exe, config, scratch, "--policy", str(good), "--amcheck")
    janua.ok(done)
    assert report["passed"] and report["backup_id"] == backup_id
    names = {c["name"]: c for c in report["checks"]}
    assert names["query items"]["ok"] and "returned 25" in names["query items"]["message"]
    assert names["amcheck"]["ok"] and names["databases"]["ok"]
    assert names["data checksums"]["ok"] and "every page" in names["data checksums"]["message"]
    assert not any(c["skipped"] for c in report["checks"])
    assert names["replayed to the end of the archive"]["ok"]
    assert report["recovered_to_time"] == last_commit.astimezone(UTC).isoformat()
    assert 0 <= report["rpo_bytes"] < 16 * 1024 * 1024
    # The newest archived WAL's time is its last commit, the one replayed: nothing lost.
    assert report["newest_wal_time"] == last_commit.astimezone(UTC).isoformat()
    assert report["rpo_s"] == 0
    assert report["restore_s"] > 0 and report["replay_s"] > 0
    assert report["total_s"] >= report["restore_s"] + report["replay_s"]
    assert list(scratch.iterdir()) == []  # the scratch directory is gone
    listing = janua.run_json(janua_exe, config, "list")
    assert listing["backups"][0]["last_drill"]["passed"] is True

    # Server programs without pg_checksums and pg_amcheck (packaged apart on some
    # systems): the drill passes, and says which checks it skipped and why.
    bare = home / "bare-bin"
    bare.mkdir()
    for program in pg_factory.bindir.iterdir():
        if program.name not in ("pg_checksums", "pg_amcheck"):
            (bare / program.name).symlink_to(program)
    done, report = drill(
        janua_exe, config, scratch, "--policy", str(good), "--amcheck", "--pg-bindir", str(bare)
    )
    janua.ok(done)
    names = {c["name"]: c for c in report["checks"]}
    assert report["passed"] and names["data checksums"]["skipped"]
    assert names["data checksums"]["message"].startswith(f"pg_checksums is not in {bare}")
    assert names["amcheck"]["skipped"] and "pg_amcheck is not in" in names["amcheck"]["message"]
    text = janua.ok(
        janua.run(
            janua_exe,
            config,
            "verify",
            "--scratch-dir",
            str(scratch),
            "--policy",
            str(good),
            "--pg-bindir",
            str(bare),
        )
    ).stdout
    assert f"  skip data checksums: pg_checksums is not in {bare}" in text

    # A target time between two commits: the rows up to it, and the query sees 10.
    target = committed[4][1] + (committed[5][1] - committed[4][1]) / 2
    at_ten = write_policy(home / "ten.toml", 10)
    when = target.astimezone(UTC).isoformat().replace("+00:00", "Z")
    done, report = drill(janua_exe, config, scratch, "--policy", str(at_ten), "--target-time", when)
    janua.ok(done)
    assert report["recovered_to_time"] == committed[4][1].astimezone(UTC).isoformat()

    # A check query that finds too few rows.
    strict = write_policy(home / "strict.toml", 1000)
    done, report = drill(janua_exe, config, scratch, "--policy", str(strict))
    janua.one_line_error(done, 40, "SELECT count(*) FROM items", "expected at least 1000")
    assert report["passed"] is False
    assert janua.run_json(janua_exe, config, "list")["backups"][0]["last_drill"]["passed"] is False

    # A scratch server that cannot start: the included file is gone on this host.
    site.rename(home / "site.conf.away")
    done, report = drill(janua_exe, config, scratch, "--policy", str(good))
    janua.one_line_error(done, 40, "scratch server stopped")
    assert "site.conf" in report["server_log_tail"]
    (home / "site.conf.away").rename(site)
    assert list(scratch.iterdir()) == []

    # A WAL segment missing in the middle of the needed range.
    middle = f"cluster-a/wal/{segments[1]}"
    saved = s3_client.get_object(Bucket=s3_bucket, Key=middle)["Body"].read()
    s3_client.delete_object(Bucket=s3_bucket, Key=middle)
    done, report = drill(janua_exe, config, scratch, "--policy", str(good))
    janua.one_line_error(done, 40, segments[1], "missing")
    assert not {c["name"]: c for c in report["checks"]}["WAL continuity"]["ok"]
    s3_client.put_object(Bucket=s3_bucket, Key=middle, Body=saved)

    # A damaged backup object.
    data_key = f"cluster-a/backups/{backup_id}/data/000001"
    original = s3_client.get_object(Bucket=s3_bucket, Key=data_key)["Body"].read()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x40
    s3_client.put_object(Bucket=s3_bucket, Key=data_key, Body=bytes(damaged))
    done, report = drill(janua_exe, config, scratch, "--policy", str(good))
    janua.one_line_error(done, 40, backup_id)
    assert report["passed"] is False and report["error"]
    s3_client.put_object(Bucket=s3_bucket, Key=data_key, Body=original)
    assert list(scratch.iterdir()) == []
