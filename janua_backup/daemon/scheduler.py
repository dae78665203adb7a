"""The daemon: runs the policy's jobs on their schedules until SIGTERM or SIGINT.

Owns scheduling, the per-job guard and the graceful stop; what each job does
is in ``daemon.jobs``. Imports apscheduler, ``metrics``, ``policy`` and
``daemon.jobs``; never click or ``output``.

The rules, and why:

* A job never overlaps itself (``max_instances=1``): a backup slower than its
  schedule is skipped, not stacked. Backup, verify and expire also take turns
  on a one-thread executor: backup and expire take the same repository lock
  (one would fail with ``LockHeld``), and an expire running under a drill
  would delete the backup and WAL the drill is restoring. Taking turns also
  keeps a drill from loading the database host while a backup reads it.
  ``check`` is light and runs beside them.
* Misfires coalesce: a daemon that fell behind (host asleep, a long queue)
  runs a missed job once if it is late by less than ``misfire_grace_s``;
  later than that, the job waits for its next turn.
* A restarted daemon catches up: if a backup or drill fell due within the
  grace time and the repository holds none since, it runs at once.
* Stop: the signal sets ``stopping``, which is the backup's ``cancel``: the
  copy stops within a block, nothing is committed and the backup's objects
  are removed (never left looking complete). No job starts any more (a queued
  one sees ``stopping`` and skips), running ones are waited for (a restore
  drill cannot be interrupted: it ends within ``verify.timeout_s``), exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from janua_backup.config import Settings
from janua_backup.daemon import jobs
from janua_backup.daemon.jobs import Job, Outcome
from janua_backup.daemon.turns import trigger
from janua_backup.errors import ConfigError, JanuaError
from janua_backup.metrics import Metrics, Server
from janua_backup.policy import Policy, Schedule

log = logging.getLogger(__name__)

REFRESH_S = 30.0  # archiver figures: often enough for a 5-minute alert, cheap for PostgreSQL
SERIAL = "serial"  # the executor of the jobs that take turns
SERIAL_JOBS = ("backup", "verify", "expire")
CATCH_UP_JOBS = ("backup", "verify")  # the repository says when these last ran
_LEVELS = {
    "ok": logging.INFO,
    "skipped": logging.INFO,
    "abandoned": logging.WARNING,
    "failed": logging.ERROR,
}


@dataclass(frozen=True, slots=True)
class Options:
    metrics_address: str = "127.0.0.1"
    metrics_port: int = 0  # 0: no metrics endpoint
    refresh_s: float = REFRESH_S


def missed_run(trig: Any, now: datetime, grace_s: int) -> datetime | None:
    """The newest time ``trig`` fired in the last ``grace_s`` seconds, if any."""
    found = None
    when = trig.get_next_fire_time(None, now - timedelta(seconds=grace_s))
    while when is not None and when <= now:
        found = when
        when = trig.get_next_fire_time(when, when + timedelta(microseconds=1))
    return found


def _catch_up(
    name: str,
    trig: Any,
    now: datetime,
    grace_s: int,
    last_success: Mapping[str, datetime] | None,
) -> bool:
    """Whether a backup or drill fell due within the grace time with none in the repository
    since (the daemon was down then); ``last_success`` is ``None`` when it is unknown."""
    if last_success is None or name not in CATCH_UP_JOBS or isinstance(trig, IntervalTrigger):
        return False  # an interval's next turn comes soon: no catch-up
    missed = missed_run(trig, now, grace_s)
    last = last_success.get(name)
    if missed is None or (last is not None and last >= missed):
        return False
    log.info(
        "job %s was due at %s and has not run since: running it now",
        name,
        missed.isoformat(),
        extra={"job": name, "missed": missed.isoformat()},
    )
    return True


class Daemon:
    """The scheduler with the policy's jobs, each run through ``guard``."""

    def __init__(
        self,
        schedule: Schedule,
        table: Mapping[str, Job],
        metrics: Metrics,
        *,
        stopping: threading.Event,
        refresh: Callable[[], None] | None = None,
        refresh_s: float = REFRESH_S,
        last_success: Mapping[str, datetime] | None = None,
    ) -> None:
        self.metrics = metrics
        self.stopping = stopping
        self.scheduler = BackgroundScheduler(
            executors={
                "default": ThreadPoolExecutor(len(table) + 1),
                SERIAL: ThreadPoolExecutor(1),
            },
            timezone=schedule.tzinfo,
        )
        self.scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self._exprs = dict(schedule.jobs())
        now = datetime.now(UTC)
        metrics.track(self._exprs)
        for name, expr in self._exprs.items():
            trig = trigger(expr, schedule.tzinfo)
            extra: dict[str, Any] = {}
            if _catch_up(name, trig, now, schedule.misfire_grace_s, last_success):
                extra["next_run_time"] = now
            self.scheduler.add_job(
                self.guard,
                trig,
                args=(name, table[name]),
                id=name,
                name=name,
                executor=SERIAL if name in SERIAL_JOBS else "default",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=schedule.misfire_grace_s,
                **extra,
            )
        if refresh is not None:
            self.scheduler.add_job(
                refresh,
                IntervalTrigger(seconds=refresh_s),
                id="refresh",
                name="refresh",
                next_run_time=now,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(refresh_s)),
            )

    def start(self) -> None:
        self.scheduler.start()
        for job in self.scheduler.get_jobs():
            if job.id in self._exprs:
                log.info(
                    "scheduled job=%s schedule=%r next_run=%s",
                    job.id,
                    self._exprs[job.id],
                    job.next_run_time.isoformat(),
                    extra={
                        "job": job.id,
                        "schedule": self._exprs[job.id],
                        "next_run": job.next_run_time.isoformat(),
                    },
                )

    def stop(self) -> None:
        """Sets ``stopping`` (cancelling a backup), then waits for running jobs to end."""
        self.stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)

    def guard(self, name: str, job: Job) -> None:
        """Runs one job: logs its outcome, duration and fields; counts success and failure."""
        if self.stopping.is_set():
            log.info("job skipped job=%s: the daemon is stopping", name, extra={"job": name})
            return
        log.info("job begins job=%s", name, extra={"job": name, "event": "begin"})
        started = time.monotonic()
        try:
            outcome = job()
        except JanuaError as exc:
            outcome = Outcome(False, exc.message)
        except Exception as exc:  # the one broad guard: a bug in one job must not stop the rest
            log.exception("job %s raised an unexpected error", name, extra={"job": name})
            outcome = Outcome(False, f"unexpected {type(exc).__name__}: {exc}")
        duration = time.monotonic() - started
        result = (
            "skipped"
            if outcome.skipped
            else "ok"
            if outcome.ok
            else "abandoned"
            if self.stopping.is_set()
            else "failed"
        )
        fields = "".join(f" {k}={v}" for k, v in outcome.fields.items())
        log.log(
            _LEVELS[result],
            "job done job=%s outcome=%s duration_s=%.1f%s: %s",
            name,
            result,
            duration,
            fields,
            outcome.summary,
            extra={
                "job": name,
                "event": "done",
                "outcome": result,
                "duration_s": round(duration, 3),
                "summary": outcome.summary,
                **outcome.fields,
            },
        )
        if result == "ok":
            self.metrics.succeeded(name, (outcome.finished or datetime.now(UTC)).timestamp())
        elif result == "failed":
            self.metrics.failed(name)

    def _skipped(self, event: JobEvent) -> None:
        if event.code == EVENT_JOB_MAX_INSTANCES:
            log.info(
                "job skipped job=%s: its previous run is still going or waiting for its turn",
                event.job_id,
                extra={"job": event.job_id, "event": "skipped"},
            )
        else:
            log.warning(
                "job skipped job=%s: it was due at %s, more than schedule.misfire_grace_s ago",
                event.job_id,
                event.scheduled_run_time.isoformat(),
                extra={"job": event.job_id, "event": "missed"},
            )


def run(settings: Settings, rules: Policy, options: Options) -> None:
    """Runs until SIGTERM or SIGINT, then stops gracefully and returns (exit 0)."""
    settings.require_repo()
    stopping = threading.Event()
    metrics = Metrics()
    status = jobs.Status(settings, metrics)
    table = jobs.build(settings, rules, status, cancel=stopping)
    _quiet_apscheduler()
    with contextlib.ExitStack() as stack:
        if options.metrics_port:  # first: a port in use stops the start before anything runs
            stack.callback(_serve(metrics, options).close)
        received = stack.enter_context(_signals(stopping))
        where = policy_name(rules)
        log.info(
            "daemon starts policy=%s jobs=%s metrics=%s",
            where,
            ",".join(table) or "none",
            _url(options) or "off",
            extra={"policy": where, "jobs": list(table), "metrics": _url(options)},
        )
        daemon = Daemon(
            rules.schedule,
            table,
            metrics,
            stopping=stopping,
            refresh=status.refresh,
            refresh_s=options.refresh_s,
            last_success=status.seed(),
        )
        stack.callback(daemon.stop)
        daemon.start()
        while not stopping.wait(1.0):
            pass
        log.info(
            "daemon stopping on %s: no new jobs; waiting for running ones to end",
            received[0] if received else "request",
            extra={"signal": received[0] if received else None},
        )
        daemon.stop()
    log.info("daemon stopped")


def policy_name(rules: Policy) -> str:
    return str(rules.path) if rules.path else "built-in default"


def _url(options: Options) -> str | None:
    if not options.metrics_port:
        return None
    return f"http://{options.metrics_address}:{options.metrics_port}/metrics"


def _serve(metrics: Metrics, options: Options) -> Server:
    try:
        return metrics.serve(options.metrics_address, options.metrics_port)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {options.metrics_address}:{options.metrics_port} "
            f"({exc.strerror or exc}); choose another --metrics-port, or 0 for none"
        ) from exc


@contextmanager
def _signals(stopping: threading.Event) -> Iterator[list[str]]:
    """SIGTERM and SIGINT set ``stopping``; the names received are listed for the log."""
    received: list[str] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        stopping.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _quiet_apscheduler() -> None:
    """APScheduler's own info lines repeat ours; its errors (a bug in refresh) stay."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
