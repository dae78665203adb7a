"""``verify``: the restore drill. Restore a backup into scratch space, recover, check, measure.

A backup nobody has restored is a hope. The drill does what the on-call
engineer would do on the worst day (the same ``restore`` code, the same
``wal-fetch`` as restore_command) into a scratch directory, starts a
throw-away server (pg/scratch.py), lets it replay to the target and promote,
then runs the checks (drill_checks.py) and records how long it took (RTO)
and how far behind the newest archived WAL it ended (RPO).

Whatever happens (a failed check, a server that will not start, Ctrl-C) the
scratch server is stopped and the scratch directory removed unless ``keep``.
The report is stored in the repository when the drill got as far as a
restore, so ``list`` shows failed drills too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from janua_backup.commands import drill_checks, restore
from janua_backup.commands.common import open_repo
from janua_backup.commands.restore_request import build_request
from janua_backup.config import Settings
from janua_backup.errors import InputError, JanuaError
from janua_backup.pg.scratch import Cancelled, Owner, ScratchServer, find_bindir
from janua_backup.pg.wal import Lsn
from janua_backup.policy import CheckQuery, VerifyPolicy
from janua_backup.repository import drills, layout
from janua_backup.repository.drills import DrillCheck, DrillReport
from janua_backup.repository.select import Choice

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DrillRequest:
    restore: restore.RestoreRequest  # pgdata is replaced by the scratch directory
    checks: tuple[CheckQuery, ...] = ()
    amcheck: bool = False
    scratch_parent: Path | None = None
    keep: bool = False
    pg_bindir: str | None = None
    pg_user: str | None = None  # role to connect as; default: the data directory's owner
    timeout_s: float = 1800.0


@dataclass(frozen=True, slots=True)
class DrillResult:
    report: DrillReport
    report_key: str | None
    kept_dir: str | None


def request_from_policy(
    rules: VerifyPolicy,
    *,
    pg_bindir: str | None,
    backup_id: str | None = None,
    target_time: str | None = None,
    timezone: str | None = None,
    target_lsn: str | None = None,
    target_kind: str | None = None,
    amcheck: bool | None = None,
    scratch_parent: Path | None = None,
    keep: bool = False,
    pg_user: str | None = None,
    timeout_s: float | None = None,
) -> DrillRequest:
    """The drill the policy asks for (target, checks, amcheck, timeout), with the CLI's
    overrides; the daemon's nightly drill and ``verify`` build it the same way."""
    kind = target_kind or ("" if target_time or target_lsn else rules.target)
    return DrillRequest(
        restore=build_request(
            pgdata=".",
            target_time=target_time,
            timezone=timezone,
            target_lsn=target_lsn,
            target_xid=None,
            target_name=None,
            immediate=kind == "immediate",
            exclusive=False,
            action="promote",
            timeline=None,
            backup_id=None if backup_id in (None, "latest") else backup_id,
            standby=False,
        ),
        checks=rules.checks,
        amcheck=rules.amcheck if amcheck is None else amcheck,
        scratch_parent=scratch_parent,
        keep=keep,
        pg_bindir=pg_bindir,
        pg_user=pg_user,
        timeout_s=timeout_s or rules.timeout_s,
    )


@dataclass
class _Timing:
    begun: float
    restore_s: float = 0.0
    replay_s: float = 0.0
    restored_bytes: int = 0


def run(
    settings: Settings, request: DrillRequest, *, cancel: threading.Event | None = None
) -> DrillResult:
    """The drill; ``cancel`` (the daemon's SIGTERM) stops it without storing a report."""
    started = datetime.now(UTC)
    timing = _Timing(time.monotonic())
    home = _scratch_home(request.scratch_parent)
    log.info("verify begins scratch=%s", home)
    server: ScratchServer | None = None
    try:
        rr = replace(
            request.restore,
            pgdata=home / "data",
            tablespace_dir=home / "tablespaces",
            recovery_target=replace(request.restore.recovery_target, action="promote"),
            standby=False,
            archive_mode="off",  # a drill never archives (its server is started so too)
        )
        choice, plan = restore.prepare(settings, rr)
        _warn_if_in_memory(home, plan.fetch_bytes)
        manifest = choice.manifest
        bindir = find_bindir(manifest.pg_version_num // 10000, request.pg_bindir)
        checks: list[DrillCheck] = []
        error: str | None = None
        try:
            done = restore.execute(settings, rr, choice, plan, progress=_stopper(cancel))
            timing.restore_s, timing.restored_bytes = done.duration_s, done.written_bytes
            server = _server(home, rr.pgdata, bindir, request)
            checks, facts = _recover_and_check(server, request, choice, timing, cancel)
        except Cancelled:
            raise
        except JanuaError as exc:
            error, facts = exc.message, _Facts()
        report = _report(started, choice, request, timing, checks, facts, error, server)
        key = _save(settings, report)
    finally:
        if server is not None:
            server.stop()
        if not request.keep:
            shutil.rmtree(home, ignore_errors=True)
    log.info(
        "verify done backup_id=%s passed=%s total_s=%.1f",
        report.backup_id,
        report.passed,
        report.total_s,
    )
    return DrillResult(report, key, str(home) if request.keep else None)


DEFAULT_SCRATCH_PARENT = Path("/var/tmp")
"""Where drills restore without --scratch-dir: a whole cluster is written there.

/tmp (the system temp dir) is a tmpfs on many systems (Fedora, Arch, Debian 13):
a drill of a big backup there fills RAM and swap. /var/tmp is on disk by the FHS
and by systemd's defaults, meant for large temporary files, and present on every
Linux; TMPDIR is not consulted, it usually names the same small places.
"""


def _scratch_home(parent: Path | None) -> Path:
    if parent is None and DEFAULT_SCRATCH_PARENT.is_dir():
        parent = DEFAULT_SCRATCH_PARENT
    try:
        return Path(tempfile.mkdtemp(prefix="janua-verify-", dir=parent))
    except OSError as exc:
        where = parent or tempfile.gettempdir()
        raise InputError(
            f"cannot create a scratch directory in {where} ({exc.strerror}); give --scratch-dir "
            "an existing directory with room for a full restore"
        ) from exc


def _warn_if_in_memory(home: Path, restore_bytes: int) -> None:
    """A tmpfs scratch directory holds the restore in RAM: say so when it cannot fit."""
    mount = _tmpfs_mount(home)
    available = _memory_available_bytes()
    if mount is None or available is None or restore_bytes <= available:
        return
    log.warning(
        "the scratch directory %s is on a tmpfs (%s): restoring %d bytes there needs more "
        "than the %d bytes of memory available; give --scratch-dir a directory on disk",
        *(home, mount, restore_bytes, available),
    )


def _tmpfs_mount(path: Path) -> str | None:
    """The tmpfs mount point holding ``path`` (the longest matching mount), or None."""
    best: tuple[str, str] | None = None
    try:
        lines = Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None  # not Linux: no verdict
    resolved = str(path.resolve())
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > len(best[0])):
            best = (point, fields[2])
    return best[0] if best is not None and best[1] == "tmpfs" else None


def _memory_available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _stopper(cancel: threading.Event | None) -> Callable[[int], None] | None:
    """Checked as restored bytes flow, so a cancel does not wait for the whole download."""
    if cancel is None:
        return None

    def tick(_: int) -> None:
        if cancel.is_set():
            raise Cancelled("the drill was cancelled while restoring")

    return tick


def _server(home: Path, pgdata: Path, bindir: Path, request: DrillRequest) -> ScratchServer:
    owner = Owner.of(pgdata)
    if os.geteuid() == 0:
        # The server runs as the data's owner and must reach its socket and log here.
        for path in (home, *home.iterdir()):
            os.chown(path, owner.uid, owner.gid)
    server = ScratchServer(pgdata, home, bindir, user=request.pg_user or owner.name, owner=owner)
    return server


@dataclass(frozen=True, slots=True)
class _Facts:
    recovered_to_time: datetime | None = None
    recovered_to_lsn: Lsn | None = None
    data_checksums: bool = False


def _recover_and_check(
    server: ScratchServer,
    request: DrillRequest,
    choice: Choice,
    timing: _Timing,
    cancel: threading.Event | None,
) -> tuple[list[DrillCheck], _Facts]:
    replay_began = time.monotonic()
    server.start()
    server.wait_promoted(request.timeout_s, cancel)
    timing.replay_s = time.monotonic() - replay_began
    xact_time, replay_lsn, sums = server.query(
        "SELECT pg_last_xact_replay_timestamp(), pg_last_wal_replay_lsn()::text, "
        "current_setting('data_checksums') = 'on'"
    )[0]
    facts = _Facts(
        drill_checks.recovered_time(xact_time),
        Lsn.parse(str(replay_lsn)) if replay_lsn else None,
        bool(sums),
    )
    checks = [_continuity(choice)]
    if request.restore.target.kind == "latest":
        checks.append(drill_checks.reached_end(facts.recovered_to_lsn, _last_segment_start(choice)))
    checks.append(drill_checks.databases(server))
    checks += drill_checks.queries(server, request.checks)
    if request.amcheck:
        checks.append(drill_checks.amcheck(server, request.timeout_s))
    server.stop()
    if facts.data_checksums:
        checks.append(drill_checks.checksums(server, request.timeout_s))
    return checks, facts


def _continuity(choice: Choice) -> DrillCheck:
    w = choice.window

    def check() -> str:
        if w.missing_segment:
            until = restore.human_time(w.latest_time) if w.latest_time else "its consistency point"
            raise drill_checks.CheckFailure(
                f"WAL {w.missing_segment} is missing from the archive: backup "
                f"{w.backup_id} can be restored only up to {until}; later WAL is unreachable"
            )
        return f"WAL {w.first_segment} .. {w.last_segment} is contiguous"

    return drill_checks.timed("WAL continuity", check)


def _last_segment_start(choice: Choice) -> Lsn | None:
    latest = choice.window.latest_lsn
    size = choice.manifest.wal_segment_size
    return Lsn(latest.value - size) if latest is not None else None


def _report(
    started: datetime,
    choice: Choice,
    request: DrillRequest,
    timing: _Timing,
    checks: list[DrillCheck],
    facts: _Facts,
    error: str | None,
    server: ScratchServer | None,
) -> DrillReport:
    w, m = choice.window, choice.manifest
    rpo_s = rpo_bytes = None
    if facts.recovered_to_time and w.latest_time:
        rpo_s = max(0.0, (w.latest_time - facts.recovered_to_time).total_seconds())
    if facts.recovered_to_lsn and w.latest_lsn:
        rpo_bytes = max(0, w.latest_lsn.value - facts.recovered_to_lsn.value)
    passed = error is None and bool(checks) and all(c.ok for c in checks)
    return DrillReport(
        drill_id=layout.new_backup_id(started),
        backup_id=m.backup_id,
        host=socket.gethostname(),
        started=started,
        finished=datetime.now(UTC),
        passed=passed,
        target=restore.describe_target(request.restore.target),
        checks=tuple(checks),
        restore_s=round(timing.restore_s, 3),
        replay_s=round(timing.replay_s, 3),
        total_s=round(time.monotonic() - timing.begun, 3),
        restored_bytes=timing.restored_bytes,
        pg_version_num=m.pg_version_num,
        recovered_to_time=facts.recovered_to_time,
        recovered_to_lsn=str(facts.recovered_to_lsn) if facts.recovered_to_lsn else None,
        timeline=w.timeline,
        newest_wal=w.last_segment,
        newest_wal_time=w.latest_time,
        rpo_s=round(rpo_s, 3) if rpo_s is not None else None,
        rpo_bytes=rpo_bytes,
        error=error,
        server_log_tail=server.log_tail() if server is not None and not passed else "",
    )


def _save(settings: Settings, report: DrillReport) -> str | None:
    """A report that cannot be stored must not turn a drill result into a crash."""
    try:
        return drills.save(open_repo(settings), report)
    except JanuaError as exc:
        log.warning("drill report not stored: %s", exc.message)
        return None


def latest_reports(settings: Settings) -> dict[str, DrillReport]:
    with contextlib.suppress(JanuaError):
        return drills.latest(open_repo(settings))
    return {}
