"""Drill reports in the repository: what each restore drill proved, kept next to the backups.

A report is stored through the pipeline like every object (checksummed, and
encrypted in an encrypted repository), under ``verify/<backup id>/``, so
``list`` can say when each backup was last proven to restore, from any host.
Reports are small; retention removes them with their backup.

A report is believed only under the backup it names: one copied from
``verify/<a>/`` to ``verify/<b>/`` would otherwise show backup ``b`` as proven
by a drill that never restored it. Such a report is skipped with a warning.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from janua_backup.errors import FormatError
from janua_backup.repository import layout
from janua_backup.repository.objects import Repo

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DrillCheck:
    name: str
    ok: bool
    message: str
    duration_s: float = 0.0
    # A check that could not run here (its tool is not installed): not a failure of
    # the backup, so ok stays True, but reported as a skip rather than a pass.
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class DrillReport:
    drill_id: str
    backup_id: str
    host: str
    started: datetime
    finished: datetime
    passed: bool
    target: str
    checks: tuple[DrillCheck, ...]
    restore_s: float
    replay_s: float
    total_s: float
    restored_bytes: int = 0
    pg_version_num: int = 0
    recovered_to_time: datetime | None = None  # last transaction replayed
    recovered_to_lsn: str | None = None
    timeline: int | None = None
    newest_wal: str | None = None  # newest archived segment on the restored timeline path
    newest_wal_time: datetime | None = None
    rpo_s: float | None = None  # newest archived WAL time - recovered_to_time
    rpo_bytes: int | None = None  # end of archived WAL - recovered_to_lsn
    error: str | None = None
    server_log_tail: str = ""

    @property
    def failed_checks(self) -> list[DrillCheck]:
        return [c for c in self.checks if not c.ok]

    @property
    def skipped_checks(self) -> list[DrillCheck]:
        return [c for c in self.checks if c.skipped]

    @property
    def summary(self) -> str:
        if self.passed:
            skipped = len(self.skipped_checks)
            return (
                f"drill passed: backup {self.backup_id} restored and recovered in "
                f"{self.total_s:.1f}s, {len(self.checks) - skipped} checks passed"
                + (f", {skipped} skipped" if skipped else "")
            )
        reasons = [self.error] if self.error else []
        reasons += [f"{c.name}: {c.message}" for c in self.failed_checks]
        return f"drill of backup {self.backup_id} failed: " + "; ".join(reasons or ["unknown"])


_TIMES = ("started", "finished", "recovered_to_time", "newest_wal_time")


def to_json(report: DrillReport) -> bytes:
    data = asdict(report)
    for name in _TIMES:
        value = getattr(report, name)
        data[name] = value.isoformat() if value else None
    return json.dumps(data, indent=1, sort_keys=True).encode()


def from_json(raw: bytes) -> DrillReport:
    try:
        data: dict[str, Any] = json.loads(raw)
        for name in _TIMES:
            if data.get(name):
                data[name] = datetime.fromisoformat(data[name])
        data["checks"] = tuple(DrillCheck(**c) for c in data["checks"])
        return DrillReport(**data)
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"drill report is malformed: {exc}") from exc


def save(repo: Repo, report: DrillReport) -> str:
    key = layout.drill_key(report.backup_id, report.drill_id)
    repo.put_bytes(key, to_json(report))
    return key


def latest(repo: Repo) -> dict[str, DrillReport]:
    """The newest report of each backup that has one (drill ids sort by time); a
    report naming another backup than the one it is stored under is skipped."""
    keys: dict[str, list[str]] = {}
    for info in repo.storage.list(layout.VERIFY_PREFIX):
        backup_id = info.key[len(layout.VERIFY_PREFIX) :].partition("/")[0]
        if info.key.endswith(".json"):
            keys.setdefault(backup_id, []).append(info.key)
    found: dict[str, DrillReport] = {}
    for backup_id, listed in keys.items():
        for key in sorted(listed, reverse=True):
            report = from_json(repo.get_bytes(key))
            if report.backup_id == backup_id:
                found[backup_id] = report
                break
            log.warning(
                "ignoring drill report key=%s: it names backup %s, not %s",
                key,
                report.backup_id[:80],
                backup_id,
            )
    return found


def history(repo: Repo, backup_id: str) -> list[DrillReport]:
    """Every report of one backup, oldest first (``info ID``); misfiled ones skipped
    as ``latest`` skips them."""
    keys = sorted(
        i.key for i in repo.storage.list(layout.drill_prefix(backup_id)) if i.key.endswith(".json")
    )
    reports = [from_json(repo.get_bytes(key)) for key in keys]
    return [r for r in reports if r.backup_id == backup_id]


def remove(repo: Repo, backup_id: str) -> int:
    """Deletes a backup's reports (retention); returns how many."""
    keys = [i.key for i in repo.storage.list(layout.drill_prefix(backup_id))]
    repo.storage.delete(keys)
    return len(keys)
