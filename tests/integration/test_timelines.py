"""A side copy archiving into production's repository must not hijack a restore.

The case from issue 12, end to end on PostgreSQL 15 and SeaweedFS: production
archives; a backup; rows; someone restores production to a past time into
another directory and starts it as ``restore`` left it, archiving into the
same repository; it promotes (timeline 2) and writes; production writes on.
A restore without a target timeline from the backup that predates the fork
is refused (exit 4, both branches named); ``--target-timeline 1`` brings back
exactly production's rows; a newer backup (after the fork) restores
production's rows without being told; list and verify --repo say the same.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.integration import janua
from tests.integration.test_pitr import s3_spec


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def archive_mode_on(exe: Path) -> list[str]:
    """``--archive-mode on`` where restore has it (side copies stop archiving by default
    once it lands); before that a restored copy archives as its source did."""
    done = janua.ok(janua.run(exe, None, "restore", "--help"))
    return ["--archive-mode", "on"] if "--archive-mode" in done.stdout else []


def recovery_timeline(pgdata: Path) -> list[str]:
    text = (pgdata / "postgresql.auto.conf").read_text()
    return [line for line in text.splitlines() if line.startswith("recovery_target_timeline")]


def test_a_side_copy_branch_never_hijacks_a_restore(
    s3_server: Any, s3_bucket: str, pg_factory: Any, janua_exe: Path
) -> None:
    spec = s3_spec(s3_server, s3_bucket)
    config = pg_factory.empty_dir() / "janua.toml"
    janua.write_config(config, spec)
    production = janua.archiving_cluster(pg_factory, janua_exe, config)
    janua.write_config(config, spec, pgdata=production.pgdata, dsn=production.dsn)
    production.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
    janua.insert_rows(production, 1, 5)
    old = janua.run_json(janua_exe, config, "backup")["backup_id"]
    committed = janua.insert_rows(production, 6, 10)
    janua.switch_and_wait_archived(production)

    # The side copy: back to between rows 10 and 11, started as restore left it.
    target = committed[4][1] + (committed[5][1] - committed[4][1]) / 2
    side_dir = pg_factory.empty_dir() / "side"
    janua.ok(
        janua.run(
            janua_exe,
            config,
            "restore",
            "--pgdata",
            str(side_dir),
            "--target-time",
            iso(target),
            *archive_mode_on(janua_exe),
        )
    )
    side = janua.start_restored(pg_factory, side_dir, archive=True)
    assert janua.ids(side) == list(range(1, 11))
    janua.insert_rows(side, 1001, 3)
    side_segment = janua.switch_and_wait_archived(side)
    assert side_segment.startswith("00000002"), side_segment
    side.stop()

    janua.insert_rows(production, 16, 5)
    production_segment = janua.switch_and_wait_archived(production)
    assert production_segment.startswith("00000001"), production_segment
    production_rows = janua.ids(production)
    assert production_rows == list(range(1, 21))

    # The only backup predates the fork and both branches continue: refused, both named.
    refused_dir = pg_factory.empty_dir() / "refused"
    done = janua.run(janua_exe, config, "restore", "--pgdata", str(refused_dir))
    janua.one_line_error(
        done, 4, "two branches", "timeline 1", "timeline 2", production_segment, side_segment
    )
    assert "--target-timeline 1 or --target-timeline 2" in done.stderr
    assert janua.tree_snapshot(refused_dir) == ["<absent>"]

    # list and verify --repo say the same about it, with the same words.
    listed = janua.run_json(janua_exe, config, "list")["backups"]
    (window,) = [b["window"] for b in listed if b["backup_id"] == old]
    assert [b["timeline"] for b in window["branches"]] == [1, 2] and window["restorable"]
    text = janua.ok(janua.run(janua_exe, config, "list")).stdout
    assert "two branches" in text and "NOT RESTORABLE" not in text
    checked = janua.run(janua_exe, config, "verify", "--repository-only", "--json")
    assert checked.returncode != 0
    report = json.loads(checked.stdout)
    (verdict,) = [b for b in report["backups"] if b["backup_id"] == old]
    assert (
        verdict["branches"]
        and "--target-timeline 1 or --target-timeline 2" in (verdict["branches"])
    )

    # Picking production's timeline brings back exactly production's rows.
    picked_dir = pg_factory.empty_dir() / "picked"
    done = janua.ok(
        janua.run(
            janua_exe, config, "restore", "--pgdata", str(picked_dir), "--target-timeline", "1"
        )
    )
    assert "timelines   1" in done.stderr
    assert recovery_timeline(picked_dir) == ["recovery_target_timeline = '1'"]
    picked = janua.start_restored(pg_factory, picked_dir)
    assert janua.ids(picked) == production_rows
    picked.stop()

    # A backup taken after the fork: a plain restore follows production, no question asked.
    janua.run_json(janua_exe, config, "backup")
    janua.insert_rows(production, 21, 3)
    janua.switch_and_wait_archived(production)
    production_rows = janua.ids(production)
    plain_dir = pg_factory.empty_dir() / "plain"
    done = janua.ok(janua.run(janua_exe, config, "restore", "--pgdata", str(plain_dir)))
    assert "timelines   1" in done.stderr
    assert recovery_timeline(plain_dir) == ["recovery_target_timeline = '1'"]
    plain = janua.start_restored(pg_factory, plain_dir)
    assert janua.ids(plain) == production_rows == list(range(1, 24))
    plain.stop()
