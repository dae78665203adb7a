"""The drill report for people (a short summary) or machines (the stored JSON)."""

from __future__ import annotations

import json

from janua_backup.commands.verify import DrillResult
from janua_backup.output.format import emit_json, size, utc
from janua_backup.repository import drills


def render(result: DrillResult, as_json: bool) -> None:
    r = result.report
    if as_json:
        data = json.loads(drills.to_json(r))
        data["report_key"] = result.report_key
        data["kept_dir"] = result.kept_dir
        emit_json(data)
        return
    verdict = "PASSED" if r.passed else "FAILED"
    print(f"drill {verdict}: backup {r.backup_id} to {r.target}")
    print(
        f"  restore {r.restore_s:.1f}s ({size(r.restored_bytes)}), WAL replay {r.replay_s:.1f}s, "
        f"total {r.total_s:.1f}s"
    )
    if r.recovered_to_lsn:
        print(f"  recovered to {utc(r.recovered_to_time)} (LSN {r.recovered_to_lsn})")
    if r.rpo_s is not None or r.rpo_bytes is not None:
        rpo = f"{r.rpo_s:.0f}s" if r.rpo_s is not None else "?"
        behind = size(r.rpo_bytes) if r.rpo_bytes is not None else "?"
        print(f"  behind the newest archived WAL ({r.newest_wal}): {rpo}, {behind} of WAL")
    if r.error:
        print(f"  error: {r.error}")
    for c in r.checks:
        label = "skip" if c.skipped else "ok  " if c.ok else "FAIL"
        print(f"  {label} {c.name}: {c.message}")
    if r.server_log_tail:
        print("  server log (last lines):")
        for line in r.server_log_tail.splitlines():
            print(f"    {line}")
    if result.report_key:
        print(f"  report stored at {result.report_key}")
    if result.kept_dir:
        print(f"  scratch directory kept: {result.kept_dir}")
