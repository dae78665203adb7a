"""Backups from a hot standby, with both nodes archiving (``archive_mode = always``).

A real primary and a real streaming replica on this machine archive into one
repository; the backup is taken from the replica, the primary writes on, and a
point-in-time restore from that backup must bring back exactly the rows
committed before the target. Both nodes push the same segments: the second
push must be success ("already archived", or an identical conditional create),
never a conflict, and neither archiver may count a failure.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Any

from localstack import PgCluster

from tests.integration import janua
from tests.integration.conftest import wait_replayed, wait_streaming
from tests.integration.test_pitr import s3_spec


def _archiver(cluster: PgCluster) -> tuple[int, int]:
    archived, failed = cluster.sql("SELECT archived_count, failed_count FROM pg_stat_archiver")[0]
    return int(archived), int(failed)


def _done_segments(cluster: PgCluster) -> set[str]:
    status = cluster.pgdata / "pg_wal" / "archive_status"
    return {p.name[:24] for p in status.glob("*.done") if len(p.name) == 29}


def test_backup_from_a_standby_restores_exactly_and_both_nodes_archive(
    s3_server: Any, s3_bucket: str, pg_factory: Any, janua_exe: Path
) -> None:
    spec = s3_spec(s3_server, s3_bucket)
    home = pg_factory.empty_dir()
    primary_conf, standby_conf = home / "primary.toml", home / "standby.toml"
    janua.write_config(primary_conf, spec)
    always = {"archive_mode": "always"}
    primary = janua.archiving_cluster(pg_factory, janua_exe, primary_conf, always)
    janua.write_config(primary_conf, spec, pgdata=primary.pgdata, dsn=primary.dsn)
    primary.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
    janua.insert_rows(primary, 1, 5)

    standby = pg_factory.replica(
        primary, {"archive_command": janua.archive_command(janua_exe, standby_conf)}, start=False
    )
    janua.write_config(
        standby_conf, spec, pgdata=standby.pgdata, dsn=standby.dsn, primary_dsn=primary.dsn
    )
    standby.start()
    wait_streaming(primary)
    assert standby.sql("SELECT pg_is_in_recovery()") == [(True,)]
    janua.insert_rows(primary, 6, 5)
    wait_replayed(primary, standby)

    backup = janua.run_json(janua_exe, standby_conf, "backup")
    assert backup["source"] == "standby"
    listing = janua.run_json(janua_exe, primary_conf, "list")
    (listed,) = listing["backups"]
    assert (listed["backup_id"], listed["source"]) == (backup["backup_id"], "standby")
    text = janua.ok(janua.run(janua_exe, primary_conf, "list")).stdout
    assert "taken on the standby" in text

    # A segment ended by filling up, then rows after the backup, then one ended by a switch.
    primary.sql("CREATE TABLE filler AS SELECT g, repeat('x', 500) AS pad "
                "FROM generate_series(1, 40000) g")  # fmt: skip
    committed = janua.insert_rows(primary, 11, 10)
    last = janua.switch_and_wait_archived(primary)
    wait_replayed(primary, standby)
    janua.wait_archived(standby, last)

    before, after = committed[4][1], committed[5][1]  # rows 15 and 16
    target = (before + (after - before) / 2).astimezone(UTC).isoformat()
    pitr_dir = pg_factory.empty_dir() / "pitr"
    done = janua.ok(
        janua.run(janua_exe, primary_conf, "restore", "--pgdata", str(pitr_dir),
                  "--target-time", target.replace("+00:00", "Z"))
    )  # fmt: skip
    assert backup["backup_id"] in done.stderr
    restored = janua.start_restored(pg_factory, pitr_dir)
    assert janua.ids(restored) == list(range(1, 16))
    restored.stop()

    # Both nodes archived the same finished segments, byte for byte, without a failure.
    both = sorted(_done_segments(primary) & _done_segments(standby))
    assert len(both) >= 3, both
    for name in both:
        ours = (primary.pgdata / "pg_wal" / name).read_bytes()
        theirs = (standby.pgdata / "pg_wal" / name).read_bytes()
        assert ours == theirs, f"{name} differs between the primary and the standby"
    # The second node's push of a segment says "already archived", or, when both pushed
    # at once, its conditional create met the first one's identical bytes: success either
    # way (the storage contract), so only the absence of failures is asserted.
    for cluster in (primary, standby):
        archived, failed = _archiver(cluster)
        assert archived > 0 and failed == 0, (cluster, archived, failed)
        log = cluster.log_path.read_text()
        assert "conflict" not in log.lower() and "archive command failed" not in log, log[-3000:]


def test_without_primary_dsn_the_standby_backup_waits_for_the_primarys_archive_timeout(
    s3_server: Any, s3_bucket: str, pg_factory: Any, janua_exe: Path
) -> None:
    """Only the primary archives (the standby's archive_mode stays on: idle in recovery),
    and no primary_dsn: the stop segment arrives with the primary's archive_timeout."""
    spec = s3_spec(s3_server, s3_bucket)
    home = pg_factory.empty_dir()
    primary_conf, standby_conf = home / "primary.toml", home / "standby.toml"
    janua.write_config(primary_conf, spec)
    primary = janua.archiving_cluster(
        pg_factory, janua_exe, primary_conf, {"archive_timeout": "2s"}
    )
    janua.write_config(primary_conf, spec, pgdata=primary.pgdata, dsn=primary.dsn)
    primary.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
    janua.insert_rows(primary, 1, 5)
    standby = pg_factory.replica(primary)

    # A primary_dsn that reaches a standby is refused before anything is committed.
    janua.write_config(
        standby_conf, spec, pgdata=standby.pgdata, dsn=standby.dsn, primary_dsn=standby.dsn
    )
    refused = janua.run(janua_exe, standby_conf, "backup")
    janua.one_line_error(refused, 31, "primary_dsn reaches a standby")
    assert janua.run_json(janua_exe, primary_conf, "list")["backups"] == []

    janua.write_config(standby_conf, spec, pgdata=standby.pgdata, dsn=standby.dsn)
    janua.insert_rows(primary, 6, 5)
    wait_replayed(primary, standby)
    done = janua.ok(janua.run(janua_exe, standby_conf, "backup"))
    assert "taken on the standby" in done.stdout
    assert "waits for segment" in done.stderr and "primary_dsn" in done.stderr
    janua.insert_rows(primary, 11, 5)
    janua.switch_and_wait_archived(primary)
    scratch = pg_factory.empty_dir()
    janua.ok(janua.run(janua_exe, primary_conf, "verify", "--scratch-dir", str(scratch)))

    end_dir = pg_factory.empty_dir() / "end"
    janua.ok(janua.run(janua_exe, primary_conf, "restore", "--pgdata", str(end_dir)))
    restored = janua.start_restored(pg_factory, end_dir)
    assert janua.ids(restored) == list(range(1, 16))
    assert _archiver(standby) == (0, 0)
