from __future__ import annotations

import threading
from pathlib import Path

import pytest

from janua_backup.errors import ConfigError, ObjectNotFound, WalConflict
from janua_backup.pipeline.stream import EncodeSpec
from janua_backup.repository import layout, wal_archive
from janua_backup.repository.objects import Repo
from janua_backup.repository.wal_archive import PushOutcome
from tests.unit.pipeline.objects import MiB, sample
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


def test_two_nodes_pushing_the_same_segment_with_other_codecs_is_success(tmp_path: Path) -> None:
    """archive_mode = always: the primary and a standby push the same finished segment
    (byte-identical on PostgreSQL 15, see wal_archive's docstring), each with its own
    codec settings. The stored plaintext is compared, so the second push succeeds; any
    other byte, even in the unused tail after a switch, is a conflict and stores nothing."""
    primary = memory_repo(codec="gzip")
    standby = Repo(primary.storage, EncodeSpec(codec="zstd"))
    content = sample(MiB, seed=4) + bytes(MiB)  # records, then the zeroed tail of a switch
    segment = tmp_path / NAME
    segment.write_bytes(content)
    assert wal_archive.push(primary, NAME, segment) is PushOutcome.STORED
    assert wal_archive.push(standby, NAME, segment) is PushOutcome.ALREADY_ARCHIVED
    segment.write_bytes(content[:-1] + b"\x01")
    with pytest.raises(WalConflict, match="different content"):
        wal_archive.push(standby, NAME, segment)
    assert wal_archive.read(primary, NAME) == content


@pytest.mark.parametrize("read_ahead", [0, 17 * MiB], ids=["sequential", "compressed ahead"])
def test_push_checks_before_it_stores_and_a_failed_check_stores_nothing(
    tmp_path: Path, read_ahead: int
) -> None:
    # wal-push overlaps the marker check and the HEAD with the compression: the
    # order of what reaches the store must stay check, HEAD, PUT.
    repo = memory_repo()
    segment = tmp_path / NAME
    segment.write_bytes(sample(3 * MiB, kind="text"))
    before = threading.active_count()

    def refuse() -> None:
        assert repo.storage.head(layout.wal_key(NAME)) is None
        raise ConfigError("not our repository")

    with pytest.raises(ConfigError, match="not our repository"):
        wal_archive.push(repo, NAME, segment, check=refuse, read_ahead_bytes=read_ahead)
    assert list(repo.storage.list()) == []
    assert threading.active_count() == before  # the compressing threads were stopped
    checked: list[str] = []
    outcome = wal_archive.push(
        repo, NAME, segment, check=lambda: checked.append("ok"), read_ahead_bytes=read_ahead
    )
    assert (outcome, checked) == (PushOutcome.STORED, ["ok"])
    assert wal_archive.read(repo, NAME) == segment.read_bytes()
    again = wal_archive.push(repo, NAME, segment, check=lambda: None, read_ahead_bytes=read_ahead)
    assert again is PushOutcome.ALREADY_ARCHIVED


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
