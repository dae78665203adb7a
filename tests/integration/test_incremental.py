"""Incremental backups end to end: a full backup and two incrementals of a changing
cluster, each storing far less than the full; the last one restored to the end of the
archive and to a time between two commits, with exactly the right rows; the
repository check following references; and a restore that fails loudly, with nothing
left behind, when an object only the full backup holds is gone."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.integration import janua
from tests.integration.test_pitr import s3_spec

PREFIX = "cluster-a"


def rows(cluster: Any, query: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in cluster.sql(query)]


def tables(cluster: Any) -> list[str]:
    found = cluster.sql("SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 2200")
    return sorted(str(r[0]) for r in found)


def zulu(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def test_incremental_chain_restores_exact_rows_and_fails_loudly_without_its_full(
    s3_server: Any, s3_bucket: str, s3_client: Any, pg_factory: Any, janua_exe: Path
) -> None:
    spec = s3_spec(s3_server, s3_bucket)
    config = pg_factory.empty_dir() / "janua.toml"
    janua.write_config(config, spec)
    cluster = janua.archiving_cluster(pg_factory, janua_exe, config)
    janua.write_config(config, spec, pgdata=cluster.pgdata, dsn=cluster.dsn)
    cluster.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
    cluster.sql(
        "CREATE TABLE bulk AS SELECT g AS id, repeat('x', 200) AS pad"
        " FROM generate_series(1, 40000) g"
    )
    cluster.sql("CREATE TABLE doomed AS SELECT g AS id FROM generate_series(1, 1000) g")
    janua.insert_rows(cluster, 1, 5, pause_s=0)

    full = janua.run_json(janua_exe, config, "backup", "--type", "incr")
    assert full["type"] == "full" and full["depends_on"] is None
    assert "no earlier backup" in full["note"]

    cluster.sql("UPDATE items SET note = 'updated' WHERE id = 3")
    cluster.sql("CREATE TABLE fresh AS SELECT g AS id FROM generate_series(1, 500) g")
    cluster.sql("DROP TABLE doomed")
    janua.insert_rows(cluster, 6, 5, pause_s=0)
    incr1 = janua.run_json(janua_exe, config, "backup", "--type", "incr")

    janua.insert_rows(cluster, 11, 5, pause_s=0)
    cluster.sql("UPDATE bulk SET pad = 'changed' WHERE id = 1")
    done = janua.ok(janua.run(janua_exe, config, "backup", "--type", "incr"))
    assert f"incremental on top of {incr1['backup_id']}: " in done.stdout
    incr2 = janua.run_json(janua_exe, config, "list")["backups"][-1]

    assert incr1["type"] == "incr" and incr1["depends_on"] == full["backup_id"]
    assert incr2["type"] == "incr"
    shown = janua.run_json(janua_exe, config, "info", incr2["backup_id"])
    assert shown["format_version"] == 1 and isinstance(shown["system_identifier"], str)
    assert shown["backup"]["depends_on"] == incr1["backup_id"]
    assert shown["backup"]["chain"] == [full["backup_id"], incr1["backup_id"], incr2["backup_id"]]
    for incr in (incr1, incr2):
        assert incr["stored_bytes"] * 4 < full["stored_bytes"], (incr, full)
    assert incr1["referenced_files"] > incr1["stored_files"] > 0
    assert incr1["size_bytes"] > 0.9 * full["size_bytes"]  # every file listed, most referenced

    committed = janua.insert_rows(cluster, 16, 6)
    janua.switch_and_wait_archived(cluster)
    before, after = committed[1][1], committed[2][1]
    target = before + (after - before) / 2  # between the commits of rows 17 and 18

    end_dir = pg_factory.empty_dir() / "end"
    janua.ok(
        janua.run(
            janua_exe,
            config,
            "restore",
            "--pgdata",
            str(end_dir),
            "--backup-id",
            incr2["backup_id"],
        )
    )
    restored = janua.start_restored(pg_factory, end_dir)
    assert janua.ids(restored) == list(range(1, 22))
    assert rows(restored, "SELECT note FROM items WHERE id = 3") == [("updated",)]
    assert tables(restored) == ["bulk", "fresh", "items"]
    assert rows(restored, "SELECT count(*), min(pad) FROM bulk") == [(40000, "changed")]
    restored.stop()

    pitr_dir = pg_factory.empty_dir() / "pitr"
    janua.ok(
        janua.run(
            janua_exe, config, "restore", "--pgdata", str(pitr_dir), "--target-time", zulu(target)
        )
    )
    restored = janua.start_restored(pg_factory, pitr_dir)
    assert janua.ids(restored) == list(range(1, 18))
    restored.stop()

    checked = janua.run_json(janua_exe, config, "verify", "--repository-only", "--jobs", "2")
    assert checked["ok"], checked["problems"]
    assert [b["objects_failed"] for b in checked["backups"]] == [0, 0, 0]

    # The full backup's objects go (a person, a lifecycle rule): the incremental that
    # references them must refuse to restore, not restore something else.
    prefix = f"{PREFIX}/backups/{full['backup_id']}/data/"
    listed = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=prefix)["Contents"]
    for item in listed:
        s3_client.delete_object(Bucket=s3_bucket, Key=item["Key"])
    broken_dir = pg_factory.empty_dir() / "broken"
    done = janua.run(
        janua_exe, config, "restore", "--pgdata", str(broken_dir), "--backup-id", incr2["backup_id"]
    )
    janua.one_line_error(done, 14, f"of backup {full['backup_id']}, which is missing")
    assert janua.tree_snapshot(broken_dir) in (["<absent>"], [])
    done = janua.run(janua_exe, config, "verify", "--repository-only")
    janua.one_line_error(done, 40, "is missing")
    assert "NOT RESTORABLE" in done.stdout
