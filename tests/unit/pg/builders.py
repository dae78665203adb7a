"""Synthetic PostgreSQL files for the pg unit tests (layouts as in janua_backup.pg.control)."""

from __future__ import annotations

import struct

from janua_backup.pg.control import crc32c

SYSID = 7312345678901234567
CATVERSION_15 = 202209061
MIB = 1024 * 1024


def control_bytes(
    *,
    sysid: int = SYSID,
    control_version: int = 1300,
    catversion: int = CATVERSION_15,
    seg_size: int = 16 * MIB,
    wal_block_size: int = 8192,
    shift: int = 0,
) -> bytes:
    """A pg_control with PostgreSQL 13-17's layout; ``shift`` bytes inserted before floatFormat
    mimic a future version that grows the fields in front of it."""
    head = struct.pack("<QII", sysid, control_version, catversion)
    filler = bytes(range(256))[: 208 - len(head)] + bytes(shift)  # floatFormat at 0xD0 in 1300
    anchor = struct.pack("<d", 1234567.0)
    sizes = struct.pack("<4I", 8192, 131072, wal_block_size, seg_size)
    tail = struct.pack("<4I", 64, 32, 1996, 2048) + b"\x01\0\0\0" + struct.pack("<I", 0)
    data = head + filler + anchor + sizes + tail + bytes(range(32))  # mock auth nonce
    data += struct.pack("<I", crc32c(data))
    return data.ljust(8192, b"\0")


def segment_header(
    *,
    magic: int = 0xD110,
    info: int = 0x0002,
    tli: int = 1,
    pageaddr: int = 0x3000000,
    rem_len: int = 0,
    sysid: int = SYSID,
    seg_size: int = 16 * MIB,
    block_size: int = 8192,
) -> bytes:
    return struct.pack(
        "<HHIQI4xQII", magic, info, tli, pageaddr, rem_len, sysid, seg_size, block_size
    )
