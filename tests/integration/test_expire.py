"""``expire`` against the real stack: PostgreSQL archiving into SeaweedFS, through the CLI.

Four backups with rows and WAL switches between them; the first three are
backdated (their recorded times only: days stand in for minutes, the
deletions are real). With a 7-day window and ``min_backups`` 1, backup 3 is
the newest before the window and backup 4 lies inside it, so 1 and 2 may go.
Backup 2 is pinned first: 1 goes with the WAL before 2's start and 2 stays;
unpinned, 2 goes with the WAL before 3's start. A restore to a point between
backups 3 and 4 then proves the WAL the window needs is all still there.
"""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from janua_backup import config, locks
from janua_backup.commands.backup import LOCK_NAME
from janua_backup.commands.common import open_repo
from janua_backup.pg.wal import Lsn, WalSegment
from janua_backup.repository import catalog, layout, marker
from janua_backup.repository.objects import Repo
from tests.integration import janua
from tests.integration.test_pitr import s3_spec

PREFIX = "cluster-a/"
RULE = ("--window-days", "7", "--min-backups", "1")


def bucket(client: Any, name: str) -> dict[str, str]:
    """Every key of the repository (lock generations aside) with its ETag."""
    found: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=PREFIX):
        for obj in page.get("Contents", []):
            key = obj["Key"][len(PREFIX) :]
            if not key.startswith(layout.LOCKS_PREFIX):
                found[key] = obj["ETag"]
    return found


def backdate(repo: Repo, backup_id: str, days: int) -> None:
    """Rewrite a manifest with its times ``days`` earlier, as if taken back then."""
    old = catalog.load(repo, backup_id)
    shift = timedelta(days=days)
    new = replace(old, start_time=old.start_time - shift, stop_time=old.stop_time - shift)
    repo.storage.delete([layout.manifest_key(backup_id)])
    catalog.commit(repo, new)


def below(keys: dict[str, str], start_lsn: str, segment_size: int) -> set[str]:
    """WAL keys (timeline 1, no history files) before the segment holding ``start_lsn``."""
    horizon = WalSegment.from_lsn(1, Lsn.parse(start_lsn), segment_size).name
    wal = {k for k in keys if k.startswith(layout.WAL_PREFIX) and not k.endswith(".history")}
    return {k for k in wal if layout.wal_name(k)[:24] < horizon}


def owned_by(keys: dict[str, str], backup_id: str) -> set[str]:
    return {k for k in keys if k.startswith(layout.backup_prefix(backup_id))}


def test_expire_keeps_the_window_and_pins_deletes_the_rest_and_pitr_still_works(
    s3_server: Any, s3_bucket: str, s3_client: Any, pg_factory: Any, janua_exe: Path
) -> None:
    spec = s3_spec(s3_server, s3_bucket)
    cfg = pg_factory.empty_dir() / "janua.toml"
    janua.write_config(cfg, spec)
    cluster = janua.archiving_cluster(pg_factory, janua_exe, cfg)
    janua.write_config(cfg, spec, pgdata=cluster.pgdata, dsn=cluster.dsn)
    cluster.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")

    backups: list[dict[str, Any]] = []
    committed: list[tuple[int, datetime]] = []
    for first in (1, 6, 11, 16):  # rows 1-5 before backup 1, 6-10 before 2, 11-15 before 3
        if first == 16:  # rows 16-25 between backups 3 and 4, one commit each: PITR targets
            committed = janua.insert_rows(cluster, first, 10)
        else:
            janua.insert_rows(cluster, first, 5, pause_s=0)
        janua.switch_and_wait_archived(cluster)  # WAL of its own between the backups
        backups.append(janua.run_json(janua_exe, cfg, "backup"))
    janua.insert_rows(cluster, 26, 5, pause_s=0)
    janua.switch_and_wait_archived(cluster)
    b1, b2, b3, b4 = (b["backup_id"] for b in backups)

    repo = open_repo(config.load(str(cfg), {}, None))
    found = marker.read(repo)
    assert found is not None
    for backup_id, days in ((b1, 30), (b2, 20), (b3, 10)):
        backdate(repo, backup_id, days)
    janua.ok(janua.run(janua_exe, cfg, "pin", b2))

    # A dry run says what would go and how much that frees, and deletes nothing.
    before = bucket(s3_client, s3_bucket)
    shown = janua.ok(janua.run(janua_exe, cfg, "expire", *RULE, "--dry-run"))
    assert f"would remove backup {b1}" in shown.stdout, shown.stdout
    assert "would free" in shown.stdout and f"keeps backup {b2}: pinned" in shown.stdout
    predicted = janua.run_json(janua_exe, cfg, "expire", *RULE, "--dry-run")
    assert bucket(s3_client, s3_bucket) == before
    assert predicted["dry_run"] and predicted["freed_bytes"] > 0

    # Pinned, backup 2 stays; backup 1 and the WAL before backup 2's start go.
    done = janua.run_json(janua_exe, cfg, "expire", *RULE)
    assert [b["backup_id"] for b in done["expired"]] == [b1]
    assert {k["backup_id"]: k["reason"] for k in done["kept"]} == {
        b2: "pinned",
        b3: "newest before the window",
        b4: "inside the window",
    }
    gone = owned_by(before, b1) | below(before, backups[1]["start_lsn"], found.wal_segment_size)
    assert below(before, backups[0]["start_lsn"], found.wal_segment_size) < gone  # WAL went
    after = bucket(s3_client, s3_bucket)
    assert set(after) == set(before) - gone
    assert done["wal_deleted"] == len(gone - owned_by(before, b1))
    assert {k: predicted[k] for k in ("expired", "kept", "wal_deleted", "freed_bytes")} == {
        k: done[k] for k in ("expired", "kept", "wal_deleted", "freed_bytes")
    }

    # Unpinned, backup 2 goes too, with the WAL before backup 3's start.
    janua.ok(janua.run(janua_exe, cfg, "unpin", b2))
    after = bucket(s3_client, s3_bucket)
    again = janua.run_json(janua_exe, cfg, "expire", *RULE)
    assert [b["backup_id"] for b in again["expired"]] == [b2]
    gone = owned_by(after, b2) | below(after, backups[2]["start_lsn"], found.wal_segment_size)
    assert set(bucket(s3_client, s3_bucket)) == set(after) - gone
    listing = janua.run_json(janua_exe, cfg, "list")
    assert [b["backup_id"] for b in listing["backups"]] == [b3, b4]

    # Any point after the oldest kept backup is still restorable: here, between 3 and 4.
    before_t, after_t = committed[4][1], committed[5][1]  # commits of rows 20 and 21
    target = (before_t + (after_t - before_t) / 2).astimezone(UTC)
    pitr = pg_factory.empty_dir() / "pitr"
    target_text = target.isoformat().replace("+00:00", "Z")
    restored = janua.run(
        janua_exe, cfg, "restore", "--pgdata", str(pitr), "--target-time", target_text
    )
    assert b3 in janua.ok(restored).stderr  # the plan names the backup it starts from
    started = janua.start_restored(pg_factory, pitr)
    assert janua.ids(started) == list(range(1, 21))
    started.stop()


def test_expire_refuses_while_a_backup_holds_the_lock(
    s3_server: Any, s3_bucket: str, s3_client: Any, pg_factory: Any, janua_exe: Path
) -> None:
    cfg = pg_factory.empty_dir() / "janua.toml"
    janua.write_config(cfg, s3_spec(s3_server, s3_bucket))
    repo = open_repo(config.load(str(cfg), {}, None))
    marker.ensure(repo, system_identifier=7, wal_segment_size=16 * 1024 * 1024, pg_major=15)
    with locks.hold(repo.storage, LOCK_NAME, purpose="backup"):
        refused = janua.run(janua_exe, cfg, "expire")
    janua.one_line_error(
        refused, 42, "another backup of this cluster is running", socket.gethostname(),
        f"pid {os.getpid()}",
    )  # fmt: skip
    record = locks.holder(repo.storage, LOCK_NAME)
    assert record is not None and record.purpose == "backup" and record.released
