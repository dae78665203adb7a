"""``backup``'s checks of the server before anything is copied."""

from __future__ import annotations

import pytest

from janua_backup.commands import backup
from janua_backup.config import Settings
from janua_backup.errors import BackupError
from janua_backup.pg.conn import ServerFacts
from janua_backup.pg.lowlevel import label_from_standby


def facts(version_num: int, *, in_recovery: bool) -> ServerFacts:
    return ServerFacts(
        version_num=version_num,
        system_identifier=7,
        wal_segment_size=16 << 20,
        archive_mode="always",
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
