"""``list``/``info``, ``verify --repo`` and ``restore`` on one repository holding a side
copy's branch: the three entry points report the same timeline path and window,
because all three ask ``repository.timelines``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from janua_backup import output
from janua_backup.commands import info, restore, verify_repo
from janua_backup.commands.common import open_repo
from janua_backup.commands.restore import RestoreRequest
from janua_backup.commands.restore_request import build_request
from janua_backup.config import RepoSettings, Settings
from janua_backup.errors import InputError
from janua_backup.output.verify_repo import render
from janua_backup.pg.wal import Lsn
from janua_backup.repository import marker
from janua_backup.repository.integrity import ProblemKind
from tests.unit.repository.test_integrity import MIB, archive, history, seg, store_backup

OLD, NEW = "20261125T120000Z", "20261125T130000Z"
FORK = Lsn(4 * MIB + 0x100)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Production archives timeline 1 (segments 2..9); backup OLD starts in segment 2,
    NEW in segment 7. A side copy restored to a point in segment 4 archived timeline 2
    (segments 4..6) into the same repository."""
    (tmp_path / "repo").mkdir()
    settings = Settings(repository=RepoSettings(url=f"file://{tmp_path / 'repo'}"))
    repo = open_repo(settings)
    marker.ensure(repo, system_identifier=42, wal_segment_size=MIB, pg_major=15)
    store_backup(repo, OLD, start_seg=2, stop_seg=2)
    store_backup(repo, NEW, start_seg=7, stop_seg=7)
    archive(repo, 2, 9)
    archive(repo, 4, 6, tli=2)
    history(repo, 2, parent=1, switch_seg=4)
    # Production goes on archiving after the side copy promoted: its segments past the
    # fork are stored after 00000002.history (what makes the two branches concurrent).
    wal = tmp_path / "repo" / "wal"
    promoted = (wal / "00000002.history").stat().st_mtime
    for number in range(5, 10):
        os.utime(wal / seg(number, 1), (promoted + number, promoted + number))
    return settings


def request(pgdata: Path, backup_id: str | None = None, tli: str | None = None) -> RestoreRequest:
    return build_request(
        pgdata=str(pgdata),
        target_time=None,
        timezone=None,
        target_lsn=None,
        target_xid=None,
        target_name=None,
        immediate=False,
        exclusive=False,
        action="promote",
        timeline=tli,
        backup_id=backup_id,
        standby=False,
    )


def test_list_verify_and_restore_agree_on_paths_and_windows(
    settings: Settings, tmp_path: Path
) -> None:
    listed = {b.manifest.backup_id: b.window for b in info.run(settings).backups}
    checked = {b.backup_id: b for b in verify_repo.run(settings).backups}
    # The newest backup started after the fork: the side copy is not on its path.
    new = listed[NEW]
    assert new.path is not None and new.path.describe() == "1" and new.conflict is None
    assert new.last_segment == seg(9) and new.latest_lsn == Lsn(10 * MIB)
    assert checked[NEW].timeline_path == "1" and checked[NEW].branches is None
    assert checked[NEW].restorable_to_lsn == new.latest_lsn
    assert checked[NEW].restorable_to_timeline == 1 and checked[NEW].last_segment == seg(9)
    choice, plan = restore.prepare(settings, request(tmp_path / "a"))
    assert choice.manifest.backup_id == NEW and plan.timeline_path == "1"
    assert plan.target_timeline == 1 and plan.last_wal == seg(9)
    assert choice.window == new
    # The older one started before it: two living branches, said the same way by all.
    old = listed[OLD]
    assert old.conflict is not None and old.restorable  # not NOT RESTORABLE
    assert checked[OLD].branches == old.conflict.message(OLD)
    assert checked[OLD].restorable_to_lsn == old.latest_lsn
    with pytest.raises(InputError) as refused:
        restore.prepare(settings, request(tmp_path / "b", OLD))
    assert refused.value.message == old.conflict.message(OLD)
    assert refused.value.exit_code == 4
    problems = verify_repo.run(settings).problems
    assert [p.message for p in problems if p.kind is ProblemKind.TWO_BRANCHES] == [
        old.conflict.message(OLD)
    ]


@pytest.mark.parametrize(("tli", "last", "path"), [("1", seg(9), "1"), ("2", seg(6, 2), None)])
def test_restore_with_a_target_timeline_follows_it(
    settings: Settings, tmp_path: Path, tli: str, last: str, path: str | None
) -> None:
    _, plan = restore.prepare(
        settings,
        request(tmp_path / "a", OLD, tli),
    )
    assert plan.target_timeline == int(tli) and plan.last_wal == last
    assert plan.timeline_path == (path or f"1 -> 2 (switch at {FORK})")


def test_a_target_timeline_only_an_older_backup_reaches_picks_that_backup(
    settings: Settings, tmp_path: Path
) -> None:
    choice, plan = restore.prepare(settings, request(tmp_path / "a", None, "2"))
    assert choice.manifest.backup_id == OLD and plan.target_timeline == 2


def test_a_target_timeline_off_the_backups_path_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(InputError, match="timeline 2 does not descend from timeline 1"):
        restore.prepare(settings, request(tmp_path / "a", NEW, "2"))
    with pytest.raises(InputError, match="--target-timeline 5 is not on the path of any backup"):
        restore.prepare(settings, request(tmp_path / "a", None, "5"))


def test_list_and_verify_say_two_branches_not_unrestorable(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    output.info(info.run(settings), as_json=False)
    listed = capsys.readouterr().out
    assert f"two branches at {FORK}: pick with --target-timeline (1 or 2)" in listed
    assert "NOT RESTORABLE" not in listed
    render(verify_repo.run(settings), as_json=False)
    checked = capsys.readouterr().out
    assert "two branches: pick with --target-timeline" in checked
    assert "NOT RESTORABLE" not in checked


def test_the_plan_prints_the_timeline_path(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, plan = restore.prepare(settings, request(tmp_path / "a", OLD, "2"))
    output.plan(plan, as_json=False)
    assert f"timelines   1 -> 2 (switch at {FORK})" in capsys.readouterr().err
