"""``check`` results: one line per step for people, or JSON for machines and monitoring."""

from __future__ import annotations

from janua_backup.commands.check import CheckResult, Status
from janua_backup.output.format import emit_json

_LABELS = {Status.OK: "ok", Status.WARNING: "warn", Status.FAILED: "FAIL", Status.SKIPPED: "skip"}


def render(result: CheckResult, as_json: bool) -> None:
    if as_json:
        emit_json(
            {
                "ok": result.ok,
                "summary": result.summary,
                "archived_wal": result.archived_wal,
                "steps": [
                    {"name": s.name, "status": s.status.value, "message": s.message}
                    for s in result.steps
                ],
            }
        )
        return
    width = max((len(step.name) for step in result.steps), default=0)
    for step in result.steps:
        print(f"{_LABELS[step.status]:<4} {step.name:<{width}} {step.message}")
