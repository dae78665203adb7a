"""What PostgreSQL's binary files say without a server: ``pg_control``, and the first page
header of a WAL segment file read from disk.

Pure reading of bytes and local files; imports nothing of storage, pipeline or
psycopg, so ``wal-push`` can tell which cluster a segment belongs to (and that
it really is the segment its name claims) without a database connection. The
page header's layout and the check of it against a name live in ``pg.wal``
(pure, no I/O), where the repository can use them too.

Layout of ``pg_control`` (``ControlFileData``, little-endian, the byte order of
every platform we run on): ``system_identifier`` u64 at 0,
``pg_control_version`` u32 at 8, ``catalog_version_no`` u32 at 12; these
never move. Further fields shift between major versions (PostgreSQL 17 put
``wal_level`` into the checkpoint copy), so the WAL sizes are found from the
``floatFormat`` constant 1234567.0 that precedes ``blcksz``, ``relseg_size``,
``xlog_blcksz`` and ``xlog_seg_size``, and the whole prefix is verified by
the CRC-32C that ends the struct. Checked against ``pg_controldata`` of a
PostgreSQL 15 cluster (1 MiB and 16 MiB segments).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from pathlib import Path

from janua_backup.errors import FormatError, InputError
from janua_backup.pg.wal import (
    DEFAULT_SEGMENT_SIZE,
    LONG_HEADER_BYTES,
    SegmentHeader,
    check_segment_header,
    header_segment,
    parse_segment_header,
)

CONTROL_FILE = Path("global", "pg_control")
_SCAN_LIMIT = 512  # PG_CONTROL_MAX_SAFE_SIZE: the used part of pg_control stays within one sector
_FLOAT_FORMAT = struct.pack("<d", 1234567.0)
_READ_ATTEMPTS = 10  # PostgreSQL rewrites pg_control in place; a torn read passes on retry
_RETRY_DELAY_S = 0.01


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


def read_segment_header(path: Path) -> SegmentHeader:
    """The long page header of the segment file at ``path``, sanity-checked; whether it is
    the segment its name says is ``wal.check_segment_header``."""
    return parse_segment_header(_read_bytes(path, LONG_HEADER_BYTES, "cannot read its header"))


def read_named_segment_header(
    path: Path,
    *,
    segment_size: int | None = None,
    system_identifier: int | None = None,
    pg_major: int | None = None,
) -> SegmentHeader:
    """The header of the segment (or ``.partial``) file at ``path``, refused unless it
    starts the segment its file name gives (``wal.check_segment_header``).

    For ``wal-push``: a file PostgreSQL renamed for reuse, or one copied under
    the wrong name, would be archived as a segment it is not. Without
    ``segment_size`` the header's own is believed (for the first look, before
    the repository's marker, which gives the cluster's, is known).
    """
    head = _read_bytes(path, LONG_HEADER_BYTES, "cannot read its header")
    if segment_size is None:
        try:
            segment_size = parse_segment_header(head).segment_size
        except FormatError:
            segment_size = DEFAULT_SEGMENT_SIZE  # the check below says what is wrong
    segment = header_segment(path.name, segment_size)
    if segment is None:
        raise InputError(f"{path.name} is not a WAL segment: it has no page header")
    return check_segment_header(head, segment, system_identifier, pg_major=pg_major)
