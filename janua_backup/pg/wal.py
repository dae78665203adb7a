"""PostgreSQL's WAL vocabulary as types: LSNs, segment names, timelines and their histories,
and the long page header that opens every segment file.

Pure: no I/O, nothing of storage, pipeline or psycopg; imports only ``errors``. Names
are validated exactly as PostgreSQL writes them (uppercase hex): a name that merely
looks right would be archived under a key PostgreSQL never asks for. Bad input raises
``InputError``; a damaged ``.history`` file from the archive raises ``FormatError``.
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from janua_backup.errors import FormatError, InputError, RepositoryMismatch, TargetOutOfRange

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
MIN_SEGMENT_SIZE = 1024 * 1024
MAX_SEGMENT_SIZE = 1024 * 1024 * 1024
_LOG_SPAN = 1 << 32  # WAL bytes per "log id", the middle 8 hex digits of a segment name
_MAX_TLI = 0xFFFFFFFF

_LSN_RE = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
_SEGMENT_RE = re.compile(r"([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})")
_HISTORY_LINE_RE = re.compile(r"([0-9]+)\s+([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8})(?:\s+(.*))?")


def check_segment_size(size_bytes: int) -> int:
    """Return ``size_bytes`` if initdb could have chosen it (power of two, 1 MiB to 1 GiB)."""
    if not MIN_SEGMENT_SIZE <= size_bytes <= MAX_SEGMENT_SIZE or size_bytes & (size_bytes - 1):
        raise InputError(f"WAL segment size {size_bytes} is not a power of two, 1 MiB to 1 GiB")
    return size_bytes


def _check_timeline(timeline: int) -> int:
    if not 1 <= timeline <= _MAX_TLI:
        raise InputError(f"timeline {timeline} is out of range (1 to {_MAX_TLI})")
    return timeline


@dataclass(frozen=True, slots=True, order=True, repr=False)
class Lsn:
    """A WAL position: a byte offset in the cluster's WAL stream (PostgreSQL's ``pg_lsn``)."""

    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value < 1 << 64:
            raise InputError(f"LSN {self.value} is outside the 64-bit WAL address space")

    @classmethod
    def parse(cls, text: str) -> Lsn:
        """Parse PostgreSQL's ``X/Y`` form (two groups of 1 to 8 hex digits)."""
        match = _LSN_RE.fullmatch(text)
        if match is None:
            raise InputError(
                f"'{text}' is not an LSN; expected the form X/Y with 1 to 8 hex digits "
                "on each side, like 16/B374D848"
            )
        return cls((int(match[1], 16) << 32) | int(match[2], 16))

    def __str__(self) -> str:
        return f"{self.value >> 32:X}/{self.value & 0xFFFFFFFF:X}"

    def __repr__(self) -> str:
        return f"Lsn('{self}')"

    def __add__(self, other: int) -> Lsn:
        if not isinstance(other, int):
            return NotImplemented
        return Lsn(self.value + other)

    @overload
    def __sub__(self, other: Lsn) -> int: ...
    @overload
    def __sub__(self, other: int) -> Lsn: ...
    def __sub__(self, other: Lsn | int) -> int | Lsn:
        """``Lsn - Lsn`` is a distance in bytes; ``Lsn - int`` is an earlier position."""
        if isinstance(other, Lsn):
            return self.value - other.value
        if isinstance(other, int):
            return Lsn(self.value - other)
        return NotImplemented


@dataclass(frozen=True, slots=True, order=True)
class WalSegment:
    """One WAL segment file. Field order makes the ordering (timeline, log, seg): name order."""

    timeline: int
    log: int
    seg: int
    segment_size: int = DEFAULT_SEGMENT_SIZE

    def __post_init__(self) -> None:
        check_segment_size(self.segment_size)
        _check_timeline(self.timeline)
        if not 0 <= self.log <= 0xFFFFFFFF:
            raise InputError(f"WAL log id {self.log} is out of range")
        per_log = segments_per_log(self.segment_size)
        if not 0 <= self.seg < per_log:
            size_mib = self.segment_size >> 20
            raise InputError(
                f"segment {self.seg:08X} is beyond {per_log - 1:08X}, the last "
                f"of a log id with {size_mib} MiB segments"
            )

    @classmethod
    def parse(cls, name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> WalSegment:
        match = _SEGMENT_RE.fullmatch(name)
        if match is None:
            raise InputError(
                f"'{name}' is not a WAL segment name (24 uppercase hex digits, "
                "like 000000010000000A000000FF)"
            )
        return cls(int(match[1], 16), int(match[2], 16), int(match[3], 16), segment_size)

    @classmethod
    def from_number(cls, timeline: int, number: int, segment_size: int) -> WalSegment:
        """The segment with PostgreSQL's ``XLogSegNo`` ``number`` (start LSN // size)."""
        per_log = segments_per_log(segment_size)
        return cls(timeline, number // per_log, number % per_log, segment_size)

    @classmethod
    def from_lsn(
        cls, timeline: int, lsn: Lsn, segment_size: int = DEFAULT_SEGMENT_SIZE
    ) -> WalSegment:
        """The segment holding the byte at ``lsn`` (PostgreSQL's ``XLByteToSeg``)."""
        number = lsn.value // check_segment_size(segment_size)
        return cls.from_number(timeline, number, segment_size)

    @classmethod
    def before_lsn(
        cls, timeline: int, lsn: Lsn, segment_size: int = DEFAULT_SEGMENT_SIZE
    ) -> WalSegment:
        """The segment holding the byte before ``lsn``: the last one needed to reach it.

        PostgreSQL's ``XLByteToPrevSeg``, as ``pg_walfile_name()`` answers for a stop LSN.
        """
        if lsn.value == 0:
            raise InputError("no WAL segment precedes LSN 0/0")
        return cls.from_lsn(timeline, lsn - 1, segment_size)

    @property
    def name(self) -> str:
        return f"{self.timeline:08X}{self.log:08X}{self.seg:08X}"

    @property
    def number(self) -> int:
        return self.log * segments_per_log(self.segment_size) + self.seg

    @property
    def start_lsn(self) -> Lsn:
        return Lsn(self.number * self.segment_size)

    @property
    def end_lsn(self) -> Lsn:
        """The first LSN after this segment (exclusive end)."""
        return Lsn((self.number + 1) * self.segment_size)

    def contains(self, lsn: Lsn) -> bool:
        return self.start_lsn <= lsn < self.end_lsn

    def next(self) -> WalSegment:
        return WalSegment.from_number(self.timeline, self.number + 1, self.segment_size)

    def __str__(self) -> str:
        return self.name


def segments_per_log(segment_size: int) -> int:
    """Segments per log id: the last 8 hex digits of a name count up to this, exclusive."""
    return _LOG_SPAN // check_segment_size(segment_size)


def segments_between(
    timeline: int, start_lsn: Lsn, end_lsn: Lsn, segment_size: int = DEFAULT_SEGMENT_SIZE
) -> Iterator[WalSegment]:
    """The segments holding the WAL bytes ``[start_lsn, end_lsn)`` on one timeline.

    The end is exclusive, like a backup's stop LSN: PostgreSQL waits for the
    segment holding the byte before it, not the one starting at it.
    """
    if end_lsn < start_lsn:
        raise InputError(f"WAL range end {end_lsn} is before its start {start_lsn}")
    if end_lsn == start_lsn:
        return
    first = WalSegment.from_lsn(timeline, start_lsn, segment_size).number
    last = WalSegment.before_lsn(timeline, end_lsn, segment_size).number
    for number in range(first, last + 1):
        yield WalSegment.from_number(timeline, number, segment_size)


class WalFileKind(enum.Enum):
    SEGMENT = "segment"
    PARTIAL = "partial"  # a segment a promoted standby left unfinished
    HISTORY = "history"  # %08X.history: the switch points leading to a timeline
    BACKUP_LABEL = "backup_label"  # <segment>.%08X.backup: the backup history file


_KIND_PATTERNS = (
    (WalFileKind.SEGMENT, re.compile(r"[0-9A-F]{24}")),
    (WalFileKind.PARTIAL, re.compile(r"[0-9A-F]{24}\.partial")),
    (WalFileKind.HISTORY, re.compile(r"[0-9A-F]{8}\.history")),
    (WalFileKind.BACKUP_LABEL, re.compile(r"[0-9A-F]{24}\.[0-9A-F]{8}\.backup")),
)


def classify(name: str) -> WalFileKind:
    """What kind of file PostgreSQL hands ``archive_command`` / asks ``restore_command`` for."""
    for kind, pattern in _KIND_PATTERNS:
        if pattern.fullmatch(name):
            if name.startswith("00000000"):
                raise InputError(f"'{name}' is not a WAL file name: timeline 0 does not exist")
            return kind
    raise InputError(
        f"'{name}' is not a WAL file name; expected a segment (24 uppercase hex digits), "
        "a segment followed by .partial, a timeline history (8 hex digits.history) "
        "or a backup history file (segment.8 hex digits.backup)"
    )


def timeline_of(name: str) -> int:
    """The timeline a WAL file name belongs to (its first 8 hex digits)."""
    classify(name)
    return int(name[:8], 16)


def history_file_name(timeline: int) -> str:
    return f"{_check_timeline(timeline):08X}.history"


def backup_history_file_name(
    timeline: int, start_lsn: Lsn, segment_size: int = DEFAULT_SEGMENT_SIZE
) -> str:
    """The ``.backup`` file PostgreSQL archives when a backup stops: start segment + offset."""
    segment = WalSegment.from_lsn(timeline, start_lsn, segment_size)
    return f"{segment.name}.{start_lsn.value % segment_size:08X}.backup"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """``timeline`` ended at ``switch_lsn``, where its child on this history's path began."""

    timeline: int
    switch_lsn: Lsn
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TimelineSpan:
    """``timeline`` holds the WAL of ``[begin_lsn, end_lsn)``; ``None`` means still open."""

    timeline: int
    begin_lsn: Lsn
    end_lsn: Lsn | None

    def contains(self, lsn: Lsn) -> bool:
        return self.begin_lsn <= lsn and (self.end_lsn is None or lsn < self.end_lsn)


@dataclass(frozen=True, slots=True)
class TimelineHistory:
    """The content of a ``.history`` file: the ancestors of one timeline, oldest first.

    Each entry says where an ancestor ended; the timeline the file is named
    after (``target_tli`` below) holds everything from the last switch on.
    """

    entries: tuple[HistoryEntry, ...] = ()

    def __post_init__(self) -> None:
        # PostgreSQL's readTimeLineHistory() refuses the same: TLIs must increase.
        for before, after in zip(self.entries, self.entries[1:], strict=False):
            if after.timeline <= before.timeline or after.switch_lsn < before.switch_lsn:
                raise FormatError(
                    f"timeline history goes backwards: timeline {before.timeline} ends at "
                    f"{before.switch_lsn}, then {after.timeline} at {after.switch_lsn}"
                )

    @classmethod
    def parse(cls, text: str) -> TimelineHistory:
        """Parse ``parentTLI<TAB>switch LSN<TAB>reason`` lines; skip ``#`` comments, blanks."""
        entries: list[HistoryEntry] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            match = _HISTORY_LINE_RE.fullmatch(line)
            if match is None or int(match[1]) < 1 or int(match[1]) > _MAX_TLI:
                raise FormatError(
                    f"timeline history line {number} is not "
                    f"'timeline<TAB>switch LSN<TAB>reason': {line!r}"
                )
            entries.append(HistoryEntry(int(match[1]), Lsn.parse(match[2]), match[3] or ""))
        return cls(tuple(entries))

    def switch_lsn(self, from_tli: int) -> Lsn | None:
        """Where ``from_tli`` ended on this path; ``None`` if it has no switch here.

        ``None`` covers the history's own timeline (still open) and timelines
        that are not its ancestors; ``wal_path`` tells the two apart.
        """
        for entry in self.entries:
            if entry.timeline == from_tli:
                return entry.switch_lsn
        return None

    def timeline_at(self, lsn: Lsn, target_tli: int) -> int:
        """The timeline whose WAL holds ``lsn`` when recovering towards ``target_tli``."""
        _check_target(self, target_tli)
        return next((e.timeline for e in self.entries if lsn < e.switch_lsn), target_tli)

    def timeline_of_segment(self, number: int, segment_size: int, target_tli: int) -> int:
        # A segment holding a switch point exists on both timelines; recovery
        # (XLogFileReadAnyTLI) reads it from the newer one.
        _check_target(self, target_tli)
        size = check_segment_size(segment_size)
        switches = (e for e in self.entries if number < e.switch_lsn.value // size)
        return next((e.timeline for e in switches), target_tli)


def _check_target(history: TimelineHistory, target_tli: int) -> None:
    _check_timeline(target_tli)
    if history.entries and history.entries[-1].timeline >= target_tli:
        raise FormatError(
            f"the history of timeline {target_tli} lists timeline "
            f"{history.entries[-1].timeline}, which is not older; wrong .history file?"
        )


def wal_path(history_of_target: TimelineHistory, target_tli: int) -> list[TimelineSpan]:
    """Which timeline holds which LSN range, from 0/0 to the open end of ``target_tli``."""
    _check_target(history_of_target, target_tli)
    spans: list[TimelineSpan] = []
    begin = Lsn(0)
    for entry in history_of_target.entries:
        spans.append(TimelineSpan(entry.timeline, begin, entry.switch_lsn))
        begin = entry.switch_lsn
    spans.append(TimelineSpan(target_tli, begin, None))
    return spans


def wal_needed(
    history_of_target: TimelineHistory,
    target_tli: int,
    *,
    backup_tli: int,
    backup_start_lsn: Lsn,
    backup_checkpoint_lsn: Lsn | None = None,
) -> list[TimelineSpan]:
    """The spans of WAL a backup on ``backup_tli`` replays to reach ``target_tli``.

    PostgreSQL refuses a target timeline that forked off the backup's timeline
    before the backup's checkpoint ("requested timeline is not a child of this
    server's history"); this says so before any byte is restored.
    """
    path = wal_path(history_of_target, target_tli)
    checkpoint = backup_start_lsn if backup_checkpoint_lsn is None else backup_checkpoint_lsn
    for index, span in enumerate(path):
        if span.timeline != backup_tli:
            continue
        if span.end_lsn is not None and checkpoint > span.end_lsn:
            raise TargetOutOfRange(
                f"timeline {target_tli} forked off timeline {backup_tli} at {span.end_lsn}, "
                f"before this backup ({checkpoint}); choose a backup taken before "
                f"{span.end_lsn} or another target timeline"
            )
        return [TimelineSpan(backup_tli, backup_start_lsn, span.end_lsn), *path[index + 1 :]]
    chain = ", ".join(str(span.timeline) for span in path)
    raise TargetOutOfRange(
        f"timeline {target_tli} does not descend from timeline {backup_tli} of this backup "
        f"(its path is {chain}); choose a backup taken on one of those timelines"
    )


def path_segments(
    spans: Sequence[TimelineSpan], end_lsn: Lsn, segment_size: int = DEFAULT_SEGMENT_SIZE
) -> Iterator[WalSegment]:
    """The segments recovery reads along ``spans`` up to ``end_lsn`` (exclusive).

    A segment holding a switch point is taken from the newer timeline, as
    recovery does, so each segment number appears once.
    """
    size = check_segment_size(segment_size)
    if not spans or end_lsn < spans[0].begin_lsn:
        raise InputError(f"WAL end {end_lsn} is before the start of the path")
    for span in spans:
        first = span.begin_lsn.value // size
        if span.end_lsn is not None and end_lsn > span.end_lsn:
            stop = span.end_lsn.value // size
            yield from (WalSegment.from_number(span.timeline, n, size) for n in range(first, stop))
            continue
        stop = -(-end_lsn.value // size) if end_lsn > span.begin_lsn else first
        yield from (WalSegment.from_number(span.timeline, n, size) for n in range(first, stop))
        return


# -- the first page of a segment ----------------------------------------------------------
#
# ``XLogLongPageHeaderData`` (little-endian, the byte order of every platform we run on):
# ``xlp_magic`` u16, ``xlp_info`` u16, ``xlp_tli`` u32, ``xlp_pageaddr`` u64,
# ``xlp_rem_len`` u32, 4 bytes of padding, ``xlp_sysid`` u64, ``xlp_seg_size`` u32,
# ``xlp_xlog_blcksz`` u32: 40 bytes.

XLP_LONG_HEADER = 0x0002
_XLP_ALL_FLAGS = 0x000F
_LONG_HEADER = struct.Struct("<HHIQI4xQII")
LONG_HEADER_BYTES = _LONG_HEADER.size
PAGE_MAGIC = {13: 0xD106, 14: 0xD10D, 15: 0xD110, 16: 0xD113, 17: 0xD116, 18: 0xD118}
"""``XLOG_PAGE_MAGIC`` of each major version: a server reads only its own."""
_PAGE_MAGIC_MAJOR = {magic: major for major, magic in PAGE_MAGIC.items()}


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
    if len(first_page) < LONG_HEADER_BYTES:
        raise FormatError(
            f"a WAL segment starts with a {LONG_HEADER_BYTES}-byte header; got {len(first_page)}"
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
    if not 1024 <= blcksz <= 65536 or blcksz & (blcksz - 1):
        return f"WAL block size {blcksz} is not a power of two between 1 kB and 64 kB"
    if pageaddr % seg_size:
        return f"page address {Lsn(pageaddr)} is not at a segment boundary"
    return ""


def header_segment(name: str, segment_size: int) -> WalSegment | None:
    """The segment whose first page header a WAL file called ``name`` starts with.

    A ``.partial`` file is its segment renamed (the same header); history and
    backup history files are text and have no page header: None.
    """
    kind = classify(name)
    if kind is WalFileKind.PARTIAL:
        return WalSegment.parse(name.removesuffix(".partial"), segment_size)
    if kind is WalFileKind.SEGMENT:
        return WalSegment.parse(name, segment_size)
    return None


def check_segment_header(
    head: bytes,
    segment: WalSegment,
    system_identifier: int | None,
    *,
    pg_major: int | None = None,
) -> SegmentHeader:
    """The header ``head`` starts with, if it is the first page of ``segment`` of this cluster.

    The one check of a segment against its name, used wherever a segment is
    pushed, fetched, prefetched or verified: an object stored under another
    segment's name would otherwise be replayed as that segment, and recovery
    would stop early at "unexpected pageaddr" and promote with data missing.
    It is PostgreSQL's own test (``XLogReaderValidatePageHeader``), no stricter:
    the magic of the major version (when known), the long-header bit, the
    system identifier (when known), the segment size, and the page address,
    which must be the start of the segment the name gives. The timeline may be
    older than the name's: the segment holding a timeline switch is copied
    from the old timeline, first page included (PostgreSQL only checks that
    timelines never go backwards from page to page); it can never be newer.
    ``FormatError`` for a file that is not this segment, ``RepositoryMismatch``
    for another cluster's.
    """
    if len(head) < LONG_HEADER_BYTES:
        raise FormatError(
            f"WAL segment {segment.name} is {len(head)} bytes long, shorter than the "
            f"{LONG_HEADER_BYTES}-byte header every segment starts with"
        )
    try:
        header = parse_segment_header(head)
    except FormatError as exc:
        raise FormatError(f"WAL segment {segment.name} is damaged: {exc.message}") from exc
    expected_magic = PAGE_MAGIC.get(pg_major) if pg_major is not None else None
    if expected_magic is not None and header.magic != expected_magic:
        written_by = header.pg_major or f"a version with page magic 0x{header.magic:04X}"
        raise FormatError(
            f"WAL segment {segment.name} was written by PostgreSQL {written_by}, "
            f"not by PostgreSQL {pg_major} like this repository"
        )
    if system_identifier is not None and header.system_identifier != system_identifier:
        raise RepositoryMismatch(
            f"WAL segment {segment.name} belongs to the cluster with system identifier "
            f"{header.system_identifier}, but this repository holds cluster "
            f"{system_identifier}; check the repository settings of this server"
        )
    if header.segment_size != segment.segment_size:
        raise FormatError(
            f"WAL segment {segment.name} says its segments are {header.segment_size} bytes, "
            f"not {segment.segment_size} like this cluster's; it is another cluster's file"
        )
    if header.page_address != segment.start_lsn or header.timeline > segment.timeline:
        raise FormatError(
            f"the file named {segment.name} holds segment {header.segment.name} (its header "
            f"says page address {header.page_address} on timeline {header.timeline}); "
            "it is not the segment its name says"
        )
    return header


def checked_segment(
    chunks: Iterable[bytes],
    segment: WalSegment,
    system_identifier: int | None,
    *,
    pg_major: int | None = None,
    whole: bool = True,
) -> Iterator[bytes]:
    """Pass ``chunks`` (a segment file's bytes) through, ``check_segment_header`` on the way.

    The header is checked as soon as its bytes went by, before the rest is
    read; a file too short for it at the end. ``whole``: the file must also be
    exactly one segment long (a ``.partial`` file need not be). Meant as the
    input of ``atomic_write``: raised even after the last chunk, the error
    comes before the rename, so bytes that fail never get the segment's name.
    """
    head = b""
    size = 0
    source = iter(chunks)
    try:
        for chunk in source:
            if len(head) < LONG_HEADER_BYTES:
                head += chunk[: LONG_HEADER_BYTES - len(head)]
                if len(head) == LONG_HEADER_BYTES:
                    check_segment_header(head, segment, system_identifier, pg_major=pg_major)
            size += len(chunk)
            yield chunk
    finally:
        # Refused early, the source (a download) is closed now, not when collected.
        close = getattr(source, "close", None)
        if close is not None:
            close()
    if len(head) < LONG_HEADER_BYTES:
        check_segment_header(head, segment, system_identifier, pg_major=pg_major)
    if whole and size != segment.segment_size:
        raise FormatError(
            f"WAL segment {segment.name} is {size} bytes long, not the segment size "
            f"{segment.segment_size}"
        )
