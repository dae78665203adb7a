"""A copy restored beside production, started as restore left it, writes nothing into
production's repository; told ``--archive-mode on``, it does.

Without this the copy keeps production's archive_command (it is in the backed-up
postgresql.conf), promotes onto timeline 2 and archives ``00000002.history`` and
timeline-2 segments into the repository, where a later plain restore follows them
instead of production's newest data.
"""

from __future__ import annotations

import time
from datetime import UTC
from pathlib import Path
from typing import Any

from tests.integration import janua
from tests.integration.test_pitr import s3_spec

PREFIX = "cluster-a"  # s3_spec's repository path in the bucket


def wal_objects(client: Any, bucket: str) -> dict[str, str]:
    """Every archived object (segments, history files) with its ETag."""
    found: dict[str, str] = {}
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}/wal/")
    for page in pages:
        for item in page.get("Contents", []):
            found[item["Key"][len(f"{PREFIX}/wal/") :]] = item["ETag"]
    return found


def write_on(cluster: Any, first: int) -> None:
    """A promoted copy takes writes and finishes a segment: WAL it would archive."""
    janua.insert_rows(cluster, first, 3, pause_s=0)
    cluster.sql("SELECT pg_switch_wal()")
    cluster.sql("CHECKPOINT")


def test_a_side_copy_does_not_archive_into_the_repository_unless_told(
    s3_server: Any, s3_bucket: str, s3_client: Any, pg_factory: Any, janua_exe: Path
) -> None:
    home = pg_factory.empty_dir()
    config = home / "janua.toml"
    spec = s3_spec(s3_server, s3_bucket)
    janua.write_config(config, spec)
    production = janua.archiving_cluster(pg_factory, janua_exe, config)
    janua.write_config(config, spec, pgdata=production.pgdata, dsn=production.dsn)
    production.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
    janua.insert_rows(production, 1, 5)
    janua.ok(janua.run(janua_exe, config, "backup"))
    committed = janua.insert_rows(production, 6, 10)
    janua.switch_and_wait_archived(production)
    before, after = committed[4][1], committed[5][1]
    past = (before + (after - before) / 2).astimezone(UTC).isoformat().replace("+00:00", "Z")
    archived = wal_objects(s3_client, s3_bucket)
    assert not [name for name in archived if not name.startswith("00000001")]

    # "To have a look": a past time, another directory, no flag; started as left.
    side = pg_factory.empty_dir() / "look"
    done = janua.ok(
        janua.run(janua_exe, config, "restore", "--pgdata", str(side), "--target-time", past)
    )
    assert "archiving   off (not postgres.pgdata" in done.stderr
    copy = janua.start_restored(pg_factory, side, archive=True)  # adds no setting of its own
    assert janua.ids(copy) == list(range(1, 11))
    write_on(copy, 100)
    assert copy.sql("SELECT timeline_id FROM pg_control_checkpoint()") == [(2,)]
    assert copy.sql("SHOW archive_mode") == [("off",)]
    # Nothing waits to be archived: PostgreSQL marks no segment .ready with archiving off.
    assert copy.sql("SELECT count(*) FROM pg_ls_archive_statusdir()") == [(0,)]
    assert copy.sql("SELECT archived_count, failed_count FROM pg_stat_archiver") == [(0, 0)]
    copy.stop()
    assert wal_objects(s3_client, s3_bucket) == archived  # no 00000002.history, no TLI 2

    # Production writes on; a plain restore brings back exactly production's rows.
    janua.insert_rows(production, 16, 5)
    janua.switch_and_wait_archived(production)
    latest = pg_factory.empty_dir() / "latest"
    janua.ok(janua.run(janua_exe, config, "restore", "--pgdata", str(latest)))
    restored = janua.start_restored(pg_factory, latest)
    assert janua.ids(restored) == list(range(1, 21))
    restored.stop()

    # Told to, a copy does archive: its new timeline's history file reaches the repository.
    side_on = pg_factory.empty_dir() / "look-on"
    done = janua.ok(
        janua.run(
            janua_exe, config, "restore", "--pgdata", str(side_on),
            "--target-time", past, "--archive-mode", "on",
        )
    )  # fmt: skip
    assert "archiving   on (as asked with --archive-mode)" in done.stderr
    copy_on = janua.start_restored(pg_factory, side_on, archive=True)
    assert copy_on.sql("SHOW archive_mode") == [("on",)]
    write_on(copy_on, 200)
    deadline = time.monotonic() + 60
    while "00000002.history" not in wal_objects(s3_client, s3_bucket):
        assert time.monotonic() < deadline, copy_on.sql("SELECT * FROM pg_stat_archiver")
        time.sleep(0.2)
