"""What each scheduled job does, and where the daemon's figures come from.

The jobs call the same ``commands.*.run`` functions as the CLI and turn their
results into an ``Outcome`` (logged with its fields by the scheduler's guard)
and into ``metrics``. ``Status`` reads what no job reports: the archiver's
figures from ``pg_stat_archiver`` and the node's role (``pg.stats``), the
repository's size, and at start the
newest backup and drill already in the repository, so a restarted daemon
reports the truth rather than nothing.

Imports ``commands`` (``expire`` inside its job), ``daemon.turns``, ``metrics``,
``pg.stats`` and ``repository``; never click or ``output``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from zoneinfo import ZoneInfo

from janua_backup import config, locks
from janua_backup.commands import backup as backup_command
from janua_backup.commands import backup_turn
from janua_backup.commands import check as check_command
from janua_backup.commands import verify as verify_command
from janua_backup.commands.common import open_repo
from janua_backup.config import Settings
from janua_backup.daemon import turns
from janua_backup.errors import JanuaError, LockHeld
from janua_backup.metrics import ArchiverStats, LastBackup, LastDrill, Metrics
from janua_backup.pg import stats
from janua_backup.policy import BackupPolicy, Policy, RetentionPolicy, VerifyPolicy
from janua_backup.repository import catalog, drills
from janua_backup.repository.drills import DrillReport
from janua_backup.repository.manifest import Manifest

log = logging.getLogger(__name__)

REPOSITORY_SIZE_EVERY_S = 300.0  # listing every object is not free on a large repository
Field = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a job reports: ``fields`` become keys of the JSON log line."""

    ok: bool
    summary: str
    fields: Mapping[str, Field] = field(default_factory=dict)
    finished: datetime | None = None  # when it counts as succeeded; None: when the job ended
    skipped: bool = False  # not this node's turn: neither a success nor a failure


Job = Callable[[], Outcome]


def build(
    settings: Settings, rules: Policy, status: Status, *, cancel: threading.Event
) -> dict[str, Job]:
    """The policy's enabled jobs. Settings are checked here, at start, not at 02:00."""
    backup_settings = config.with_compression(
        settings, rules.backup.compression, rules.backup.level
    )
    every = rules.schedule.backup
    due = partial(_last_fire, every, rules.schedule.tzinfo) if every else _now
    table: dict[str, Job] = {
        "backup": partial(backup, backup_settings, rules.backup, due, status, cancel),
        "verify": partial(verify, settings, rules.verify, status.metrics, cancel),
        "expire": partial(expire, settings, rules.retention, rules.backup.from_, status, cancel),
        "check": partial(check, settings),
    }
    return {name: table[name] for name, _ in rules.schedule.jobs()}


def backup(
    settings: Settings,
    rules: BackupPolicy,
    due: Callable[[], datetime],
    status: Status,
    cancel: threading.Event,
) -> Outcome:
    """This node's turn: skipped when its role is not the policy's ``backup.from``
    (asked now: a failover changes it) or when another node took the turn's backup.
    ``cancel`` is the daemon's stop: the backup is abandoned, nothing committed."""
    fired = due()
    role = stats.role(settings.postgres.dsn)
    status.metrics.set_role(role)
    turn = {"due": fired.isoformat(), "role": role, "from": rules.from_}
    why = turns.skip_reason(rules.from_, role)
    if why is not None:
        return Outcome(True, why, turn, skipped=True)
    result = backup_turn.run(settings, fired, cancel=cancel, backup_type=rules.type)
    if isinstance(result, Manifest):
        status.metrics.backup_taken(_last_backup(result))
        return Outcome(
            True,
            f"backup {result.backup_id} from {result.host} started at "
            f"{result.start_time.isoformat()}, after this turn fell due: it is this turn's backup",
            {**turn, "taken_by": result.host, "backup_id": result.backup_id},
            skipped=True,
        )
    status.size_changed()
    status.read_archiver()  # the backup just had WAL archived: show it now, not in 30 s
    m = result.manifest
    status.metrics.backup_taken(
        LastBackup(
            finished=m.stop_time.timestamp(),
            duration_s=result.duration_s,
            size_bytes=m.original_size_bytes,
            stored_bytes=m.stored_size_bytes,
        )
    )
    return Outcome(
        True,
        f"backup {m.backup_id} complete",
        {
            "backup_id": m.backup_id,
            "type": m.backup_type,
            "size_bytes": m.original_size_bytes,
            "stored_bytes": m.stored_size_bytes,
            "files": len(m.files),
            **turn,
        },
        finished=m.stop_time,
    )


def verify(
    settings: Settings, rules: VerifyPolicy, metrics: Metrics, cancel: threading.Event
) -> Outcome:
    """``cancel`` stops a drill that is replaying WAL: no report, scratch removed."""
    request = verify_command.request_from_policy(rules, pg_bindir=settings.postgres.bindir)
    report = verify_command.run(settings, request, cancel=cancel).report
    metrics.drill_finished(_drill(report))
    return Outcome(
        report.passed,
        report.summary,
        {
            "backup_id": report.backup_id,
            "passed": report.passed,
            "total_s": report.total_s,
            "restored_bytes": report.restored_bytes,
            "rpo_s": report.rpo_s,
        },
        finished=report.finished,
    )


def expire(
    settings: Settings,
    retention: RetentionPolicy,
    backup_from: str,
    status: Status,
    cancel: threading.Event,
) -> Outcome:
    """Retention runs where backups run (``backup.from``), so a daemon on every node does
    not apply it on each; where several nodes are eligible, each waits for the lock
    (another node's expire or backup) and then finds nothing more to expire."""
    from janua_backup.commands import expire as expire_command

    role = stats.role(settings.postgres.dsn)
    status.metrics.set_role(role)
    why = turns.skip_reason(backup_from, role, "applies the retention")
    if why is not None:
        return Outcome(True, why, {"role": role, "from": backup_from}, skipped=True)
    waiting = False
    while True:
        try:
            result = expire_command.run(settings, retention)
            break
        except LockHeld as exc:
            if not waiting:
                waiting = True
                log.info("expire waits for the repository lock: %s", exc.message)
        if not _lock_freed(settings, cancel):
            return Outcome(False, "expire cancelled while waiting for the repository lock")
    status.size_changed()
    return Outcome(
        True,
        f"expired {len(result.expired)} backups, freed {result.freed_bytes} bytes",
        {"expired": len(result.expired), "freed_bytes": result.freed_bytes, "role": role},
    )


def check(settings: Settings) -> Outcome:
    result = check_command.run(settings)
    return Outcome(result.ok, result.summary, {"archived_wal": result.archived_wal})


def _lock_freed(settings: Settings, cancel: threading.Event) -> bool:
    """Waits until the cluster lock is not live (released, expired, unreadable);
    ``False`` if ``cancel`` was set first. Polls the record, not ``expire`` itself,
    which would log a begin line at each try."""
    storage = open_repo(settings).storage
    while not cancel.wait(backup_turn.LOCK_POLL_S):
        held = locks.holder(storage, backup_command.LOCK_NAME)
        if held is None or not held.is_live(datetime.now(UTC)):
            return True
    return False


def _last_fire(expr: str, zone: ZoneInfo) -> datetime:
    """When the backup's current turn fell due (the newest fire time until now)."""
    now = datetime.now(UTC)
    return turns.last_fire(turns.trigger(expr, zone), now) or now


def _now() -> datetime:
    return datetime.now(UTC)


def _last_backup(m: Manifest) -> LastBackup:
    duration = (m.stop_time - m.start_time).total_seconds()
    return LastBackup(m.stop_time.timestamp(), duration, m.original_size_bytes, m.stored_size_bytes)


def _drill(report: DrillReport) -> LastDrill:
    return LastDrill(report.passed, report.finished.timestamp(), report.total_s)


class Status:
    """The figures no job reports, refreshed by the daemon every few seconds.

    A failure to read one is logged once (again only when its message changes)
    and leaves that figure absent or as it was: the daemon keeps running.
    """

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self.metrics = metrics
        self._seeded = False
        self._size_due = 0.0  # monotonic time of the next repository listing
        self._said: dict[str, str] = {}  # what was last logged, per figure

    def seed(self) -> dict[str, datetime] | None:
        """Figures of the newest backup and drill in the repository; returns when each
        last succeeded (``backup``, ``verify``), or ``None`` if the repository could not
        be read."""
        try:
            repo = open_repo(self._settings)
            done, _ = catalog.backup_ids(repo)
            newest = catalog.load(repo, done[-1]) if done else None
            reports = list(drills.latest(repo).values())
        except JanuaError as exc:
            self._warn("seed", f"cannot read the repository yet: {exc.message}")
            return None
        self._seeded = True
        last: dict[str, datetime] = {}
        if newest is not None:
            self.metrics.backup_taken(_last_backup(newest))
            last["backup"] = newest.stop_time
        if reports:
            self.metrics.drill_finished(_drill(max(reports, key=lambda r: r.finished)))
            passed = [r.finished for r in reports if r.passed]
            if passed:
                last["verify"] = max(passed)
                self.metrics.succeeded("verify", last["verify"].timestamp())
        return last

    def refresh(self) -> None:
        if not self._seeded:
            self.seed()
        self.read_archiver()
        if time.monotonic() >= self._size_due:
            self.repository_size()
            self.newest_backup()

    def newest_backup(self) -> None:
        """The newest backup's figures from the repository: another node may have taken
        it (a daemon on a standby must not report its last backup as ever older)."""
        try:
            repo = open_repo(self._settings)
            done, _ = catalog.backup_ids(repo)
            if done:
                self.metrics.backup_taken(_last_backup(catalog.load(repo, done[-1])))
        except JanuaError as exc:
            self._warn("newest", f"cannot read the newest backup: {exc.message}")
            return
        self._said.pop("newest", None)

    def repository_size(self) -> None:
        try:
            repo = open_repo(self._settings)
            total = sum(info.size_bytes for info in repo.storage.list(""))
        except JanuaError as exc:
            self._warn("size", f"cannot list the repository: {exc.message}")
            return
        self._size_due = time.monotonic() + REPOSITORY_SIZE_EVERY_S
        self.metrics.set_repository_size(total)
        self._said.pop("size", None)

    def size_changed(self) -> None:
        """A backup or expire ran: list the repository at the next refresh."""
        self._size_due = 0.0

    def read_archiver(self) -> None:
        """The archiver's figures and this node's role (asked again at each refresh)."""
        try:
            row = stats.archiver(self._settings.postgres.dsn)
        except JanuaError as exc:
            self.metrics.set_archiver(None)
            self.metrics.set_role(None)
            self._warn("archiver", f"cannot read pg_stat_archiver: {exc.message}")
            return
        self._said.pop("archiver", None)
        self.metrics.set_archiver(_archiver(row))
        self.metrics.set_role(row.role)
        if row.ready_refused and "ready" not in self._said:
            self._said["ready"] = row.ready_refused
            log.warning(
                "WAL segments waiting to be archived are not reported: %s", row.ready_refused
            )

    def _warn(self, what: str, message: str) -> None:
        if self._said.get(what) != message:
            self._said[what] = message
            log.warning(message)


def _archiver(row: stats.ArchiverRow) -> ArchiverStats:
    return ArchiverStats(
        archived_count=row.archived_count,
        failed_count=row.failed_count,
        last_archived=row.last_archived.timestamp() if row.last_archived else None,
        last_failed=row.last_failed.timestamp() if row.last_failed else None,
        ready_segments=row.ready_segments,
    )
