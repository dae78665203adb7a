"""The repository check's report: a table and the problems for people, or JSON."""

from __future__ import annotations

from typing import Any

from janua_backup.commands.verify_repo import RepoVerifyResult
from janua_backup.output.format import emit_json, rfc3339, size, utc
from janua_backup.repository.integrity import BackupCheck


def render(result: RepoVerifyResult, as_json: bool) -> None:
    if as_json:
        emit_json(to_json(result))
        return
    print(
        f"repository {result.repository}: {_count(len(result.backups), 'backup')}, "
        f"{_count(result.objects_checked, 'object')} and "
        f"{_count(result.wal_checked, 'WAL segment')} read "
        f"({size(result.bytes_read)} in {result.duration_s:.1f}s)"
    )
    if result.backups:
        print(f"{'BACKUP':<18} {'OBJECTS':<12} RESTORABLE UP TO (UTC)")
    for b in result.backups:
        print(f"{b.backup_id:<18} {_objects(b):<12} {_reach(b)}")
    if result.ok:
        print(result.summary)
        return
    print(f"repository check FAILED, {_count(len(result.problems), 'problem')}:")
    for problem in result.problems:
        print(f"  - {problem.message}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _objects(b: BackupCheck) -> str:
    if b.objects_failed:
        return f"{b.objects_failed}/{b.objects_checked} BAD"
    return f"{b.objects_checked} ok"


def _reach(b: BackupCheck) -> str:
    if b.restorable_to_lsn is None:
        return f"NOT RESTORABLE: WAL {b.missing_segment} missing"
    reach = (
        f"{utc(b.restorable_to_time)} (LSN {b.restorable_to_lsn}, "
        f"timeline {b.restorable_to_timeline})"
    )
    if b.objects_failed:
        return f"NOT RESTORABLE: {_count(b.objects_failed, 'damaged object')}"
    if b.branches:
        return "two branches: pick with --target-timeline (see below)"
    if b.missing_segment:
        return f"{reach}; gap at {b.missing_segment}"
    return reach


def to_json(result: RepoVerifyResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "summary": result.summary,
        "repository": result.repository,
        "objects_checked": result.objects_checked,
        "bytes_read": result.bytes_read,
        "wal_checked": result.wal_checked,
        "duration_s": round(result.duration_s, 3),
        "backups": [
            {
                "backup_id": b.backup_id,
                "timeline": b.timeline,
                "stop_time": rfc3339(b.stop_time),
                "objects_checked": b.objects_checked,
                "objects_failed": b.objects_failed,
                "bytes_read": b.bytes_read,
                "restorable": b.restorable,
                "restorable_to_time": rfc3339(b.restorable_to_time),
                "restorable_to_lsn": str(b.restorable_to_lsn) if b.restorable_to_lsn else None,
                "restorable_to_timeline": b.restorable_to_timeline,
                "timeline_path": b.timeline_path,
                "branches": b.branches,
                "last_wal": b.last_segment,
                "missing_wal": b.missing_segment,
            }
            for b in result.backups
        ],
        "problems": [
            {
                "kind": str(p.kind),
                "backup_id": p.backup_id,
                "key": p.key,
                "message": p.message,
            }
            for p in result.problems
        ],
    }
