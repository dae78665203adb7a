"""``list``, ``info`` and ``info ID`` through the command line, on a file:// repository
built with the repository code: a full backup and two incrementals on it, the newest
taken on a standby, pinned with a reason and proven by a drill."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from janua_backup.cli import cli
from janua_backup.commands.common import open_repo
from janua_backup.commands.verify import DrillResult
from janua_backup.config import RepoSettings, Settings
from janua_backup.output import verify
from janua_backup.repository import catalog, drills, marker, pins
from janua_backup.repository.drills import DrillCheck, DrillReport
from janua_backup.repository.manifest import Manifest
from tests.unit.repository.helpers import T0
from tests.unit.repository.test_integrity import MIB, archive, seg, store_backup

FULL, INCR1, INCR2 = "20261125T120000Z", "20261125T130000Z", "20261125T140000Z"
SYSID = 7312345678901234567  # above 2**53: a JSON double would round it
REASON = "legal hold until 2027 (ticket OPS-42)"


def incremental(parent: Manifest, backup_id: str, segno: int, hours: int) -> Manifest:
    """An incremental listing every file of ``parent``, all referenced (nothing changed)."""
    holder = parent.depends_on and parent.backup_id
    start = T0 + timedelta(hours=hours)
    return replace(
        parent,
        backup_id=backup_id,
        backup_type="incr",
        depends_on=parent.backup_id,
        start_lsn=replace(parent.start_lsn, value=segno * MIB + 0x28),
        stop_lsn=replace(parent.stop_lsn, value=segno * MIB + 0x100),
        start_time=start,
        stop_time=start + timedelta(seconds=30),
        files=tuple(
            replace(f, backup_id=f.backup_id or holder or parent.backup_id)
            if f.kind == "file"
            else f
            for f in parent.files
        ),
        objects=tuple(
            replace(o, backup_id=o.backup_id or parent.backup_id) for o in parent.objects
        ),
    )


def drill(backup_id: str) -> DrillReport:
    finished = T0 + timedelta(hours=3)
    return DrillReport(
        drill_id="20261125T150000Z",
        backup_id=backup_id,
        host="drillbox",
        started=finished - timedelta(seconds=42),
        finished=finished,
        passed=True,
        target="end of the archive",
        checks=(DrillCheck("select 1", True, "ok"),),
        restore_s=30.0,
        replay_s=12.0,
        total_s=42.0,
        rpo_s=3.0,
    )


@pytest.fixture
def repo_url(tmp_path: Path) -> str:
    (tmp_path / "repo").mkdir()
    url = f"file://{tmp_path / 'repo'}"
    repo = open_repo(Settings(repository=RepoSettings(url=url)))
    marker.ensure(repo, system_identifier=SYSID, wal_segment_size=MIB, pg_major=15)
    full = store_backup(repo, FULL, start_seg=2, stop_seg=2)
    incr1 = incremental(full, INCR1, 4, 1)
    incr2 = replace(incremental(incr1, INCR2, 6, 2), host="replica-1", extra={"source": "standby"})
    catalog.commit(repo, incr1)
    catalog.commit(repo, incr2)
    archive(repo, 2, 9)
    pins.pin(repo, INCR2, REASON)
    drills.save(repo, drill(INCR2))
    return url


def run(url: str, *args: str) -> str:
    env = {"JANUA_BACKUP_CONFIG": "", "JANUA_BACKUP_REPO": ""}
    done = CliRunner().invoke(cli, ["--repo", url, *args], env=env, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return done.stdout


def run_json(url: str, *args: str) -> Any:
    text = run(url, *args, "--json")
    data = json.loads(text)
    assert next(iter(data)) == "format_version" and data["format_version"] == 1
    return data


def line_of(text: str, backup_id: str) -> list[str]:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(backup_id)]
    return line.split()


def test_list_shows_the_type_and_parent_of_each_backup(repo_url: str) -> None:
    text = run(repo_url, "list")
    assert line_of(text, FULL)[1:3] == ["full", "-"]
    assert line_of(text, INCR1)[1:3] == ["incr", FULL]
    assert line_of(text, INCR2)[1:3] == ["incr", INCR1]
    assert "passed" in line_of(text, INCR2) and "yes" in line_of(text, INCR2)
    assert "never" in line_of(text, FULL)
    assert "taken on the standby replica-1" in text


def test_info_id_shows_the_chain_pin_reason_drill_and_window(repo_url: str) -> None:
    text = run(repo_url, "info", INCR2)
    rows = {ln[:13].strip(): ln[14:] for ln in text.splitlines() if not ln.startswith(" ")}
    assert rows["chain"] == f"{FULL} <- {INCR1} <- {INCR2}"
    assert rows["type"] == f"incremental on top of {INCR1}"
    assert rows["taken on"] == "the standby replica-1"
    assert rows["pin"] == f"pinned: {REASON}"
    assert rows["WAL needed"] == f"{seg(6)} .. {seg(6)}"
    assert rows["recoverable"].startswith("2026-11-25 14:00:30Z .. ")
    assert rows["storage"] == "gzip level 6, not encrypted"
    assert "referenced from earlier backups" in rows["stored"]
    assert rows["drills"] == "1"
    assert "2026-11-25 15:00:00Z passed, RTO 42s, RPO 3s (drill 20261125T150000Z)" in text
    # A backup neither pinned nor drilled says so rather than leaving it out.
    plain = run(repo_url, "info", FULL)
    assert "not pinned" in plain and f"chain         {FULL}\n" in plain


def test_info_without_an_id_summarises_the_repository_then_lists(repo_url: str) -> None:
    text = run(repo_url, "info")
    assert f"cluster       {SYSID} (PostgreSQL 15, WAL segments of 1.0 MiB)" in text
    assert "encryption    off" in text
    assert "backups       3" in text
    assert f"WAL archived  {seg(2)} .. {seg(9)} (8 segments)" in text
    assert "timelines     1" in text
    assert line_of(text, INCR1)[1:3] == ["incr", FULL]


def test_json_has_a_format_version_and_the_system_identifier_as_a_string(
    repo_url: str,
) -> None:
    listed = run_json(repo_url, "list")
    assert listed["system_identifier"] == str(SYSID)
    by_id = {b["backup_id"]: b for b in listed["backups"]}
    assert (by_id[INCR1]["type"], by_id[INCR1]["depends_on"]) == ("incr", FULL)
    assert by_id[INCR2]["pin_reason"] == REASON and by_id[FULL]["pin_reason"] is None

    summary = run_json(repo_url, "info")
    assert summary["system_identifier"] == str(SYSID)
    assert (summary["oldest_wal"], summary["newest_wal"]) == (seg(2), seg(9))
    assert summary["timelines"] == [1] and summary["backup_count"] == 3

    detail = run_json(repo_url, "info", INCR2)
    assert detail["system_identifier"] == str(SYSID) and detail["backup_count"] == 3
    one = detail["backup"]
    assert one["chain"] == [FULL, INCR1, INCR2] and one["depends_on"] == INCR1
    assert one["source"] == "standby" and one["pin_reason"] == REASON
    assert one["start_lsn"] == f"0/{6 * MIB + 0x28:X}"
    assert [d["passed"] for d in one["drills"]] == [True]
    assert one["window"]["restorable"] and one["wal_needed"] == {"first": seg(6), "last": seg(6)}


def test_every_json_output_carries_the_format_version(
    repo_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    expired = run_json(repo_url, "expire", "--dry-run")
    assert expired["dry_run"] is True
    # The drill report was printed as stored, without the version, until now.
    verify.render(DrillResult(drill(INCR2), "verify/x.json", None), as_json=True)
    printed = json.loads(capsys.readouterr().out)
    assert next(iter(printed)) == "format_version" and printed["report_key"] == "verify/x.json"


def test_an_empty_repository_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    url = f"file://{tmp_path / 'empty'}"
    assert "no backups yet" in run(url, "list")
    assert "empty: no WAL archived and no backup taken yet" in run(url, "info")
    shown = run_json(url, "info")
    assert shown["system_identifier"] is None and shown["backups"] == []
