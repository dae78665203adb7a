"""``backup``'s checks of the server before anything is copied."""

from __future__ import annotations

import pytest

from janua_backup.commands import backup
from janua_backup.config import Settings
from janua_backup.errors import BackupError
from janua_backup.pg.conn import ServerFacts
from janua_backup.pg.lowlevel import label_from_standby


def facts(version_num: int, *, in_recovery: bool, archive_mode: str = "always") -> ServerFacts:
    return ServerFacts(
        version_num=version_num,
        system_identifier=7,
        wal_segment_size=16 << 20,
        archive_mode=archive_mode,
        archive_command="janua-backup wal-push %p",
        data_directory="/pg",
        in_recovery=in_recovery,
    )


@pytest.mark.parametrize("version_num", [150004, 160001, 170000])
def test_a_hot_standby_of_postgresql_15_or_later_is_backed_up(version_num: int) -> None:
    backup._check_server(facts(version_num, in_recovery=True), Settings())


def test_a_standby_older_than_15_is_refused_in_one_sentence() -> None:
    with pytest.raises(BackupError, match=r"need PostgreSQL 15 or later .* against the primary"):
        backup._check_server(facts(140010, in_recovery=True), Settings())
    backup._check_server(facts(140010, in_recovery=False), Settings())


def test_the_backup_label_says_whether_postgresql_took_it_in_recovery() -> None:
    label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"
    assert not label_from_standby(label + "BACKUP FROM: primary\n")
    assert label_from_standby(label + "BACKUP FROM: standby\nSTART TIMELINE: 1\n")


@pytest.mark.parametrize("archive_mode", ["off", "on", "always"])
def test_a_standby_need_not_archive_itself_when_the_primary_does(archive_mode: str) -> None:
    """Only a primary's archive_mode off is refused outright: a standby's stop segment
    may come from the primary (checked through primary_dsn, or by the wait)."""
    backup._check_server(facts(150004, in_recovery=True, archive_mode=archive_mode), Settings())
    with pytest.raises(BackupError, match="archive_mode is off"):
        backup._check_server(facts(150004, in_recovery=False, archive_mode="off"), Settings())
