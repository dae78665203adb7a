"""The records inside WAL segments: where the last transaction in a stretch of WAL ended.

A recovery to a time stops before the first commit or abort record stamped
after that time; with no such record in the archive PostgreSQL ends with
"recovery ended before configured recovery target was reached". So the last
time a backup can be restored to is the newest commit/abort timestamp in its
archived WAL, which only the records themselves tell (an object's
Last-Modified time is when it was archived, later than any commit in it).

Pure: bytes in, records out; nothing of storage, pipeline or psycopg. The
layout is PostgreSQL's (``access/xlog_internal.h``, ``access/xlogrecord.h``,
``access/xact.h``), little-endian, MAXALIGN 8:

- every WAL page (``xlp_xlog_blcksz`` bytes) starts with a page header, long
  (40 bytes) on a segment's first page, short (24) elsewhere; ``xlp_rem_len``
  with ``XLP_FIRST_IS_CONTRECORD`` says how many bytes of a record begun on an
  earlier page come first;
- a record (``XLogRecord``, 24 bytes: ``xl_tot_len``, ``xl_xid``, ``xl_prev``,
  ``xl_info``, ``xl_rmid``, 2 padding, ``xl_crc``) starts at a MAXALIGNed LSN
  and may run over any number of pages (its header too);
- then block headers (ids 0..32), an origin (253), a top-level xid (252) and
  the main data header (255 short, 254 long); the main data ends the record.

Reading stops where valid WAL ends, as PostgreSQL's reader does: a zero
``xl_tot_len`` (the zeroed tail of the current segment), a page whose header
is not the one expected at its address (a recycled segment's stale pages), an
``xl_prev`` that does not point at the record before, or a commit/abort record
whose CRC-32C does not match. Only commit/abort records have their CRC
checked: Python computes CRC-32C at a few MB/s, and those records are small.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from janua_backup.pg.control import crc32c
from janua_backup.pg.wal import Lsn

_PAGE_HEADER = struct.Struct("<HHIQI")  # xlp_magic, xlp_info, xlp_tli, xlp_pageaddr, xlp_rem_len
_LONG_TAIL = struct.Struct("<QII")  # xlp_sysid, xlp_seg_size, xlp_xlog_blcksz at offset 24
SHORT_PAGE_HEADER_BYTES = 24  # MAXALIGN(sizeof(XLogPageHeaderData))
LONG_PAGE_HEADER_BYTES = 40  # MAXALIGN(sizeof(XLogLongPageHeaderData))
XLP_FIRST_IS_CONTRECORD = 0x0001
XLP_LONG_HEADER = 0x0002
XLP_FIRST_IS_OVERWRITE_CONTRECORD = 0x0008  # PostgreSQL 15: a torn record was abandoned

_RECORD = struct.Struct("<IIQBB2xI")  # xl_tot_len, xl_xid, xl_prev, xl_info, xl_rmid, xl_crc
RECORD_HEADER_BYTES = _RECORD.size  # 24: SizeOfXLogRecord
_MAX_RECORD_BYTES = 0x3FFFFFFF  # MaxAllocSize: PostgreSQL never writes a longer record
_CRC_OFFSET = 20  # offsetof(XLogRecord, xl_crc)

RM_XLOG_ID = 0
XLOG_SWITCH = 0x40
RM_XACT_ID = 1
XLOG_XACT_OPMASK = 0x70
XACT_KINDS = {0x00: "commit", 0x30: "commit prepared", 0x20: "abort", 0x40: "abort prepared"}

XLR_MAX_BLOCK_ID = 32
XLR_BLOCK_ID_DATA_SHORT = 255
XLR_BLOCK_ID_DATA_LONG = 254
XLR_BLOCK_ID_ORIGIN = 253
XLR_BLOCK_ID_TOPLEVEL_XID = 252
BKPBLOCK_HAS_IMAGE = 0x10
BKPBLOCK_SAME_REL = 0x80
BKPIMAGE_HAS_HOLE = 0x01
# Which bimg_info bits mean "compressed": one bit before 15, one per method since.
_COMPRESSED_BEFORE_15 = 0x02
_COMPRESSED_SINCE_15 = 0x04 | 0x08 | 0x10
_MAGIC_15 = 0xD110

POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # TimestampTz counts microseconds from here


@dataclass(frozen=True, slots=True)
class XactRecord:
    """A commit or abort record: where it starts and the time it carries."""

    lsn: Lsn
    kind: str  # "commit", "commit prepared", "abort" or "abort prepared"
    xid: int
    time_us: int  # TimestampTz: microseconds since 2000-01-01 00:00 UTC

    @property
    def time(self) -> datetime:
        return POSTGRES_EPOCH + timedelta(microseconds=self.time_us)


def xact_records(chunks: Iterable[bytes], *, stop_lsn: Lsn | None = None) -> Iterator[XactRecord]:
    """The commit and abort records in ``chunks``: WAL that starts at a segment boundary.

    The chunks may hold several consecutive segments (a record is followed
    across the boundary). A record begun before the first byte is skipped
    (``xlp_rem_len``); one that runs past the last byte is incomplete and is
    not returned. ``stop_lsn``: no record starting at or after it is read
    (the bytes after it are read only to finish the record crossing it).
    """
    walk = _Walk(stop_lsn.value if stop_lsn is not None else None)
    for page in _pages(chunks):
        found = walk.page(page)
        yield from found
        if walk.done:
            return


def last_xact(chunks: Iterable[bytes]) -> XactRecord | None:
    """The last commit/abort record in ``chunks`` (see ``xact_records``), if any."""
    last = None
    for last in xact_records(chunks):  # noqa: B007 - the loop variable is the answer
        pass
    return last


def _pages(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Whole WAL pages; the page size comes from the first (long) page header."""
    buf = bytearray()
    size = 0
    for chunk in chunks:
        buf += chunk
        if not size and len(buf) >= LONG_PAGE_HEADER_BYTES:
            size = _LONG_TAIL.unpack_from(buf, SHORT_PAGE_HEADER_BYTES)[2]
            if not 1024 <= size <= 65536 or size & (size - 1):
                return  # not a WAL segment's first page: no records
        if size and len(buf) >= size:
            whole = len(buf) - len(buf) % size
            for offset in range(0, whole, size):
                yield bytes(buf[offset : offset + size])
            del buf[:whole]


@dataclass
class _Partial:
    """A record that runs over the end of a page (or the tail of one begun before the input)."""

    lsn: int  # -1: begun before the first byte read, skipped
    total: int  # xl_tot_len (or, when skipped, the page's xlp_rem_len)
    got: int  # bytes read so far
    data: bytearray  # the bytes read, while the record may be wanted
    wanted: bool = True  # False once the header says it is neither commit/abort nor switch


class _Walk:
    """PostgreSQL's XLogReader, reduced to what finding commit/abort records needs."""

    def __init__(self, stop_lsn: int | None) -> None:
        self.stop_lsn = stop_lsn
        self.done = False
        self.magic = 0
        self.segment_size = 0
        self.page_size = 0
        self.page_lsn = -1  # address of the current page
        self.next_lsn = -1  # where the next record starts
        self.prev_lsn: int | None = None  # start of the last record read (the next one's xl_prev)
        self.partial: _Partial | None = None
        self.compressed = _COMPRESSED_SINCE_15

    def page(self, page: bytes) -> list[XactRecord]:
        magic, info, _tli, pageaddr, rem_len = _PAGE_HEADER.unpack_from(page)
        first = self.page_lsn < 0
        if first:
            self.magic = magic
            self.segment_size, self.page_size = _LONG_TAIL.unpack_from(page, 24)[1:]
            if not info & XLP_LONG_HEADER or not _plausible_segment_size(self.segment_size):
                self.done = True
                return []
            self.page_lsn = pageaddr - self.page_size
            if magic < _MAGIC_15:
                self.compressed = _COMPRESSED_BEFORE_15
        self.page_lsn += self.page_size
        page_lsn = self.page_lsn
        if self.partial is None and self.next_lsn >= page_lsn + self.page_size:
            return []  # after an XLOG_SWITCH: the rest of the segment holds no records
        long = page_lsn % self.segment_size == 0
        if magic != self.magic or pageaddr != page_lsn or bool(info & XLP_LONG_HEADER) != long:
            self.done = True  # a recycled segment's stale page, or not WAL at all
            return []
        pos = LONG_PAGE_HEADER_BYTES if long else SHORT_PAGE_HEADER_BYTES
        found: list[XactRecord] = []
        if first and info & XLP_FIRST_IS_CONTRECORD and rem_len:
            # The tail of a record begun in the previous segment: not ours to read.
            self.partial = _Partial(-1, rem_len, 0, bytearray(), wanted=False)
        if self.partial is not None:
            part = self.partial
            if info & XLP_FIRST_IS_CONTRECORD and rem_len == part.total - part.got:
                pos = self._continue(page, pos, found)
            elif info & XLP_FIRST_IS_OVERWRITE_CONTRECORD:
                self.partial = None  # the torn record was abandoned; records start afresh here
                self.prev_lsn = None  # and the next one's xl_prev is not ours to predict
            else:
                self.done = True
        if not self.done and self.partial is None:
            self.next_lsn = max(self.next_lsn, page_lsn + pos)
            self._records(page, found)
        return found

    def _continue(self, page: bytes, pos: int, found: list[XactRecord]) -> int:
        part = self.partial
        assert part is not None
        take = min(part.total - part.got, self.page_size - pos)
        had = part.got
        part.got += take
        if part.wanted:
            part.data += page[pos : pos + take]
            if had < RECORD_HEADER_BYTES <= part.got:
                if not self._header_fits(part.data, part.lsn):
                    return self.page_size
                part.wanted = _is_wanted(part.data)
                if not part.wanted:
                    part.data = bytearray()
        if part.got == part.total:
            self.partial = None
            self._finish(part.lsn, bytes(part.data), found, end=self.page_lsn + pos + take)
        return pos + take

    def _records(self, page: bytes, found: list[XactRecord]) -> None:
        size = self.page_size
        while not self.done:
            pos = self.next_lsn - self.page_lsn
            if pos >= size:
                return
            if self.stop_lsn is not None and self.next_lsn >= self.stop_lsn:
                self.done = True
                return
            (total,) = struct.unpack_from("<I", page, pos)
            if total < RECORD_HEADER_BYTES or total > _MAX_RECORD_BYTES:
                self.done = True  # zero: the end of the WAL written so far
                return
            lsn = self.next_lsn
            if pos + total > size:  # runs over the page; pos is 8-aligned, so total is here
                head = page[pos:size]
                if len(head) >= RECORD_HEADER_BYTES and not self._header_fits(head, lsn):
                    return
                wanted = len(head) < RECORD_HEADER_BYTES or _is_wanted(head)
                data = bytearray(head if wanted else b"")
                self.partial = _Partial(lsn, total, len(head), data, wanted)
                return
            record = page[pos : pos + total]
            if not self._header_fits(record, lsn):
                return
            kept = record if _is_wanted(record) else b""
            self._finish(lsn, kept, found, end=self.page_lsn + pos + total)

    def _header_fits(self, head: bytes | bytearray, lsn: int) -> bool:
        prev = _RECORD.unpack_from(head)[2]
        if lsn >= 0 and self.prev_lsn is not None and prev != self.prev_lsn:
            self.done = True  # not the record after the last one: stale bytes
            return False
        return True

    def _finish(self, lsn: int, record: bytes, found: list[XactRecord], *, end: int) -> None:
        """The record at ``lsn`` ends at ``end``; ``record`` holds it if it was wanted."""
        self.next_lsn = _maxalign(end)
        if lsn < 0:
            return  # the skipped tail of a record begun before the input
        self.prev_lsn = lsn
        if not record:
            return
        if record[17] == RM_XLOG_ID:  # XLOG_SWITCH: the next record starts the next segment
            self.next_lsn = (lsn // self.segment_size + 1) * self.segment_size
            return
        xact = _xact(lsn, record, self.compressed)
        if xact is None:
            self.done = True  # a damaged commit record: valid WAL ends before it
            return
        found.append(xact)


def _plausible_segment_size(size: int) -> bool:
    return 1 << 20 <= size <= 1 << 30 and not size & (size - 1)


def _maxalign(value: int) -> int:
    return (value + 7) & ~7


def _is_wanted(head: bytes | bytearray) -> bool:
    """A commit/abort record, or XLOG_SWITCH (which ends the segment's records)."""
    info, rmid = head[16], head[17]
    if rmid == RM_XLOG_ID:
        return info & 0xF0 == XLOG_SWITCH
    return rmid == RM_XACT_ID and info & XLOG_XACT_OPMASK in XACT_KINDS


def _xact(lsn: int, record: bytes, compressed: int) -> XactRecord | None:
    _total, xid, _prev, info, _rmid, crc = _RECORD.unpack_from(record)
    if crc32c(record[RECORD_HEADER_BYTES:] + record[:_CRC_OFFSET]) != crc:
        return None
    main = _main_data(record, compressed)
    if main is None or len(main) < 8:
        return None
    (time_us,) = struct.unpack_from("<q", main)
    return XactRecord(Lsn(lsn), XACT_KINDS[info & XLOG_XACT_OPMASK], xid, time_us)


def _main_data(record: bytes, compressed: int) -> bytes | None:
    """The record's main data, after its block headers (PostgreSQL's DecodeXLogRecord)."""
    end, off, datatotal, main_len = len(record), RECORD_HEADER_BYTES, 0, 0
    try:
        while end - off > datatotal:
            block_id = record[off]
            off += 1
            if block_id == XLR_BLOCK_ID_DATA_SHORT:
                main_len = record[off]
                off += 1
                datatotal += main_len
                break
            if block_id == XLR_BLOCK_ID_DATA_LONG:
                (main_len,) = struct.unpack_from("<I", record, off)
                off += 4
                datatotal += main_len
                break
            if block_id == XLR_BLOCK_ID_ORIGIN:
                off += 2
            elif block_id == XLR_BLOCK_ID_TOPLEVEL_XID:
                off += 4
            elif block_id <= XLR_MAX_BLOCK_ID:
                off, datatotal = _block_header(record, off, datatotal, compressed)
            else:
                return None
    except (IndexError, struct.error):
        return None
    if end - off != datatotal:
        return None
    return record[end - main_len :]


def _block_header(record: bytes, off: int, datatotal: int, compressed: int) -> tuple[int, int]:
    fork_flags = record[off]
    (data_len,) = struct.unpack_from("<H", record, off + 1)
    off += 3
    datatotal += data_len
    if fork_flags & BKPBLOCK_HAS_IMAGE:
        image_len, _hole_offset, image_info = struct.unpack_from("<HHB", record, off)
        off += 5
        if image_info & BKPIMAGE_HAS_HOLE and image_info & compressed:
            off += 2  # XLogRecordBlockCompressHeader: hole_length
        datatotal += image_len
    if not fork_flags & BKPBLOCK_SAME_REL:
        off += 12  # RelFileNode
    return off + 4, datatotal  # BlockNumber
