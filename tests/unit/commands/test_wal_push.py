"""wal-push (synchronous) of a file whose first page header is not the segment its name
gives: refused with one sentence, nothing stored, not even the repository marker."""

from __future__ import annotations

from pathlib import Path

import pytest

from janua_backup.commands import wal_push
from janua_backup.commands.common import open_repo
from janua_backup.config import CompressionSettings, RepoSettings, Settings
from janua_backup.errors import FormatError, RepositoryMismatch
from janua_backup.pg.wal import WalSegment
from janua_backup.repository import marker, wal_archive
from tests.unit.pg.builders import SYSID, control_bytes, segment_header

MIB = 1024 * 1024


def write_segment(path: Path, holds: WalSegment, *, sysid: int = SYSID) -> Path:
    header = segment_header(
        tli=holds.timeline, pageaddr=holds.start_lsn.value, sysid=sysid, seg_size=MIB
    )
    path.write_bytes(header.ljust(MIB, b"\1"))
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "repo").mkdir()
    return Settings(
        repository=RepoSettings(url=f"file://{tmp_path / 'repo'}"),
        compression=CompressionSettings(codec="gzip"),
    )


def test_wal_push_refuses_a_file_whose_header_names_another_segment(
    settings: Settings, tmp_path: Path
) -> None:
    seg_7, seg_4 = WalSegment.from_number(1, 7, MIB), WalSegment.from_number(1, 4, MIB)
    path = write_segment(tmp_path / seg_7.name, seg_4)  # a recycled file, say
    with pytest.raises(
        FormatError, match=f"the file named {seg_7.name} holds segment {seg_4.name}"
    ):
        wal_push.run(settings, str(path))
    partial = write_segment(tmp_path / f"{seg_7.name}.partial", seg_4)
    with pytest.raises(FormatError, match=f"holds segment {seg_4.name}"):
        wal_push.run(settings, str(partial))
    repo = open_repo(settings)
    assert list(wal_archive.list_archived(repo)) == []
    assert marker.read(repo) is None


def test_wal_push_checks_the_header_against_the_repository_marker(
    settings: Settings, tmp_path: Path
) -> None:
    seg_7 = WalSegment.from_number(1, 7, MIB)
    repo = open_repo(settings)
    marker.ensure(repo, system_identifier=SYSID, wal_segment_size=16 * MIB, pg_major=15)
    with pytest.raises(FormatError, match="segments are 1048576 bytes, not 16777216"):
        wal_push.run(settings, str(write_segment(tmp_path / seg_7.name, seg_7)))
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(RepositoryMismatch):
        wal_push.run(settings, str(write_segment(other / seg_7.name, seg_7, sysid=SYSID + 1)))
    assert list(wal_archive.list_archived(repo)) == []


def test_wal_push_stores_the_segment_its_name_gives(settings: Settings, tmp_path: Path) -> None:
    seg_7 = WalSegment.from_number(1, 7, MIB)
    assert wal_push.run(settings, str(write_segment(tmp_path / seg_7.name, seg_7))).outcome == (
        "stored"
    )
    switch = WalSegment.from_number(2, 7, MIB)  # timeline 2 began inside segment 7
    path = write_segment(tmp_path / switch.name, seg_7)  # its first page is timeline 1's
    assert wal_push.run(settings, str(path)).outcome == "stored"
    names = [w.name for w in wal_archive.list_archived(open_repo(settings))]
    assert names == [seg_7.name, switch.name]


def test_history_and_backup_files_have_no_header_to_check(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked through the data directory's pg_control (the archiver's working directory)."""
    (tmp_path / "global").mkdir()
    (tmp_path / "global" / "pg_control").write_bytes(control_bytes(seg_size=MIB))
    monkeypatch.chdir(tmp_path)
    seg_7 = WalSegment.from_number(1, 7, MIB)
    assert wal_push.run(settings, str(write_segment(tmp_path / seg_7.name, seg_7))).outcome == (
        "stored"
    )
    label = tmp_path / f"{seg_7.name}.00000028.backup"
    label.write_text("START WAL LOCATION: 0/700028 (file 000000010000000000000007)\n")
    history = tmp_path / "00000002.history"
    history.write_text("1\t0/700100\tno recovery target specified\n")
    assert wal_push.run(settings, str(label)).outcome == "stored"
    assert wal_push.run(settings, str(history)).outcome == "stored"
