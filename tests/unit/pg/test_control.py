from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from janua_backup.errors import FormatError, InputError, RepositoryMismatch
from janua_backup.pg import control, wal
from janua_backup.pg.control import (
    crc32c,
    parse_control,
    read_control,
    read_major_version,
    read_named_segment_header,
    read_segment_header,
    read_system_identifier,
)
from janua_backup.pg.wal import WalSegment, check_segment_header

from .builders import CATVERSION_15, MIB, SYSID, control_bytes, segment_header
from .conftest import Cluster


def test_crc32c_known_answer() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(b"6789", crc32c(b"12345")) == crc32c(b"123456789")


# --- real files from initdb ----------------------------------------------------------------


@pytest.mark.parametrize("cluster_name", ["pg_cluster", "pg_cluster_1mib"])
def test_read_control_agrees_with_pg_controldata(
    cluster_name: str, request: pytest.FixtureRequest
) -> None:
    cluster: Cluster = request.getfixturevalue(cluster_name)
    facts = read_control(cluster.pgdata)
    expected = cluster.controldata
    assert facts.system_identifier == int(expected["Database system identifier"])
    assert facts.pg_control_version == int(expected["pg_control version number"])
    assert facts.catalog_version_no == int(expected["Catalog version number"])
    assert facts.wal_segment_size == int(expected["Bytes per WAL segment"])
    assert facts.wal_block_size == int(expected["WAL block size"])
    assert facts.block_size == int(expected["Database block size"])
    assert read_system_identifier(cluster.pgdata) == facts.system_identifier
    assert read_major_version(cluster.pgdata) == 15


@pytest.mark.parametrize("cluster_name", ["pg_cluster", "pg_cluster_1mib"])
def test_real_segment_header_names_its_cluster_and_segment(
    cluster_name: str, request: pytest.FixtureRequest
) -> None:
    cluster: Cluster = request.getfixturevalue(cluster_name)
    name = cluster.controldata["Latest checkpoint's REDO WAL file"]
    size = int(cluster.controldata["Bytes per WAL segment"])
    header = read_segment_header(cluster.pgdata / "pg_wal" / name)
    assert header.system_identifier == int(cluster.controldata["Database system identifier"])
    assert header.segment_size == size
    assert header.block_size == int(cluster.controldata["WAL block size"])
    assert header.timeline == 1
    assert header.info & wal.XLP_LONG_HEADER
    assert header.pg_major == 15
    assert header.segment == WalSegment.parse(name, size)
    head = (cluster.pgdata / "pg_wal" / name).read_bytes()[:40]
    sysid = header.system_identifier
    assert check_segment_header(head, WalSegment.parse(name, size), sysid, pg_major=15) == header
    with pytest.raises(RepositoryMismatch) as caught:
        check_segment_header(head, WalSegment.parse(name, size), sysid + 1)
    assert caught.value.exit_code == 23
    with pytest.raises(FormatError, match="not the segment its name says"):
        check_segment_header(head, WalSegment.parse(name, size).next(), sysid)
    with pytest.raises(FormatError, match="written by PostgreSQL 15, not by PostgreSQL 16"):
        check_segment_header(head, WalSegment.parse(name, size), sysid, pg_major=16)


# --- synthetic bytes -------------------------------------------------------------------------


def test_parse_control_of_a_synthetic_file() -> None:
    facts = parse_control(control_bytes(seg_size=64 * MIB))
    assert facts.system_identifier == SYSID
    assert facts.pg_control_version == 1300
    assert facts.catalog_version_no == CATVERSION_15
    assert facts.wal_segment_size == 64 * MIB
    assert facts.wal_block_size == 8192


def test_parse_control_finds_fields_that_moved() -> None:
    """A later layout with more fields in front still parses: the markers are found, not assumed."""
    facts = parse_control(control_bytes(control_version=1800, shift=16, seg_size=2 * MIB))
    assert facts.wal_segment_size == 2 * MIB
    assert facts.pg_control_version == 1800


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:40],  # truncated
        lambda data: data[:100] + bytes([data[100] ^ 1]) + data[101:],  # a flipped bit: CRC
        lambda data: data.replace(bytes.fromhex("0000000087d63241"), bytes(8)),  # no marker
        lambda data: bytes(8192),
    ],
)
def test_parse_control_rejects_damage(damage: Callable[[bytes], bytes]) -> None:
    with pytest.raises(FormatError):
        parse_control(damage(control_bytes()))


def test_parse_control_rejects_an_impossible_segment_size() -> None:
    with pytest.raises(FormatError, match="segment size"):
        parse_control(control_bytes(seg_size=3 * MIB))


def test_read_control_retries_a_torn_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = iter([b"torn" * 2048, control_bytes()])
    monkeypatch.setattr(control, "_read_bytes", lambda *_args: next(reads))
    monkeypatch.setattr(control, "_RETRY_DELAY_S", 0)
    assert read_control(tmp_path).system_identifier == SYSID


def test_read_control_gives_up_on_a_damaged_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control, "_RETRY_DELAY_S", 0)
    (tmp_path / "global").mkdir()
    (tmp_path / "global" / "pg_control").write_bytes(bytes(8192))
    with pytest.raises(FormatError):
        read_control(tmp_path)


def test_read_control_of_a_directory_that_is_not_pgdata(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="data directory") as caught:
        read_system_identifier(tmp_path)
    assert caught.value.exit_code == 4
    with pytest.raises(InputError):
        read_major_version(tmp_path)
    (tmp_path / "PG_VERSION").write_text("fifteen\n")
    with pytest.raises(FormatError):
        read_major_version(tmp_path)


def test_a_recycled_segment_does_not_pass_for_its_new_name(tmp_path: Path) -> None:
    """PostgreSQL renames old segments for reuse; their header still names the old one."""
    path = tmp_path / "000000010000000000000007"
    path.write_bytes(segment_header(pageaddr=0x4000000) + bytes(1000))
    assert read_segment_header(path).segment.name == "000000010000000000000004"
    with pytest.raises(FormatError, match="holds segment 000000010000000000000004"):
        read_named_segment_header(path)


def test_read_named_segment_header_checks_partial_files_and_the_cluster(tmp_path: Path) -> None:
    path = tmp_path / "000000010000000000000004.partial"
    path.write_bytes(segment_header(pageaddr=0x4000000) + bytes(1000))
    assert read_named_segment_header(path).page_address.value == 0x4000000
    with pytest.raises(RepositoryMismatch):
        read_named_segment_header(path, system_identifier=SYSID + 1)
    with pytest.raises(FormatError, match="segments are 16777216 bytes, not 1048576"):
        read_named_segment_header(path, segment_size=MIB)
    short = tmp_path / "000000010000000000000005"
    short.write_bytes(b"\xd1")
    with pytest.raises(FormatError, match="000000010000000000000005 is 1 bytes long"):
        read_named_segment_header(short)
    history = tmp_path / "00000002.history"
    history.write_text("1\t0/4000000\tno recovery target specified\n")
    with pytest.raises(InputError, match="no page header"):
        read_named_segment_header(history)
