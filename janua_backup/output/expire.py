"""The expire report: what went (or would go), the space freed, and why the rest stays."""

from __future__ import annotations

from typing import Any

from janua_backup.commands.expire import ExpireResult
from janua_backup.output.format import emit_json, rfc3339, size, utc


def render(result: ExpireResult, as_json: bool) -> None:
    if as_json:
        emit_json(to_json(result))
        return
    verb = "would remove" if result.dry_run else "removed"
    head = "expire (dry run, nothing deleted)" if result.dry_run else "expire"
    print(f"{head}: {result.repository}, recovery window from {utc(result.window_start)}")
    for b in result.expired:
        print(
            f"  {verb} backup {b.backup_id} (consistent at {utc(b.stop_time)}): "
            f"{size(b.stored_bytes)} in {_count(b.objects, 'object')}"
        )
    for backup_id in result.incomplete_removed:
        print(f"  {verb} the leftovers of interrupted backup {backup_id}")
    if result.wal_deleted:
        print(
            f"  {verb} {_count(result.wal_deleted, 'WAL file')} "
            f"({result.wal_first_deleted} .. {result.wal_last_deleted}): "
            f"{size(result.wal_deleted_bytes)}"
        )
    else:
        print("  no WAL to remove: none is older than the oldest kept backup")
    for k in result.kept:
        print(f"  keeps backup {k.backup_id}: {k.reason}")
    if not result.kept and not result.expired:
        print("  no backups yet")
    freed = "would free" if result.dry_run else "freed"
    print(f"{freed} {size(result.freed_bytes)} in {result.duration_s:.1f}s")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def to_json(result: ExpireResult) -> dict[str, Any]:
    return {
        "repository": result.repository,
        "dry_run": result.dry_run,
        "window_start": rfc3339(result.window_start),
        "kept": [{"backup_id": k.backup_id, "reason": k.reason} for k in result.kept],
        "expired": [
            {
                "backup_id": b.backup_id,
                "stop_time": rfc3339(b.stop_time),
                "stored_bytes": b.stored_bytes,
                "objects": b.objects,
            }
            for b in result.expired
        ],
        "wal_deleted": result.wal_deleted,
        "wal_deleted_bytes": result.wal_deleted_bytes,
        "wal_first_deleted": result.wal_first_deleted,
        "wal_last_deleted": result.wal_last_deleted,
        "incomplete_removed": list(result.incomplete_removed),
        "incomplete_bytes": result.incomplete_bytes,
        "freed_bytes": result.freed_bytes,
        "duration_s": round(result.duration_s, 3),
    }
