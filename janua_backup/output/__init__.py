"""Results for people (humanize sizes, ages, tables) or for machines (JSON).

Only this module turns results into text; commands return dataclasses.
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

from janua_backup.commands.backup import BackupResult
from janua_backup.commands.info import InfoResult
from janua_backup.commands.restore import RestorePlan, RestoreResult
from janua_backup.output.format import age, emit_json, size, utc
from janua_backup.repository.drills import DrillReport
from janua_backup.repository.window import Window


def window_json(w: Window) -> dict[str, Any]:
    return {
        "earliest_time": w.earliest_time.isoformat(),
        "earliest_lsn": str(w.earliest_lsn),
        "latest_time": w.latest_time.isoformat() if w.latest_time else None,
        "latest_lsn": str(w.latest_lsn) if w.latest_lsn else None,
        "timeline": w.timeline,
        "restorable": w.restorable,
        "first_wal": w.first_segment,
        "last_wal": w.last_segment,
        "missing_wal": w.missing_segment,
        "timelines": list(w.path.timelines) if w.path else [w.timeline],
        "timeline_path": w.path.describe() if w.path else str(w.timeline),
        "branches": _branches_json(w),
    }


def _branches_json(w: Window) -> list[dict[str, Any]] | None:
    """The living branches of an ambiguous path (restore needs --target-timeline)."""
    if w.conflict is None:
        return None
    return [
        {
            "timeline": b.timeline,
            "fork_lsn": str(b.fork) if b.fork else None,
            "newest_wal": b.newest_segment,
        }
        for b in w.conflict.branches
    ]


def _span(w: Window) -> str:
    if w.conflict is not None:
        picks = " or ".join(str(b.timeline) for b in w.conflict.branches)
        return (
            f"{utc(w.earliest_time)} .. two branches at {w.conflict.fork}: "
            f"pick with --target-timeline ({picks})"
        )
    if w.restorable:
        # The end to the microsecond: it is the last archived commit, and a target
        # time must be strictly before it.
        return f"{utc(w.earliest_time)} .. {_to_the_microsecond(w.latest_time)} " + (
            "(last commit)" if w.latest_time != w.earliest_time else "(no commit archived)"
        )
    return f"NOT RESTORABLE: WAL {w.missing_segment} missing"


def drill_json(report: DrillReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    return {
        "drill_id": report.drill_id,
        "passed": report.passed,
        "finished": report.finished.isoformat(),
        "total_s": report.total_s,
        "rpo_s": report.rpo_s,
        "summary": report.summary,
    }


def _drill_line(report: DrillReport | None) -> str:
    if report is None:
        return "never verified by a drill"
    verdict = "passed" if report.passed else "FAILED"
    took = f"{report.total_s:.0f}s to restore and recover"
    return f"last drill {verdict} {age(report.finished)} ({took})"


def backup(result: BackupResult, as_json: bool) -> None:
    m = result.manifest
    if as_json:
        emit_json(
            {
                "backup_id": m.backup_id,
                "start_lsn": str(m.start_lsn),
                "stop_lsn": str(m.stop_lsn),
                "start_time": m.start_time.isoformat(),
                "stop_time": m.stop_time.isoformat(),
                "timeline": m.timeline,
                "size_bytes": m.original_size_bytes,
                "stored_bytes": m.stored_size_bytes,
                "files": len(m.files),
                "duration_s": round(result.duration_s, 3),
                "removed_incomplete": list(result.cleaned),
                "pinned": result.pinned,
                "type": m.backup_type,
                "requested_type": result.requested_type,
                "depends_on": m.depends_on,
                "referenced_files": len(m.referenced_files),
                "referenced_bytes": result.referenced_bytes,
                "stored_files": result.stored_files,
                "note": result.note or None,
                "source": m.source,
            }
        )
        return
    rate = m.original_size_bytes / result.duration_s if result.duration_s else 0
    print(
        f"backup {m.backup_id} complete: {size(m.original_size_bytes)} in {len(m.files)} entries, "
        f"stored {size(m.stored_size_bytes)}, {result.duration_s:.1f}s ({size(int(rate))}/s)"
    )
    print(
        f"  WAL {m.start_lsn} .. {m.stop_lsn} on timeline {m.timeline}; restorable from "
        f"{utc(m.stop_time)}"
    )
    if m.depends_on:
        print(
            f"  incremental on top of {m.depends_on}: {len(m.referenced_files)} files referenced "
            f"({size(result.referenced_bytes)}), {result.stored_files} stored"
        )
    if m.source != "primary":
        print(f"  taken on the {m.source} {m.host}")
    if result.note:
        print(f"  {result.note}")
    for removed in result.cleaned:
        print(f"  removed the leftovers of interrupted backup {removed}")


def info(result: InfoResult, as_json: bool) -> None:
    if as_json:
        emit_json(
            {
                "repository": result.repository,
                "system_identifier": result.system_identifier,
                "encrypted": result.encrypted,
                "wal_segments": result.wal_segments,
                "newest_wal": result.newest_wal,
                "incomplete_backups": result.incomplete,
                "backups": [
                    {
                        "backup_id": b.manifest.backup_id,
                        "type": b.manifest.backup_type,
                        "start_time": b.manifest.start_time.isoformat(),
                        "stop_time": b.manifest.stop_time.isoformat(),
                        "start_lsn": str(b.manifest.start_lsn),
                        "stop_lsn": str(b.manifest.stop_lsn),
                        "timeline": b.manifest.timeline,
                        "pg_version": b.manifest.pg_version_num,
                        "size_bytes": b.manifest.original_size_bytes,
                        "stored_bytes": b.manifest.stored_size_bytes,
                        "window": window_json(b.window),
                        "last_drill": drill_json(b.last_drill),
                        "pinned": b.pinned,
                        "source": b.manifest.source,
                        "host": b.manifest.host or None,
                    }
                    for b in result.backups
                ],
            }
        )
        return
    print(
        f"repository {result.repository}"
        + (
            f" (cluster {result.system_identifier}" + (", encrypted)" if result.encrypted else ")")
            if result.system_identifier
            else " (empty)"
        )
    )
    print(f"WAL: {result.wal_segments} segments archived, newest {result.newest_wal or '-'}")
    if not result.backups:
        print("no backups yet")
    header = f"{'BACKUP':<18} {'STARTED':<22} {'SIZE':>10} {'STORED':>10}  RECOVERABLE WINDOW (UTC)"
    if result.backups:
        print(header)
    for b in result.backups:
        m, w = b.manifest, b.window
        span = _span(w)
        print(
            f"{m.backup_id:<18} {age(m.start_time):<22} {size(m.original_size_bytes):>10} "
            f"{size(m.stored_size_bytes):>10}  {span}"
        )
        pin = "; pinned (expire keeps it)" if b.pinned else ""
        print(f"{'':<18} {_drill_line(b.last_drill)}{pin}")
        print(f"{'':<18} taken on the {m.source}" + (f" {m.host}" if m.host else ""))
        if w.path is not None and (w.path.switches or w.conflict is not None):
            print(f"{'':<18} timelines: {w.path.describe()}")
        if w.restorable and w.missing_segment:
            print(f"{'':<18} gap in the archive at {w.missing_segment}: later WAL is unreachable")
    for incomplete in result.incomplete:
        print(f"{incomplete:<18} incomplete (no manifest; removed by the next backup)")


def plan(p: RestorePlan, as_json: bool) -> None:
    if as_json:
        return  # the result carries the plan
    out = sys.stderr
    print("restore plan:", file=out)
    print(f"  backup      {p.backup_id} (consistent at {p.backup_stop_time})", file=out)
    if p.depends_on:
        print(f"  type        incremental on top of {p.depends_on}", file=out)
    print(f"  target      {p.target}", file=out)
    print(f"  WAL needed  {p.first_wal} .. {p.last_wal or '?'} (timeline {p.timeline})", file=out)
    if p.timeline_path:
        print(f"  timelines   {p.timeline_path}", file=out)
    print(f"  to fetch    {size(p.stored_bytes)} stored, {size(p.fetch_bytes)} restored", file=out)
    delta = " (delta: files already there with the right SHA-256 are kept)" if p.delta else ""
    print(f"  into        {p.pgdata}{delta}", file=out)
    print(f"  archiving   {_archiving(p)}", file=out)


def _archiving(p: RestorePlan) -> str:
    what = {"off": "off", "on": "on", "preserve": "unchanged"}[p.archive_mode]
    return f"{what} ({p.archive_reason})" if p.archive_reason else what


def restore(result: RestoreResult, as_json: bool) -> None:
    p = result.plan
    if as_json:
        emit_json(
            {
                "backup_id": p.backup_id,
                "target": p.target,
                "pgdata": p.pgdata,
                "first_wal": p.first_wal,
                "last_wal": p.last_wal,
                "timeline": p.timeline,
                "timeline_path": p.timeline_path,
                "target_timeline": p.target_timeline,
                "written_bytes": result.written_bytes,
                "duration_s": round(result.duration_s, 3),
                "files_written": result.files_written,
                "start_command": result.start_command,
                "delta": p.delta,
                "fetched_files": result.fetched_files,
                "fetched_bytes": result.fetched_bytes,
                "reused_files": result.reused_files,
                "reused_bytes": result.reused_bytes,
                "removed_entries": result.removed_entries,
                "archive_mode": p.archive_mode,
                "archive_reason": p.archive_reason,
            }
        )
        return
    print(
        f"restored backup {p.backup_id} into {p.pgdata}: {size(result.written_bytes)} "
        f"in {result.duration_s:.1f}s"
    )
    if p.delta:
        print(
            f"  delta: reused {result.reused_files} files ({size(result.reused_bytes)}), "
            f"fetched {result.fetched_files} ({size(result.fetched_bytes)}), "
            f"removed {result.removed_entries} entries the backup does not have"
        )
    for path in result.files_written:
        print(f"  wrote {path}")
    print(f"PostgreSQL will replay WAL to the {p.target} when started:")
    print(f"  {result.start_command}")


class ProgressMeter:
    """Bytes, rate and ETA on a terminal; silent under cron and in the daemon."""

    def __init__(self, total_bytes: int, label: str) -> None:
        self.total = total_bytes
        self.label = label
        self.done = 0
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last = 0.0
        self.enabled = sys.stderr.isatty()

    def __call__(self, n: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.done += n
            now = time.monotonic()
            if now - self._last < 0.5 and self.done < self.total:
                return
            self._last = now
            rate = self.done / max(now - self._start, 1e-6)
            eta = (self.total - self.done) / rate if rate and self.total > self.done else 0
            if self.total:
                text = (
                    f"{size(self.done)} / {size(self.total)} ({size(int(rate))}/s, ETA {eta:.0f}s)"
                )
            else:  # a backup does not know its size up front
                text = f"{size(self.done)} ({size(int(rate))}/s)"
            sys.stderr.write(f"\r{self.label}: {text}   ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.done:
            sys.stderr.write("\n")


def _to_the_microsecond(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%fZ") if value else "-"
