"""Drill reports: stored through the pipeline, the newest per backup found again."""

from __future__ import annotations

from datetime import timedelta

import pytest

from janua_backup.errors import FormatError
from janua_backup.repository import drills, layout
from janua_backup.repository.drills import DrillCheck, DrillReport
from tests.unit.repository.helpers import T0, memory_repo


def report(backup_id: str, minutes: int, passed: bool = True) -> DrillReport:
    started = T0 + timedelta(minutes=minutes)
    return DrillReport(
        drill_id=layout.new_backup_id(started),
        backup_id=backup_id,
        host="h",
        started=started,
        finished=started + timedelta(seconds=9),
        passed=passed,
        target="end of the archive",
        checks=(DrillCheck("databases", passed, "3 databases", 0.1),),
        restore_s=2.5,
        replay_s=4.0,
        total_s=9.0,
        recovered_to_time=started - timedelta(seconds=30),
        recovered_to_lsn="0/5000060",
        rpo_s=1.5,
        rpo_bytes=100,
    )


def test_round_trip_and_newest_per_backup() -> None:
    repo = memory_repo()
    drills.save(repo, report("A", 0))
    drills.save(repo, report("A", 60, passed=False))
    drills.save(repo, report("B", 5))
    found = drills.latest(repo)
    assert found["A"] == report("A", 60, passed=False)
    assert found["B"] == report("B", 5)
    assert not found["A"].passed and "databases: 3 databases" in found["A"].summary
    assert drills.remove(repo, "A") == 2
    assert set(drills.latest(repo)) == {"B"}


def test_summary_of_a_passed_drill_counts_its_checks() -> None:
    assert "1 checks passed" in report("A", 0).summary


def test_malformed_report_is_a_format_error() -> None:
    with pytest.raises(FormatError):
        drills.from_json(b'{"drill_id": "x"}')


def test_a_report_copied_under_another_backup_is_ignored() -> None:
    """A passed drill of A copied to verify/B/ must never show B as proven."""
    repo = memory_repo()
    drills.save(repo, report("B", 0, passed=False))
    copied = report("A", 60)
    repo.put_bytes(layout.drill_key("B", copied.drill_id), drills.to_json(copied))
    drills.save(repo, report("C", 5))
    repo.put_bytes(layout.drill_key("D", copied.drill_id), drills.to_json(copied))
    found = drills.latest(repo)
    assert found["B"] == report("B", 0, passed=False)  # its own, older report
    assert found["C"] == report("C", 5)
    assert "A" not in found and "D" not in found
