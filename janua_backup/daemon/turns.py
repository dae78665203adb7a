"""Turns: when a job falls due, and whether this node takes a backup's turn.

A daemon runs on every node of a cluster (a primary and its standbys). For
them to take exactly one backup per turn, they must agree on what a turn is
and on who may take it, without talking to each other:

* **The same fire times on every node.** A cron expression fires at the same
  wall-clock times everywhere. An ``@every`` interval is counted from the Unix
  epoch, not from the daemon's start: ``@every 20s`` fires at :00, :20 and :40
  on every node, whenever each daemon started (APScheduler's interval trigger
  counts from its ``start_date``, so it gets the epoch).
* **A turn has a fire time** (``last_fire``), the newest fire time at or
  before the moment the job runs. A backup that started at or after it, found
  in the repository, is that turn's backup: another node took it.
* **Eligibility** (``skip_reason``): the policy's ``backup.from`` against the
  role the server states at this turn (``pg.stats.role``), never a cached one.

Imports apscheduler and ``policy``; nothing of PostgreSQL or the repository.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from janua_backup import policy

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# How far back last_fire looks for a cron's fire time, widening: a minutely cron is found
# in the first window, a yearly one in the last, each in few steps.
_LOOK_BACK = (
    timedelta(minutes=2),
    timedelta(hours=2),
    timedelta(days=2),
    timedelta(days=62),
    timedelta(days=800),
)


def trigger(expr: str, zone: ZoneInfo) -> Any:
    """An APScheduler trigger for a validated schedule: ``@every Ns`` (from the epoch,
    so every node fires at the same times) or a crontab line."""
    seconds = policy.interval_s(expr)
    if seconds is not None:
        return IntervalTrigger(seconds=seconds, start_date=EPOCH, timezone=zone)
    return CronTrigger.from_crontab(expr, timezone=zone)


def last_fire(trig: Any, now: datetime) -> datetime | None:
    """The newest time ``trig`` fired at or before ``now``; ``None`` if it never did
    within two years."""
    if isinstance(trig, IntervalTrigger):
        start: datetime = trig.start_date
        if now < start:
            return None
        every: timedelta = trig.interval
        return start + every * ((now - start) // every)
    for window in _LOOK_BACK:
        found: datetime | None = None
        when = trig.get_next_fire_time(None, now - window)
        while when is not None and when <= now:
            found = when
            when = trig.get_next_fire_time(when, when + timedelta(microseconds=1))
        if found is not None:
            return found
    return None


def skip_reason(backup_from: str, role: str, what: str = "takes the backup") -> str | None:
    """Why a node in ``role`` (``primary``/``standby``) does not take a backup (or
    apply the retention: ``what``) under ``backup.from = backup_from``; ``None``: it is
    eligible."""
    if backup_from == "any" or backup_from == role:
        return None
    return (
        f"this node is a {role} and the policy's backup.from is {backup_from!r}: "
        f"the {backup_from} {what}"
    )
