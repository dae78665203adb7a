"""``check``: can this setup back up and archive, right now.

The steps run in order, each ``ok``, ``warning``, ``failed`` or ``skipped``:
configuration; repository (marker and key, then a probe object written, read
back and deleted); PostgreSQL (reachable, the repository's cluster);
archive_mode; archive_command (runs ``wal-push %p`` into this same
repository); and the proof, as in pgBackRest's ``check``: a forced WAL switch
whose segment must reach the repository within ``timeout_s``. A step whose
inputs failed is skipped rather than run into a second, misleading error (no
repository: no waiting for a segment to appear in it).

``run`` never raises for a problem it finds: every ``JanuaError`` becomes a
failed step with the error's message, because the scheduler daemon calls it
hourly and logs the result; the CLI turns a failed result into ``CheckFailed``.

The probe object lives under ``probe/``, outside ``wal/`` and ``backups/``
(and not in ``layout``, which builds the keys of the repository format): a
probe left behind by a crash must never be listed as a WAL segment or a backup
by the window, expire or wal-fetch, and nothing that cleans those prefixes has
to know about it.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import re
import secrets
import shlex
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from janua_backup import config
from janua_backup.commands.common import open_repo
from janua_backup.config import Settings
from janua_backup.errors import CheckFailed, ConfigError, JanuaError
from janua_backup.pg import conn as pgconn
from janua_backup.pg.command_line import check_fits
from janua_backup.pipeline.crypto import Kdf
from janua_backup.repository import layout, marker
from janua_backup.repository.objects import Repo

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

POLL_S = 0.25
PROGRAMS = ("janua-backup", "janua_backup")  # the console script, or python -m janua_backup
_SECRET_ASSIGNMENT = re.compile(r"\b(\w*(?:SECRET|PASSPHRASE|PASSWORD|TOKEN)\w*=)\S+", re.I)


class Status(enum.Enum):
    OK = "ok"
    WARNING = "warning"  # passed, but something could not be confirmed
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class CheckStep:
    name: str
    status: Status
    message: str


@dataclass(frozen=True, slots=True)
class CheckResult:
    steps: tuple[CheckStep, ...]
    archived_wal: str | None = None  # the segment the WAL switch sent to the repository

    @property
    def ok(self) -> bool:
        return all(step.status is not Status.FAILED for step in self.steps)

    @property
    def summary(self) -> str:
        """The first failure's message; else one line saying all passed."""
        for step in self.steps:
            if step.status is Status.FAILED:
                return step.message
        warnings = [step.message for step in self.steps if step.status is Status.WARNING]
        return f"all checks passed; warning: {warnings[0]}" if warnings else "all checks passed"


@dataclass(frozen=True, slots=True)
class Unconfirmed:
    """A step outcome that passes with a warning: it could not be confirmed from here."""

    message: str


@dataclass(frozen=True, slots=True)
class ArchiveCommand:
    """Where an ``archive_command`` line tells janua-backup to archive."""

    environ: tuple[tuple[str, str], ...]  # NAME=VALUE assignments before the program
    config_path: str | None
    repo_url: str | None
    s3_endpoint: str | None


@dataclass(slots=True)
class _Found:
    """What earlier steps learnt and later steps use; filled as steps pass."""

    repo: Repo | None = None
    repo_marker: marker.Marker | None = None
    conn: psycopg.Connection[Any] | None = None
    facts: pgconn.ServerFacts | None = None
    archived_wal: str | None = None


@dataclass(slots=True)
class _Steps:
    done: list[CheckStep] = field(default_factory=list)

    def run(
        self, name: str, action: Callable[[], str | Unconfirmed], *, skip: str | None = None
    ) -> None:
        if skip:
            self.skip(name, skip)
            return
        try:
            outcome = action()
        except JanuaError as error:
            self.done.append(CheckStep(name, Status.FAILED, error.message))
            return
        if isinstance(outcome, Unconfirmed):
            self.done.append(CheckStep(name, Status.WARNING, outcome.message))
        else:
            self.done.append(CheckStep(name, Status.OK, outcome))

    def skip(self, name: str, reason: str) -> None:
        self.done.append(CheckStep(name, Status.SKIPPED, f"skipped: {reason}"))

    def unmet(self, *names: str) -> str | None:
        """Why a step needing ``names`` cannot run, or None."""
        for step in self.done:
            if step.name in names and step.status in (Status.FAILED, Status.SKIPPED):
                return f"{step.name} did not pass"
        return None


def run(settings: Settings, *, timeout_s: float = 60.0) -> CheckResult:
    started = time.monotonic()
    log.info("check begins repo=%s", settings.repository.url or "-")
    steps, found = _Steps(), _Found()
    with contextlib.ExitStack() as stack:
        steps.run("configuration", lambda: _configuration(settings))
        steps.run(
            "repository",
            lambda: _repository(settings, found),
            skip=None if settings.repository.url else "repository.url is not set",
        )
        steps.run(
            "postgresql",
            lambda: _postgresql(settings, found, stack),
            skip=None if _has_postgres(settings) else "postgres.dsn is not set",
        )
        conn, facts, repo = found.conn, found.facts, found.repo
        if conn is None or facts is None:
            for name in ("archive_mode", "archive_command", "wal_switch"):
                steps.skip(name, "PostgreSQL was not reached")
        else:
            steps.run("archive_mode", lambda: _archive_mode(facts))
            # With archive_mode off, PostgreSQL shows archive_command as "(disabled)".
            steps.run(
                "archive_command",
                lambda: _archive_command(settings, conn, facts),
                skip=steps.unmet("archive_mode"),
            )
            skip = steps.unmet("repository", "postgresql", "archive_mode", "archive_command")
            if skip is None and facts.in_recovery:
                skip = "the server is a standby: run check against the primary"
            if repo is None:
                steps.skip("wal_switch", skip or "repository did not pass")
            else:
                steps.run(
                    "wal_switch", lambda: _wal_switch(repo, conn, found, timeout_s), skip=skip
                )
    result = CheckResult(tuple(steps.done), found.archived_wal)
    log.info(
        "check done ok=%s failed=%s duration_s=%.1f",
        result.ok,
        ",".join(s.name for s in result.steps if s.status is Status.FAILED) or "-",
        time.monotonic() - started,
    )
    return result


def _has_postgres(settings: Settings) -> bool:
    return bool(settings.postgres.dsn or settings.postgres.pgdata)


def _configuration(settings: Settings) -> str:
    missing = []
    if not settings.repository.url:
        missing.append("repository.url (or --repo / JANUA_BACKUP_REPO) is not set")
    if not _has_postgres(settings):
        missing.append("postgres.dsn (or --dsn / JANUA_BACKUP_DSN) is not set")
    source = f"config {settings.config_path}" if settings.config_path else "no config file"
    if missing:
        raise CheckFailed(f"{' and '.join(missing)} ({source})")
    dsn = "postgres.dsn set" if settings.postgres.dsn else "postgres.dsn unset: libpq's PG* apply"
    return f"{source}; repository.url {settings.repository.url}; {dsn}"


def _repository(settings: Settings, found: _Found) -> str:
    url = settings.repository.url
    try:
        repo = open_repo(settings)
        existing = marker.read(repo)
        if existing is not None:
            marker.check_key(repo, existing)
        else:
            # No salt yet (the first backup or wal-push picks it): the probe uses a
            # throwaway one, and is deleted.
            repo.derive_key(Kdf.new())
        probe(repo)
    except JanuaError as error:
        message = error.message
        if url.rstrip("/") not in message:
            message = f"repository {url}: {message}"
        raise CheckFailed(message) from error
    found.repo, found.repo_marker = repo, existing
    owner = (
        f"belongs to cluster {existing.system_identifier}"
        if existing
        else "no backups yet, the first wal-push or backup creates it"
    )
    return f"{repo.describe()} reachable; probe written, read and deleted; {owner}"


def probe_key() -> str:
    return f"probe/{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def probe(repo: Repo) -> None:
    """Write, read back and delete one object through the pipeline (so the key is used too)."""
    key, payload = probe_key(), secrets.token_bytes(256)
    repo.put_bytes(key, payload)
    try:
        back = repo.get_bytes(key)
    finally:
        repo.storage.delete([key])
    if back != payload:
        raise CheckFailed(
            f"{repo.describe()}/{key} read back other bytes than were written; "
            "the store does not keep objects intact"
        )


def _postgresql(settings: Settings, found: _Found, stack: contextlib.ExitStack) -> str:
    conn = stack.enter_context(pgconn.connect(settings.postgres.dsn))
    facts = pgconn.server_facts(conn)
    found.conn, found.facts = conn, facts
    role = "standby" if facts.in_recovery else "primary"
    where = (
        f"PostgreSQL {facts.major} {role} at {facts.data_directory}, "
        f"system identifier {facts.system_identifier}"
    )
    _same_data_directory(settings.postgres.pgdata, facts.data_directory)
    if found.repo is None:
        return f"{where} (not compared with the repository, which did not pass)"
    if found.repo_marker is None:
        return where
    marker.check(found.repo, found.repo_marker, system_identifier=facts.system_identifier)
    return f"{where}, the repository's cluster"


def _same_data_directory(pgdata: str | None, data_directory: str) -> None:
    """postgres.pgdata is what backup copies; the DSN's server must run from it.

    Symlinks are resolved on both sides (Debian's /var/lib/postgresql/15/main may
    be a link to another disk)."""
    if not pgdata or os.path.realpath(pgdata) == os.path.realpath(data_directory):
        return
    raise CheckFailed(
        f"postgres.pgdata is {pgdata} but the server at postgres.dsn runs from "
        f"{data_directory} (SHOW data_directory); point postgres.pgdata and "
        "postgres.dsn at the same cluster"
    )


def _archive_mode(facts: pgconn.ServerFacts) -> str:
    if facts.archive_mode in ("on", "always"):
        return f"archive_mode = {facts.archive_mode}"
    raise CheckFailed(
        f"archive_mode is {facts.archive_mode}, so no WAL is archived; "
        "set archive_mode = on in postgresql.conf and restart PostgreSQL"
    )


def _archive_command(
    settings: Settings, conn: psycopg.Connection[Any], facts: pgconn.ServerFacts
) -> str | Unconfirmed:
    # missing_ok: archive_library exists from PostgreSQL 15 on.
    (library,) = pgconn.query_one(
        conn, "SELECT coalesce(current_setting('archive_library', true), '')"
    )
    if library:
        raise CheckFailed(
            f"archive_library is set to {library!r}, which PostgreSQL runs instead of "
            f"archive_command; clear archive_library and {suggested(settings)}"
        )
    return confirm_archive_command(facts.archive_command, settings, Path(facts.data_directory))


def suggested(settings: Settings) -> str:
    where = f"--config {settings.config_path}" if settings.config_path else "--config FILE"
    return f"set archive_command = 'janua-backup {where} wal-push %p', then reload PostgreSQL"


def confirm_archive_command(command: str, ours: Settings, cwd: Path) -> str | Unconfirmed:
    """Ok when ``command`` archives into our repository; ``cwd`` is the archiver's (PGDATA).

    Raises ``CheckFailed`` when it does not run ``wal-push %p``, archives elsewhere,
    or is so long that PostgreSQL could cut it short once it expands ``%p``/``%f``.
    """
    shown = _SECRET_ASSIGNMENT.sub(r"\1***", command)
    parsed = parse_archive_command(command, suggested(ours))
    try:
        check_fits("archive_command", command)
    except ConfigError as error:  # PostgreSQL 15 would run it cut short
        raise CheckFailed(error.message) from error
    path = parsed.config_path or dict(parsed.environ).get("JANUA_BACKUP_CONFIG")
    if path:
        path = str(cwd / path)  # the archiver runs in PGDATA; an absolute path stays as is
        if not Path(path).is_file():
            raise CheckFailed(
                f"archive_command uses --config {path}, which does not exist; {suggested(ours)}"
            )
        if not os.access(path, os.R_OK):
            return Unconfirmed(
                f"archive_command uses --config {path}, which this user cannot read; "
                "run check as root or postgres to confirm its repository"
            )
    overrides = {"repository": {"url": parsed.repo_url}, "s3": {"endpoint": parsed.s3_endpoint}}
    try:
        theirs = config.load(path, _ServerEnviron(parsed.environ), overrides)
    except JanuaError as error:
        raise CheckFailed(f"archive_command {shown!r}: {error.message}") from error
    if not theirs.repository.url:
        return Unconfirmed(
            f"archive_command {shown!r} names no --config or --repo: its repository comes "
            "from the PostgreSQL server's environment and cannot be confirmed here"
        )
    if theirs.repository.location().canonical != ours.repository.location().canonical:
        raise CheckFailed(
            f"archive_command archives into {theirs.repository.url}, not into "
            f"{ours.repository.url}; {suggested(ours)}"
        )
    their_end, our_end = _endpoint(theirs), _endpoint(ours)
    if ours.repository.scheme == "s3" and their_end != our_end:
        raise CheckFailed(
            f"archive_command archives into {theirs.repository.url} at s3.endpoint "
            f"{their_end or 'AWS'}, not at {our_end or 'AWS'}; {suggested(ours)}"
        )
    via = f" (config {path})" if path else ""
    return f"runs janua-backup wal-push %p into {theirs.repository.url}{via}"


def _endpoint(settings: Settings) -> str | None:
    return settings.s3.endpoint.rstrip("/") if settings.s3.endpoint else None


def parse_archive_command(command: str, fix: str = "") -> ArchiveCommand:
    """Raises ``CheckFailed`` unless ``command`` runs ``janua-backup ... wal-push %p``."""
    shown = _SECRET_ASSIGNMENT.sub(r"\1***", command)
    fix = f"; {fix}" if fix else ""
    if not command.strip():
        raise CheckFailed(f"archive_command is empty, so no WAL is archived{fix}")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise CheckFailed(f"archive_command {shown!r} cannot be parsed ({exc}){fix}") from exc
    start = next((i for i, arg in enumerate(argv) if Path(arg).name in PROGRAMS), None)
    push = None
    if start is not None:
        push = next((i for i in range(start, len(argv)) if argv[i] == "wal-push"), None)
    if start is None or push is None or argv[push + 1 : push + 2] != ["%p"]:
        raise CheckFailed(f"archive_command {shown!r} does not run janua-backup wal-push %p{fix}")
    options = dict(_options(argv[start + 1 : push]))
    # NAME=VALUE words at the head of janua-backup's simple command (after env, if any).
    begin = max((i + 1 for i in range(start) if argv[i] in ("&&", "||", ";", "|")), default=0)
    environ = []
    for arg in argv[begin:start]:
        name, sep, value = arg.partition("=")
        if arg != "env" and not (sep and name.isidentifier()):
            break
        if sep:
            environ.append((name, value))
    return ArchiveCommand(
        environ=tuple(environ),
        config_path=options.get("--config"),
        repo_url=options.get("--repo"),
        s3_endpoint=options.get("--s3-endpoint"),
    )


def _options(args: list[str]) -> Iterator[tuple[str, str]]:
    """``--name value`` and ``--name=value`` pairs among the global options."""
    for i, arg in enumerate(args):
        name, sep, value = arg.partition("=")
        if sep and name.startswith("--"):
            yield name, value
        elif arg.startswith("--") and i + 1 < len(args):
            yield arg, args[i + 1]


class _ServerEnviron(Mapping[str, str]):
    """The archiver's environment, as far as check can know it.

    The NAME=VALUE assignments of the command line are known. A variable
    janua-backup reads by a fixed name (``ENV_VARS``) and the command does not
    set is taken as unset. Any other name (the one ``encryption.passphrase_env``
    names) is taken as set, so such a config loads here: only its repository is
    compared, never a secret.
    """

    def __init__(self, assigned: tuple[tuple[str, str], ...]) -> None:
        self._assigned = dict(assigned)

    def __getitem__(self, name: str) -> str:
        if name in self._assigned:
            return self._assigned[name]
        if name in config.ENV_VARS or name == "JANUA_BACKUP_CONFIG":
            raise KeyError(name)
        return "(set in the PostgreSQL server's environment)"

    def __iter__(self) -> Iterator[str]:
        return iter(self._assigned)

    def __len__(self) -> int:
        return len(self._assigned)


def _wal_switch(repo: Repo, conn: psycopg.Connection[Any], found: _Found, timeout_s: float) -> str:
    # A restore point first, so there is WAL to switch away from: on an idle server
    # pg_switch_wal() does nothing and names the previous, long archived segment.
    pgconn.query_one(conn, "SELECT pg_create_restore_point('janua-backup check')")
    (name,) = pgconn.query_one(conn, "SELECT pg_walfile_name(pg_switch_wal())")
    started = time.monotonic()
    key = layout.wal_key(str(name))
    while repo.storage.head(key) is None:
        if time.monotonic() - started >= timeout_s:
            raise CheckFailed(_not_archived(conn, str(name), timeout_s))
        time.sleep(POLL_S)
    found.archived_wal = str(name)
    return f"WAL segment {name} switched and archived in {time.monotonic() - started:.1f} s"


def _not_archived(conn: psycopg.Connection[Any], name: str, timeout_s: float) -> str:
    failed, last_failed, when = pgconn.query_one(
        conn, "SELECT failed_count, last_failed_wal, last_failed_time FROM pg_stat_archiver"
    )
    if failed:
        at = f" at {when.astimezone(UTC):%Y-%m-%d %H:%M:%SZ}" if when else ""
        stats = f"pg_stat_archiver reports {failed} failures, last for {last_failed}{at}"
    else:
        stats = "pg_stat_archiver reports no failures"
    return (
        f"WAL segment {name} was not archived within {timeout_s:g} s; {stats}: "
        "check archive_command and the server log"
    )
