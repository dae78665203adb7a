"""The scheduler without servers: triggers from the policy, no overlap, outcomes counted."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from janua_backup import logs, policy
from janua_backup.commands.common import open_repo
from janua_backup.config import RepoSettings, Settings
from janua_backup.daemon.jobs import Job, Outcome, Status
from janua_backup.daemon.scheduler import Daemon, _catch_up, missed_run, trigger
from janua_backup.errors import BackupError
from janua_backup.metrics import Metrics
from janua_backup.policy import Schedule
from janua_backup.repository import catalog, drills
from janua_backup.repository.drills import DrillReport
from tests.unit.repository.helpers import T0, manifest

PARIS = ZoneInfo("Europe/Paris")


def ok_job() -> Outcome:
    return Outcome(True, "fine", {"size_bytes": 3})


def table(schedule: Schedule, job: Job = ok_job) -> dict[str, Job]:
    return {name: job for name, _ in schedule.jobs()}


@pytest.fixture
def stopping() -> threading.Event:
    return threading.Event()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Daemons a test started, stopped afterwards even if it failed."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop()


def records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


# --- triggers from the policy ---------------------------------------------------------------


def test_triggers_are_the_policy_crontab_in_its_zone_or_an_interval(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        '[schedule]\ntimezone = "Europe/Paris"\nbackup = "30 2 * * mon-fri"\n'
        'check = "@every 5m"\nverify = ""\nexpire = "@every 30s"\n'
    )
    schedule = policy.load(path).schedule
    assert schedule.jobs() == (
        ("backup", "30 2 * * mon-fri"),
        ("expire", "@every 30s"),
        ("check", "@every 5m"),
    )
    backup = trigger("30 2 * * mon-fri", schedule.tzinfo)
    assert isinstance(backup, CronTrigger)
    after = datetime(2026, 11, 27, 12, 0, tzinfo=PARIS)  # a Friday
    assert backup.get_next_fire_time(None, after) == datetime(2026, 11, 30, 2, 30, tzinfo=PARIS)
    check = trigger("@every 5m", schedule.tzinfo)
    assert isinstance(check, IntervalTrigger)
    assert check.interval == timedelta(minutes=5)


def test_each_job_never_overlaps_itself_and_coalesces_misfires(
    stopping: threading.Event,
) -> None:
    schedule = Schedule(expire="", check="@every 10s", misfire_grace_s=900)
    daemon = Daemon(schedule, table(schedule), Metrics(), stopping=stopping, refresh=lambda: None)
    jobs = {job.id: job for job in daemon.scheduler.get_jobs()}
    assert set(jobs) == {"backup", "verify", "check", "refresh"}
    for name in ("backup", "verify", "check"):
        assert jobs[name].max_instances == 1
        assert jobs[name].coalesce is True
        assert jobs[name].misfire_grace_time == 900
    # backup, verify and expire take turns on one thread; check runs beside them
    assert jobs["backup"].executor == "serial"
    assert jobs["verify"].executor == "serial"
    assert jobs["check"].executor == "default"


def test_a_slow_job_is_skipped_not_stacked(
    stopping: threading.Event, daemons: list[Daemon], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    release = threading.Event()
    running = 0
    most = 0
    runs = 0
    lock = threading.Lock()

    def slow() -> Outcome:
        nonlocal running, most, runs
        with lock:
            running += 1
            runs += 1
            most = max(most, running)
        release.wait(30)
        with lock:
            running -= 1
        return Outcome(True, "done")

    schedule = Schedule(backup="@every 1s", verify="", expire="", check="")
    daemon = Daemon(schedule, {"backup": slow}, Metrics(), stopping=stopping)
    daemons.append(daemon)
    daemon.start()
    deadline = time.monotonic() + 20
    while not records(caplog, "skipped"):
        assert time.monotonic() < deadline, "the second run was never due"
        time.sleep(0.1)
    release.set()
    daemon.stop()
    assert (runs, most) == (1, 1)
    assert records(caplog, "skipped")[0].job == "backup"  # type: ignore[attr-defined]


# --- the guard: outcomes logged and counted -------------------------------------------------


def fail_job() -> Outcome:
    raise BackupError("the disk is on fire")


def bug_job() -> Outcome:
    raise KeyError("oops")


def failed_check() -> Outcome:
    return Outcome(False, "archive_command is not wal-push")


def test_outcomes_are_logged_with_their_fields_and_failures_counted(
    stopping: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    metrics = Metrics()
    schedule = Schedule(verify="", expire="")
    daemon = Daemon(schedule, table(schedule), metrics, stopping=stopping)
    before = time.time()
    daemon.guard("backup", ok_job)
    daemon.guard("backup", fail_job)
    daemon.guard("check", bug_job)
    daemon.guard("check", failed_check)
    snapshot = metrics.snapshot()
    assert snapshot.failures == {"backup": 1, "check": 2}
    assert snapshot.success["backup"] >= before
    assert "check" not in snapshot.success
    done = records(caplog, "done")
    assert [(r.job, r.outcome) for r in done] == [  # type: ignore[attr-defined]
        ("backup", "ok"),
        ("backup", "failed"),
        ("check", "failed"),
        ("check", "failed"),
    ]
    assert done[1].summary == "the disk is on fire"  # type: ignore[attr-defined]
    assert done[2].summary == "unexpected KeyError: 'oops'"  # type: ignore[attr-defined]
    assert any(r.exc_info for r in caplog.records), "a bug is logged with its traceback"
    line = json.loads(logs.JsonFormatter().format(done[0]))
    assert line["job"] == "backup" and line["outcome"] == "ok" and line["size_bytes"] == 3
    assert isinstance(line["duration_s"], float)
    assert "job=backup outcome=ok" in line["message"]


def test_a_job_is_abandoned_on_stop_and_not_counted_as_a_failure(
    stopping: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    metrics = Metrics()
    began = threading.Event()

    def backup() -> Outcome:  # like commands.backup with cancel=stopping
        began.set()
        stopping.wait(30)
        raise BackupError("backup cancelled before it completed; nothing was committed")

    schedule = Schedule(verify="", expire="", check="")
    daemon = Daemon(schedule, {"backup": backup}, metrics, stopping=stopping)
    worker = threading.Thread(target=daemon.guard, args=("backup", backup))
    worker.start()
    assert began.wait(10)
    daemon.stop()  # the signal handler's effect
    worker.join(10)
    assert [r.outcome for r in records(caplog, "done")] == ["abandoned"]  # type: ignore[attr-defined]
    assert metrics.snapshot().failures == {"backup": 0}
    called = []
    daemon.guard("backup", lambda: called.append(1) or ok_job())  # queued before the stop
    assert called == []


def test_a_skipped_turn_is_logged_why_and_is_neither_a_success_nor_a_failure(
    stopping: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    metrics = Metrics()
    schedule = Schedule(verify="", expire="", check="")
    daemon = Daemon(schedule, table(schedule), metrics, stopping=stopping)
    why = "this node is a standby and the policy's backup.from is 'primary'"
    daemon.guard("backup", lambda: Outcome(True, why, {"role": "standby"}, skipped=True))
    snapshot = metrics.snapshot()
    assert snapshot.failures == {"backup": 0}
    assert "backup" not in snapshot.success
    (done,) = records(caplog, "done")
    assert done.levelno == logging.INFO
    line = json.loads(logs.JsonFormatter().format(done))
    assert (line["outcome"], line["role"], line["summary"]) == ("skipped", "standby", why)
    assert "job=backup outcome=skipped" in line["message"] and "role=standby" in line["message"]


# --- a restarted daemon catches up ----------------------------------------------------------


def test_missed_run_is_the_newest_fire_time_within_the_grace() -> None:
    nightly = trigger("0 2 * * *", ZoneInfo("UTC"))
    at = datetime(2026, 11, 25, 2, 30, tzinfo=UTC)
    assert missed_run(nightly, at, 3600) == datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    assert missed_run(nightly, at + timedelta(hours=1), 3600) is None
    tens = trigger("*/10 * * * *", ZoneInfo("UTC"))
    assert missed_run(tens, at + timedelta(minutes=5), 3600) == at
    # Intervals count from the epoch (daemon.turns), so they have fire times before the start;
    # but an interval's missed run is not caught up: its next turn comes soon.
    every = trigger("@every 5s", ZoneInfo("UTC"))
    assert missed_run(every, at + timedelta(seconds=3), 3600) == at
    assert not _catch_up("backup", every, at + timedelta(seconds=3), 3600, {})


def test_a_backup_missed_while_down_runs_at_once_unless_the_repository_has_it(
    stopping: threading.Event,
) -> None:
    now = datetime.now(UTC)
    due = (now - timedelta(minutes=2)).replace(second=0, microsecond=0)
    schedule = Schedule(backup=f"{due.minute} {due.hour} * * *", verify="", expire="", check="")

    def next_run(last: dict[str, datetime]) -> datetime:
        daemon = Daemon(schedule, table(schedule), Metrics(), stopping=stopping, last_success=last)
        daemon.scheduler.start(paused=True)
        try:
            when: datetime = daemon.scheduler.get_job("backup").next_run_time
        finally:
            daemon.scheduler.shutdown(wait=False)
        return when

    assert next_run({}) - now < timedelta(minutes=1)  # an empty repository: run now
    assert next_run({"backup": due - timedelta(days=1)}) - now < timedelta(minutes=1)
    assert next_run({"backup": due + timedelta(seconds=30)}) > now + timedelta(hours=23)


# --- a restarted daemon reports the truth ---------------------------------------------------


def report(backup_id: str, finished: datetime, *, passed: bool) -> DrillReport:
    return DrillReport(
        drill_id=finished.strftime("%Y%m%dT%H%M%SZ"),
        backup_id=backup_id,
        host="db1",
        started=finished - timedelta(seconds=40),
        finished=finished,
        passed=passed,
        target="end of the archive",
        checks=(),
        restore_s=10.0,
        replay_s=20.0,
        total_s=40.0,
    )


def test_the_newest_backup_and_drill_are_read_from_the_repository_at_start(
    tmp_path: Path,
) -> None:
    settings = Settings(repository=RepoSettings(url=f"file://{tmp_path}"))
    repo = open_repo(settings)
    old, new = manifest("20261125T120000Z"), manifest("20261125T130000Z", minutes=60)
    for m in (old, new):
        catalog.commit(repo, m)
    passed_at, failed_at = T0 + timedelta(hours=2), T0 + timedelta(hours=3)
    drills.save(repo, report(old.backup_id, passed_at, passed=True))
    drills.save(repo, report(new.backup_id, failed_at, passed=False))
    metrics = Metrics()
    status = Status(settings, metrics)

    assert status.seed() == {"backup": new.stop_time, "verify": passed_at}
    status.repository_size()
    state = metrics.snapshot()
    assert state.backup is not None
    assert state.backup.finished == new.stop_time.timestamp()
    assert state.backup.duration_s == 30.0  # start to stop, as the manifest says
    assert (state.backup.size_bytes, state.backup.stored_bytes) == (3, 40)
    assert state.drill is not None
    assert (state.drill.passed, state.drill.finished) == (False, failed_at.timestamp())
    assert state.success == {"backup": new.stop_time.timestamp(), "verify": passed_at.timestamp()}
    assert state.repository_bytes == sum(
        p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()
    )


def test_an_unreadable_repository_at_start_is_logged_once_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(repository=RepoSettings(url=f"file://{tmp_path}/missing"))
    status = Status(settings, Metrics())
    assert status.seed() is None
    assert status.seed() is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot read the repository yet" in warnings[0].getMessage()
