"""Files in parts end to end, with 1 MiB parts so that small tables are split: a full
backup and an incremental of a changing cluster (one big table changed, one not),
the incremental restored to the end of the archive with exactly its rows, then the
same directory brought back to the full backup with ``restore --delta``, and the
repository check reading every part."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.integration import janua
from tests.integration.test_pitr import s3_spec

PART = 1024 * 1024
PREFIX = "cluster-a"


def test_tables_in_parts_back_up_restore_and_delta_restore_exactly(
    s3_server: Any, s3_bucket: str, s3_client: Any, pg_factory: Any, janua_exe: Path
) -> None:
    spec = replace(
        s3_spec(s3_server, s3_bucket, codec="zstd"), extra=f"[backup]\npart_size_bytes = {PART}\n"
    )
    config = pg_factory.empty_dir() / "janua.toml"
    janua.write_config(config, spec)
    cluster = janua.archiving_cluster(pg_factory, janua_exe, config)
    janua.write_config(config, spec, pgdata=cluster.pgdata, dsn=cluster.dsn)
    cluster.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
    for table in ("bulk", "still"):  # ~9 MiB each: nine parts and a short one
        cluster.sql(
            f"CREATE TABLE {table} AS SELECT g AS id, md5(g::text) || repeat('x', 170) AS pad"
            " FROM generate_series(1, 40000) g"
        )
    janua.insert_rows(cluster, 1, 5, pause_s=0)
    full = janua.run_json(janua_exe, config, "backup")
    size = int(cluster.sql("SELECT pg_relation_size('bulk')")[0][0])
    assert size > 8 * PART
    listed = s3_client.list_objects_v2(
        Bucket=s3_bucket, Prefix=f"{PREFIX}/backups/{full['backup_id']}/data/"
    )["Contents"]
    assert len(listed) >= 2 * (size // PART)  # bulk's and still's parts, each an object

    cluster.sql("UPDATE bulk SET pad = 'changed' WHERE id = 1")
    janua.insert_rows(cluster, 6, 3, pause_s=0)
    incr = janua.run_json(janua_exe, config, "backup", "--type", "incr")
    assert incr["depends_on"] == full["backup_id"]
    assert incr["stored_bytes"] * 2 < full["stored_bytes"]  # still is referenced, part by part
    janua.switch_and_wait_archived(cluster)

    target = pg_factory.empty_dir() / "target"
    janua.ok(janua.run(janua_exe, config, "restore", "--pgdata", str(target)))
    restored = janua.start_restored(pg_factory, target)
    assert janua.ids(restored) == list(range(1, 9))
    assert restored.sql("SELECT pad FROM bulk WHERE id = 1") == [("changed",)]
    check = "SELECT count(*), count(DISTINCT pad), sum(id) FROM {}"
    expected = cluster.sql(check.format("still"))
    assert restored.sql(check.format("still")) == expected == [(40000, 40000, 800020000)]
    assert restored.sql(check.format("bulk")) == cluster.sql(check.format("bulk"))
    restored.stop()

    back = ("restore", "--delta", "--pgdata", str(target), "--backup-id", full["backup_id"])
    result = janua.run_json(janua_exe, config, *back, "--target", "immediate")
    assert result["reused_files"] > 0 and result["fetched_files"] > 0, result
    restored = janua.start_restored(pg_factory, target)
    assert janua.ids(restored) == list(range(1, 6))
    pad = restored.sql("SELECT pad FROM bulk WHERE id = 1")[0][0]
    assert pad.endswith("x" * 170) and restored.sql(check.format("still")) == expected
    restored.stop()

    checked = janua.run_json(janua_exe, config, "verify", "--repository-only", "--jobs", "2")
    assert checked["ok"], checked["problems"]
    assert [b["objects_failed"] for b in checked["backups"]] == [0, 0]
