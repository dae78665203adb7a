"""Drill checks where the bindir lacks a tool: a skip naming it, never a traceback."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from janua_backup.commands import drill_checks
from janua_backup.commands.verify import DrillResult
from janua_backup.output import verify as output
from janua_backup.pg.scratch import Owner, ScratchServer
from janua_backup.repository.drills import DrillCheck, DrillReport, from_json, to_json


def server(tmp_path: Path) -> ScratchServer:
    (tmp_path / "bin").mkdir(exist_ok=True)
    return ScratchServer(
        tmp_path / "data", tmp_path, tmp_path / "bin", user="postgres", owner=Owner.of(tmp_path)
    )


def test_no_pg_checksums_in_the_bindir_is_a_skip_naming_it(tmp_path: Path) -> None:
    check = drill_checks.checksums(server(tmp_path), timeout_s=5)
    assert (check.ok, check.skipped, check.name) == (True, True, "data checksums")
    assert f"pg_checksums is not in {tmp_path / 'bin'}" in check.message


def test_no_pg_amcheck_in_the_bindir_is_a_skip_naming_it(tmp_path: Path) -> None:
    check = drill_checks.amcheck(server(tmp_path), timeout_s=5)
    assert (check.ok, check.skipped, check.name) == (True, True, "amcheck")
    assert "pg_amcheck is not in" in check.message


def test_a_tool_that_is_not_executable_is_a_skip(tmp_path: Path) -> None:
    scratch = server(tmp_path)
    (scratch.bindir / "pg_checksums").write_text("not a program")
    check = drill_checks.checksums(scratch, timeout_s=5)
    assert check.skipped and "is not executable" in check.message


def report(checks: tuple[DrillCheck, ...]) -> DrillReport:
    now = datetime(2026, 12, 4, 13, 32, 36, tzinfo=UTC)
    return DrillReport(
        drill_id="d1", backup_id="b1", host="h", started=now, finished=now,
        passed=all(c.ok for c in checks), target="latest", checks=checks,
        restore_s=1.0, replay_s=1.0, total_s=2.0,
    )  # fmt: skip


def test_a_skipped_check_passes_the_drill_and_prints_as_skip(
    capsys: pytest.CaptureFixture[str],
) -> None:
    checks = (
        DrillCheck("databases", True, "1 databases accept connections: postgres"),
        drill_checks.skipped("data checksums", "pg_checksums is not in /x/bin"),
    )
    r = report(checks)
    assert r.passed and r.failed_checks == [] and r.skipped_checks == [checks[1]]
    assert r.summary.endswith("1 checks passed, 1 skipped")
    output.render(DrillResult(r, None, None), as_json=False)
    assert "  skip data checksums: pg_checksums is not in /x/bin" in capsys.readouterr().out
    assert from_json(to_json(r)) == r


def test_a_report_stored_before_skips_existed_still_loads() -> None:
    r = report((DrillCheck("databases", True, "ok"),))
    data = json.loads(to_json(r))
    for check in data["checks"]:
        del check["skipped"]
    assert from_json(json.dumps(data).encode()) == r
