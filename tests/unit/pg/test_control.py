from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from janua_backup.errors import FormatError, InputError, RepositoryMismatch
from janua_backup.pg import control
from janua_backup.pg.control import (
    SegmentHeader,
    crc32c,
    parse_control,
    parse_segment_header,
    read_control,
    read_major_version,
    read_segment_header,
    read_system_identifier,
    verify_segment_header,
)
from janua_backup.pg.wal import Lsn, WalSegment

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
    assert header.info & control.XLP_LONG_HEADER
    assert header.pg_major == 15
    assert header.segment == WalSegment.parse(name, size)
    verify_segment_header(header, WalSegment.parse(name, size), header.system_identifier)
    with pytest.raises(RepositoryMismatch) as caught:
        verify_segment_header(header, WalSegment.parse(name, size), header.system_identifier + 1)
    assert caught.value.exit_code == 23
    with pytest.raises(FormatError, match="not the segment its name says"):
        verify_segment_header(header, WalSegment.parse(name, size).next(), header.system_identifier)


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


def test_parse_segment_header_of_synthetic_bytes() -> None:
    header = parse_segment_header(segment_header(pageaddr=0x5_03000000, tli=3) + bytes(100))
    assert header == SegmentHeader(
        magic=0xD110,
        info=2,
        timeline=3,
        page_address=Lsn.parse("5/3000000"),
        rem_len=0,
        system_identifier=SYSID,
        segment_size=16 * MIB,
        block_size=8192,
    )
    assert header.segment.name == "000000030000000500000003"
    assert parse_segment_header(segment_header(magic=0xD116)).pg_major == 17
    assert parse_segment_header(segment_header(magic=0xD118)).pg_major is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (segment_header()[:39], "40-byte header"),
        (bytes(8192), "magic 0x0000"),
        (segment_header(magic=0x1234), "magic"),
        (segment_header(info=0x0001), "long-header"),
        (segment_header(info=0x0012), "long-header"),
        (segment_header(tli=0), "timeline 0"),
        (segment_header(seg_size=3 * MIB), "segment size"),
        (segment_header(block_size=1000), "block size"),
        (segment_header(pageaddr=0x3002000), "segment boundary"),
    ],
)
def test_parse_segment_header_rejects(raw: bytes, reason: str) -> None:
    with pytest.raises(FormatError, match=reason) as caught:
        parse_segment_header(raw)
    assert caught.value.exit_code == 24


def test_a_recycled_segment_does_not_pass_for_its_new_name(tmp_path: Path) -> None:
    """PostgreSQL renames old segments for reuse; their header still names the old one."""
    path = tmp_path / "000000010000000000000007"
    path.write_bytes(segment_header(pageaddr=0x4000000) + bytes(1000))
    header = read_segment_header(path)
    with pytest.raises(FormatError, match="holds segment 000000010000000000000004"):
        verify_segment_header(header, WalSegment.parse(path.name), SYSID)
