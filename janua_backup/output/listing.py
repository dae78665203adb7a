"""``list``, ``info`` and ``info ID`` for people and machines.

``list`` is a line per backup; ``info`` the repository first, then the same
lines; ``info ID`` one backup in full. Times and sizes go through
``output.format`` so every command writes them the same way.
"""

from __future__ import annotations

from typing import Any

from janua_backup.commands.info import BackupInfo, InfoResult
from janua_backup.output import _span, drill_json, window_json
from janua_backup.output.format import age, emit_json, size, utc
from janua_backup.repository.drills import DrillReport


def listing(result: InfoResult, as_json: bool) -> None:
    if as_json:
        emit_json(_head_json(result) | {"backups": [_backup_json(b) for b in result.backups]})
        return
    print(f"repository {result.repository}" + ("" if result.system_identifier else " (empty)"))
    _table(result)


def summary(result: InfoResult, as_json: bool) -> None:
    """``info``: what the repository is, what WAL it holds, then the list."""
    if as_json:
        emit_json(_summary_json(result) | {"backups": [_backup_json(b) for b in result.backups]})
        return
    print(f"repository    {result.repository}")
    if result.system_identifier is None:
        print("              empty: no WAL archived and no backup taken yet")
        return
    major = f"PostgreSQL {result.pg_major}" if result.pg_major else "PostgreSQL ?"
    seg = size(result.wal_segment_size) if result.wal_segment_size else "?"
    print(f"cluster       {result.system_identifier} ({major}, WAL segments of {seg})")
    key = f"on (key {result.key_id})" if result.key_id else "on" if result.encrypted else "off"
    print(f"encryption    {key}")
    incomplete = f", {len(result.incomplete)} incomplete" if result.incomplete else ""
    print(f"backups       {result.backup_count}{incomplete}")
    wal = (
        f"{result.oldest_wal} .. {result.newest_wal} ({result.wal_segments} segments)"
        if result.wal_segments
        else "none"
    )
    print(f"WAL archived  {wal}")
    print(f"timelines     {', '.join(str(t) for t in result.timelines) or '-'}")
    print()
    _table(result)


def backup_detail(result: InfoResult, as_json: bool) -> None:
    """``info ID``: one backup, with everything known about it."""
    (b,) = result.backups
    if as_json:
        emit_json(_summary_json(result) | {"backup": _detail_json(b)})
        return
    m, w = b.manifest, b.window
    kind = "incremental" if m.backup_type == "incr" else "full"
    rows = [
        ("backup", m.backup_id),
        ("type", kind + (f" on top of {m.depends_on}" if m.depends_on else "")),
        ("chain", " <- ".join(b.chain)),
        ("taken on", f"the {m.source}" + (f" {m.host}" if m.host else "")),
        ("start", f"{utc(m.start_time)} at LSN {m.start_lsn} on timeline {m.timeline}"),
        ("stop", f"{utc(m.stop_time)} at LSN {m.stop_lsn}"),
        ("WAL needed", " .. ".join(b.wal_needed)),
        ("recoverable", _span(w)),
        ("timelines", w.path.describe() if w.path is not None else str(w.timeline)),
        ("PostgreSQL", _pg_version(m.pg_version_num)),
        ("size", f"{size(m.original_size_bytes)} in {len(m.files)} entries"),
        ("stored", _stored(b)),
        ("storage", _codec(b)),
        ("pin", _pin(b)),
    ]
    if w.restorable and w.missing_segment:
        rows.append(("gap", f"WAL {w.missing_segment} missing: later WAL is unreachable"))
    for label, text in rows:
        print(f"{label:<13} {text}")
    print(f"{'drills':<13} {'none' if not b.drills else len(b.drills)}")
    for report in b.drills:
        print(f"  {_drill_row(report)}")


def _table(result: InfoResult) -> None:
    if not result.backups:
        print("no backups yet")
    else:
        print(
            f"{'BACKUP':<17} {'TYPE':<4} {'PARENT':<17} {'STARTED':<16} {'SIZE':>10} "
            f"{'STORED':>10} {'DRILL':<6} {'PIN':<3}  RECOVERABLE WINDOW (UTC)"
        )
    for b in result.backups:
        m, w = b.manifest, b.window
        span = _span(w)
        if w.restorable and w.missing_segment:
            span += f"; gap at {w.missing_segment}"
        print(
            f"{m.backup_id:<17} {m.backup_type:<4} {m.depends_on or '-':<17} "
            f"{age(m.start_time):<16} {size(m.original_size_bytes):>10} "
            f"{size(m.stored_size_bytes):>10} {_drill_cell(b.last_drill):<6} "
            f"{'yes' if b.pinned else '-':<3}  {span}"
        )
        if m.source != "primary":  # rare, and a restore from it behaves differently
            print(f"{'':<17} taken on the {m.source}" + (f" {m.host}" if m.host else ""))
    for incomplete in result.incomplete:
        print(f"{incomplete:<17} incomplete (no manifest; removed by the next backup)")


def _drill_cell(report: DrillReport | None) -> str:
    if report is None:
        return "never"
    return "passed" if report.passed else "FAILED"


def _drill_row(r: DrillReport) -> str:
    verdict = "passed" if r.passed else "FAILED"
    rpo = f", RPO {r.rpo_s:.0f}s" if r.rpo_s is not None else ""
    line = f"{utc(r.finished)} {verdict}, RTO {r.total_s:.0f}s{rpo} (drill {r.drill_id})"
    if not r.passed:
        line += f": {r.summary}"
    return line


def _pin(b: BackupInfo) -> str:
    if not b.pinned:
        return "not pinned"
    return f"pinned: {b.pin_reason}" if b.pin_reason else "pinned (no reason given)"


def _stored(b: BackupInfo) -> str:
    m = b.manifest
    text = f"{size(m.stored_size_bytes)} by this backup"
    if m.depends_on:
        text += (
            f"; {len(m.referenced_files)} files ({size(b.referenced_bytes)}) referenced from "
            f"earlier backups; a restore reads {size(m.fetch_stored_bytes)}"
        )
    return text


def _codec(b: BackupInfo) -> str:
    m = b.manifest
    codec = m.compression
    if codec != "none":
        codec += f" level {m.compression_level}"
    return f"{codec}, " + ("encrypted" if m.encrypted else "not encrypted")


def _pg_version(num: int) -> str:
    return f"{num // 10000}.{num % 10000}" if num >= 100000 else str(num)


def _head_json(result: InfoResult) -> dict[str, Any]:
    return {
        "repository": result.repository,
        "system_identifier": _sysid(result.system_identifier),
        "encrypted": result.encrypted,
        "incomplete_backups": result.incomplete,
        "wal_segments": result.wal_segments,
        "newest_wal": result.newest_wal,
    }


def _summary_json(result: InfoResult) -> dict[str, Any]:
    return _head_json(result) | {
        "pg_major": result.pg_major,
        "wal_segment_size": result.wal_segment_size,
        "key_id": result.key_id,
        "backup_count": result.backup_count,
        "oldest_wal": result.oldest_wal,
        "timelines": list(result.timelines),
    }


def _sysid(value: int | None) -> str | None:
    """A string: 64 bits do not survive a double (jq, JavaScript)."""
    return str(value) if value is not None else None


def _backup_json(b: BackupInfo) -> dict[str, Any]:
    m = b.manifest
    return {
        "backup_id": m.backup_id,
        "type": m.backup_type,
        "depends_on": m.depends_on,
        "start_time": m.start_time.isoformat(),
        "stop_time": m.stop_time.isoformat(),
        "start_lsn": str(m.start_lsn),
        "stop_lsn": str(m.stop_lsn),
        "timeline": m.timeline,
        "pg_version": m.pg_version_num,
        "size_bytes": m.original_size_bytes,
        "stored_bytes": m.stored_size_bytes,
        "window": window_json(b.window),
        "last_drill": drill_json(b.last_drill),
        "pinned": b.pinned,
        "pin_reason": b.pin_reason,
        "source": m.source,
        "host": m.host or None,
    }


def _detail_json(b: BackupInfo) -> dict[str, Any]:
    m = b.manifest
    first, last = b.wal_needed
    return _backup_json(b) | {
        "chain": list(b.chain),
        "wal_needed": {"first": first, "last": last},
        "files": len(m.files),
        "referenced_files": len(m.referenced_files),
        "referenced_bytes": b.referenced_bytes,
        "restore_stored_bytes": m.fetch_stored_bytes,
        "compression": m.compression,
        "compression_level": m.compression_level,
        "encrypted": m.encrypted,
        "drills": [drill_json(r) for r in b.drills],
    }
