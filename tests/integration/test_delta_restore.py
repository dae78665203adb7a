"""``restore --delta`` end to end: a data directory restored from one backup, started and
changed (rows inserted, a table dropped so its files vanish, a timeline of its own in
pg_wal), stopped, then brought to a later backup reusing most of its files, with
exactly the rows of that backup and its WAL. Refused, with one line and nothing
touched, on a running server and on another cluster's directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration import janua
from tests.integration.test_pitr import s3_spec


def tables(cluster: Any) -> list[str]:
    found = cluster.sql("SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 2200")
    return sorted(str(r[0]) for r in found)


def test_delta_restore_reuses_files_and_refuses_running_or_foreign_directories(
    s3_server: Any, s3_bucket: str, pg_factory: Any, janua_exe: Path
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
    cluster.sql("CREATE TABLE victim AS SELECT g AS id FROM generate_series(1, 1000) g")
    janua.insert_rows(cluster, 1, 5, pause_s=0)
    first = janua.run_json(janua_exe, config, "backup")

    target = pg_factory.empty_dir() / "target"
    janua.ok(janua.run(janua_exe, config, "restore", "--pgdata", str(target)))
    copy = janua.start_restored(pg_factory, target)  # promoted: a timeline of its own
    copy.sql("INSERT INTO items VALUES (1000, 'only in the copy')")
    copy.sql("DROP TABLE victim")  # its files vanish from the copy
    copy.sql("CREATE TABLE junk AS SELECT g FROM generate_series(1, 100) g")

    janua.insert_rows(cluster, 6, 5, pause_s=0)
    cluster.sql("CREATE TABLE later AS SELECT g FROM generate_series(1, 10) g")
    second = janua.run_json(janua_exe, config, "backup", "--type", "incr")
    assert second["depends_on"] == first["backup_id"]
    janua.insert_rows(cluster, 11, 2, pause_s=0)
    janua.switch_and_wait_archived(cluster)
    delta = ("restore", "--delta", "--pgdata", str(target))

    # A running server: refused, and it keeps running untouched.
    done = janua.run(janua_exe, config, *delta)
    janua.one_line_error(done, 4, "PostgreSQL is running", str(target))
    assert (target / "global/pg_control").exists()
    assert copy.sql("SELECT count(*) FROM items")[0][0] == 6
    copy.stop()

    # Another cluster's data directory: refused, nothing written.
    foreign = pg_factory(start=False)
    before = janua.tree_snapshot(foreign.pgdata)
    done = janua.run(janua_exe, config, "restore", "--delta", "--pgdata", str(foreign.pgdata))
    janua.one_line_error(done, 4, "cluster", "same cluster")
    assert janua.tree_snapshot(foreign.pgdata) == before

    result = janua.run_json(janua_exe, config, *delta)
    assert result["delta"] and result["backup_id"] == second["backup_id"]
    assert result["reused_files"] > 4 * result["fetched_files"] > 0, result
    assert result["reused_bytes"] > 4 * result["fetched_bytes"], result
    assert result["removed_entries"] > 0  # junk's files, the copy's WAL and history
    assert not (target / "global/pg_control.janua-delta").exists()
    assert not list((target / "pg_wal").glob("00000002*"))

    restored = janua.start_restored(pg_factory, target)
    assert janua.ids(restored) == list(range(1, 13))
    assert tables(restored) == ["bulk", "items", "later", "victim"]
    assert restored.sql("SELECT count(*) FROM victim")[0][0] == 1000
    assert restored.sql("SELECT count(*) FROM bulk")[0][0] == 40000
