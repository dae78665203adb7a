"""``verify --repo`` against a real bucket and a real archiving cluster: it passes on a
clean repository, and names a damaged backup object and a WAL gap, with exit 40."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from janua_backup.pg.wal import Lsn, WalSegment
from tests.integration import janua
from tests.integration.test_pitr import s3_spec

PREFIX = "cluster-a/"


@pytest.mark.pg_matrix
def test_verify_repo_passes_then_names_a_damaged_object_and_a_wal_gap(
    s3_server: Any, s3_bucket: str, s3_client: Any, pg_factory: Any, janua_exe: Path
) -> None:
    spec = s3_spec(s3_server, s3_bucket)
    config = pg_factory.empty_dir() / "janua.toml"
    janua.write_config(config, spec)
    cluster = janua.archiving_cluster(pg_factory, janua_exe, config)
    janua.write_config(config, spec, pgdata=cluster.pgdata, dsn=cluster.dsn)
    cluster.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
    janua.insert_rows(cluster, 1, 3, pause_s=0)
    backup = janua.run_json(janua_exe, config, "backup")
    after_backup = []
    for round_ in range(4):  # several segments after the backup, so one can go missing
        janua.insert_rows(cluster, 100 + 10 * round_, 3, pause_s=0)
        after_backup.append(janua.switch_and_wait_archived(cluster))
    verify = ("verify", "--repository-only", "--jobs", "2")

    clean = janua.run_json(janua_exe, config, *verify)
    data_keys = keys(s3_client, s3_bucket, f"{PREFIX}backups/{backup['backup_id']}/data/")
    assert clean["ok"] and clean["problems"] == []
    assert clean["summary"].startswith("repository check passed: 1 backup, ")
    assert clean["objects_checked"] == len(data_keys) > 0
    assert clean["wal_checked"] >= 5 and clean["bytes_read"] > 0
    (b,) = clean["backups"]
    assert b["backup_id"] == backup["backup_id"] and b["restorable"]
    assert b["last_wal"] >= after_backup[-1] and b["missing_wal"] is None

    # One byte of a backup object flipped in the bucket.
    key = data_keys[0]
    original = s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x01
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=bytes(damaged))
    name = key.split(f"{backup['backup_id']}/")[1]
    done = janua.run(janua_exe, config, *verify)
    janua.one_line_error(done, 40, f"backup {backup['backup_id']} object {name} is damaged")
    assert "NOT RESTORABLE: 1 damaged object" in done.stdout
    assert "repository check FAILED, 1 problem:" in done.stdout
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=original)

    # A WAL segment in the middle of what the backup needs goes missing.
    stop = WalSegment.before_lsn(1, Lsn.parse(backup["stop_lsn"])).name
    later = [n for n in wal_names(s3_client, s3_bucket) if n > stop]
    assert len(later) >= 4, later
    gone = later[1]
    s3_client.delete_object(Bucket=s3_bucket, Key=f"{PREFIX}wal/{gone}")
    done = janua.run(janua_exe, config, *verify, "--json")
    report = json.loads(done.stdout)
    (b,) = report["backups"]
    assert b["restorable"] and b["missing_wal"] == gone and b["last_wal"] == later[0]
    assert [p["kind"] for p in report["problems"]] == ["wal_gap"]
    until = datetime.fromisoformat(b["restorable_to_time"]).astimezone(UTC)
    janua.one_line_error(
        done,
        40,
        f"backup {backup['backup_id']} can be restored only up to "
        f"{until:%Y-%m-%d %H:%M:%S}Z: WAL {gone} is missing",
    )


def keys(client: Any, bucket: str, prefix: str) -> list[str]:
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def wal_names(client: Any, bucket: str) -> list[str]:
    found = keys(client, bucket, f"{PREFIX}wal/")
    return [k.rsplit("/", 1)[1] for k in found if len(k.rsplit("/", 1)[1]) == 24]
