"""What PostgreSQL's binary files say without a server: ``pg_control`` and WAL segment headers.

Pure reading of bytes and local files; imports nothing of storage, pipeline or
psycopg, so ``wal-push`` can tell which cluster a segment belongs to (and that
it really is the segment its name claims) without a database connection.

Layouts (all little-endian, the byte order of every platform we run on):

* ``pg_control`` (``ControlFileData``): ``system_identifier`` u64 at 0,
  ``pg_control_version`` u32 at 8, ``catalog_version_no`` u32 at 12; these
  never move. Further fields shift between major versions (PostgreSQL 17 put
  ``wal_level`` into the checkpoint copy), so the WAL sizes are found from the
  ``floatFormat`` constant 1234567.0 that precedes ``blcksz``, ``relseg_size``,
  ``xlog_blcksz`` and ``xlog_seg_size``, and the whole prefix is verified by
  the CRC-32C that ends the struct. Checked against ``pg_controldata`` of a
  PostgreSQL 15 cluster (1 MiB and 16 MiB segments).
* ``XLogLongPageHeaderData`` at the start of each segment: ``xlp_magic`` u16,
  ``xlp_info`` u16, ``xlp_tli`` u32, ``xlp_pageaddr`` u64, ``xlp_rem_len`` u32,
  4 bytes of padding, ``xlp_sysid`` u64, ``xlp_seg_size`` u32,
  ``xlp_xlog_blcksz`` u32: 40 bytes.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from pathlib import Path

from janua_backup.errors import FormatError, InputError, RepositoryMismatch
from janua_backup.pg.wal import Lsn, WalSegment, check_segment_size

CONTROL_FILE = Path("global", "pg_control")
_SCAN_LIMIT = 512  # PG_CONTROL_MAX_SAFE_SIZE: the used part of pg_control stays within one sector
_FLOAT_FORMAT = struct.pack("<d", 1234567.0)
_READ_ATTEMPTS = 10  # PostgreSQL rewrites pg_control in place; a torn read passes on retry
_RETRY_DELAY_S = 0.01

XLP_LONG_HEADER = 0x0002
_XLP_ALL_FLAGS = 0x000F
_LONG_HEADER = struct.Struct("<HHIQI4xQII")
_PAGE_MAGIC_MAJOR = {0xD106: 13, 0xD10D: 14, 0xD110: 15, 0xD113: 16, 0xD116: 17}


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), the checksum PostgreSQL puts in pg_control and WAL records."""
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class ControlData:
    """The facts janua-backup needs from ``global/pg_control``."""

    system_identifier: int
    pg_control_version: int
    catalog_version_no: int
    wal_segment_size: int
    wal_block_size: int
    block_size: int


def _is_power_of_two(value: int, low: int, high: int) -> bool:
    return low <= value <= high and value & (value - 1) == 0


def _find_crc_end(data: bytes, after: int) -> int | None:
    """The offset of the CRC that covers all bytes before it, searched past ``after``."""
    limit = min(len(data), _SCAN_LIMIT) - 4
    crc = crc32c(data[:after])
    for offset in range(after, limit + 1, 4):
        if crc == int.from_bytes(data[offset : offset + 4], "little"):
            return offset
        crc = crc32c(data[offset : offset + 4], crc)
    return None


def parse_control(data: bytes) -> ControlData:
    """Decode ``pg_control`` bytes; ``FormatError`` if they are not a valid control file."""
    if len(data) < 64:
        raise FormatError(f"pg_control is {len(data)} bytes long; a valid one has 8192")
    sysid, control_version, catalog_version = struct.unpack_from("<QII", data, 0)
    window = data[:_SCAN_LIMIT]
    anchor = next(
        (o for o in range(16, len(window) - 24, 4) if window[o : o + 8] == _FLOAT_FORMAT), None
    )
    if anchor is None:
        raise FormatError(
            f"pg_control (version {control_version}) has no floatFormat marker; "
            "the file is damaged or from a big-endian machine"
        )
    block_size, _relseg, wal_block_size, seg_size = struct.unpack_from("<4I", data, anchor + 8)
    if _find_crc_end(data, anchor + 24) is None:
        raise FormatError(
            "pg_control's CRC does not match its contents; the file is damaged "
            "(or was being rewritten: retry)"
        )
    if not _is_power_of_two(seg_size, 1 << 20, 1 << 30) or not _is_power_of_two(
        wal_block_size, 1024, 65536
    ):
        raise FormatError(
            f"pg_control gives WAL segment size {seg_size} and WAL block size "
            f"{wal_block_size}; this layout (version {control_version}) is not understood"
        )
    return ControlData(
        sysid, control_version, catalog_version, seg_size, wal_block_size, block_size
    )


def _read_bytes(path: Path, size: int, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(size)
    except FileNotFoundError as exc:
        raise InputError(f"{path} does not exist; {what}") from exc
    except OSError as exc:
        raise InputError(
            f"cannot read {path} ({exc.strerror}); run janua-backup as the operating "
            "system user that owns the PostgreSQL data directory"
        ) from exc


def read_control(pgdata: Path) -> ControlData:
    """Read and verify ``global/pg_control``, retrying a read torn by a concurrent rewrite."""
    path = pgdata / CONTROL_FILE
    for attempt in range(1, _READ_ATTEMPTS + 1):
        data = _read_bytes(path, 8192, f"is {pgdata} a PostgreSQL data directory?")
        try:
            return parse_control(data)
        except FormatError:
            if attempt == _READ_ATTEMPTS:
                raise
            time.sleep(_RETRY_DELAY_S)
    raise AssertionError("unreachable")  # pragma: no cover


def read_system_identifier(pgdata: Path) -> int:
    """The cluster's ``Database system identifier`` as ``pg_controldata`` prints it."""
    return read_control(pgdata).system_identifier


def read_major_version(pgdata: Path) -> int:
    """The major version in ``PG_VERSION`` (``15``), which initdb writes once."""
    text = _read_bytes(pgdata / "PG_VERSION", 64, f"is {pgdata} a PostgreSQL data directory?")
    try:
        return int(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{pgdata / 'PG_VERSION'} does not hold a version number") from exc


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    """The long page header at the start of a WAL segment."""

    magic: int
    info: int
    timeline: int
    page_address: Lsn
    rem_len: int
    system_identifier: int
    segment_size: int
    block_size: int

    @property
    def pg_major(self) -> int | None:
        """The major version that wrote the segment, if its ``XLOG_PAGE_MAGIC`` is known."""
        return _PAGE_MAGIC_MAJOR.get(self.magic)

    @property
    def segment(self) -> WalSegment:
        """The segment this header says it starts (timeline and page address)."""
        return WalSegment.from_lsn(self.timeline, self.page_address, self.segment_size)


def parse_segment_header(first_page: bytes) -> SegmentHeader:
    """Decode and sanity-check the first 40 bytes of a WAL segment."""
    if len(first_page) < _LONG_HEADER.size:
        raise FormatError(
            f"a WAL segment starts with a {_LONG_HEADER.size}-byte header; got {len(first_page)}"
        )
    magic, info, tli, pageaddr, rem_len, sysid, seg_size, blcksz = _LONG_HEADER.unpack_from(
        first_page
    )
    problem = _header_problem(magic, info, tli, pageaddr, seg_size, blcksz)
    if problem:
        raise FormatError(f"not a WAL segment header: {problem}")
    return SegmentHeader(magic, info, tli, Lsn(pageaddr), rem_len, sysid, seg_size, blcksz)


def _header_problem(
    magic: int, info: int, tli: int, pageaddr: int, seg_size: int, blcksz: int
) -> str:
    # Every XLOG_PAGE_MAGIC since 9.0 is 0xD0xx or 0xD1xx; zero means a zero-filled file.
    if magic >> 8 not in (0xD0, 0xD1):
        return f"magic 0x{magic:04X} is not PostgreSQL's (zero-filled or foreign file?)"
    if not info & XLP_LONG_HEADER or info & ~_XLP_ALL_FLAGS:
        return f"xlp_info 0x{info:04X} lacks the long-header bit of a segment's first page"
    if tli == 0:
        return "timeline 0"
    try:
        check_segment_size(seg_size)
    except InputError:
        return f"segment size {seg_size} is not a power of two between 1 MiB and 1 GiB"
    if not _is_power_of_two(blcksz, 1024, 65536):
        return f"WAL block size {blcksz} is not a power of two between 1 kB and 64 kB"
    if pageaddr % seg_size:
        return f"page address {Lsn(pageaddr)} is not at a segment boundary"
    return ""


def read_segment_header(path: Path) -> SegmentHeader:
    return parse_segment_header(_read_bytes(path, _LONG_HEADER.size, "cannot read its header"))


def verify_segment_header(
    header: SegmentHeader, segment: WalSegment, system_identifier: int
) -> None:
    """Check a segment's header against its name and the repository's cluster.

    A recycled segment (renamed ahead of use) still carries its old page
    address; archiving it under the new name would corrupt the archive.
    """
    if header.system_identifier != system_identifier:
        raise RepositoryMismatch(
            f"WAL segment {segment.name} belongs to the cluster with system identifier "
            f"{header.system_identifier}, but this repository holds cluster "
            f"{system_identifier}; check the repository settings of this server"
        )
    if header.segment != segment:
        raise FormatError(
            f"the file named {segment.name} holds segment {header.segment.name} "
            f"({header.segment_size} bytes per segment); it is not the segment its name says"
        )
