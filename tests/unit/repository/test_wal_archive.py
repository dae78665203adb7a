from __future__ import annotations

from pathlib import Path

import pytest

from janua_backup.errors import ObjectNotFound, WalConflict
from janua_backup.repository import wal_archive
from janua_backup.repository.wal_archive import PushOutcome
from tests.unit.repository.helpers import memory_repo

NAME = "000000010000000000000003"


def test_push_is_idempotent_and_never_overwrites(tmp_path: Path) -> None:
    repo = memory_repo()
    segment = tmp_path / NAME
    segment.write_bytes(b"wal" * 1000)
    assert wal_archive.push(repo, NAME, segment) is PushOutcome.STORED
    assert wal_archive.push(repo, NAME, segment) is PushOutcome.ALREADY_ARCHIVED
    segment.write_bytes(b"other" * 1000)
    with pytest.raises(WalConflict, match="different content"):
        wal_archive.push(repo, NAME, segment)
    assert wal_archive.read(repo, NAME) == b"wal" * 1000


def test_fetch_writes_atomically_and_reports_absence(tmp_path: Path) -> None:
    repo = memory_repo()
    segment = tmp_path / NAME
    segment.write_bytes(b"x" * 5000)
    wal_archive.push(repo, NAME, segment)
    dest = tmp_path / "RECOVERYXLOG"
    assert wal_archive.fetch(repo, NAME, dest) == 5000
    assert dest.read_bytes() == b"x" * 5000
    with pytest.raises(ObjectNotFound):
        wal_archive.fetch(repo, "00000002.history", tmp_path / "h")
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME, "RECOVERYXLOG"]
