"""The daemon's Prometheus figures: what the jobs last did, and what the archiver says.

Owns the figures and their exposition; imports nothing of janua_backup, so jobs
hand it plain values (the daemon turns manifests, drill reports and
``pg_stat_archiver`` rows into the dataclasses below). ``prometheus_client`` is
imported here only, and only the daemon imports this module: ``wal-push``,
which PostgreSQL runs once per segment, never pays for it.

The figures live in one lock-guarded state and a custom collector reads a copy
of it at each scrape. So a scrape never sees half of an update, and a figure
nobody knows yet (no drill ever ran, a role not allowed to list the archive
status directory) is absent rather than a made-up 0 an alert would misread.
The registry is the daemon's own, not prometheus_client's global one: no
process or platform collectors are exposed unless asked for, and tests can
build as many ``Metrics`` as they like.

Label ``task``, not ``job``: Prometheus sets ``job`` on every series from the
scrape configuration and would rename ours to ``exported_job``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "janua_backup_"
ROLES = ("primary", "standby")  # pg.stats.ROLES; this module imports nothing of janua_backup


@dataclass(frozen=True, slots=True)
class LastBackup:
    finished: float  # Unix time the backup became consistent (its manifest's stop time)
    duration_s: float
    size_bytes: int  # bytes of the data directory copied
    stored_bytes: int  # bytes in the repository after compression and encryption


@dataclass(frozen=True, slots=True)
class LastDrill:
    passed: bool
    finished: float  # Unix time
    duration_s: float


@dataclass(frozen=True, slots=True)
class ArchiverStats:
    """``pg_stat_archiver`` and the archive status directory, as last read."""

    archived_count: int
    failed_count: int
    last_archived: float | None  # Unix time; None: nothing archived since the stats reset
    last_failed: float | None
    ready_segments: int | None  # None: the role may not list pg_wal/archive_status


@dataclass(frozen=True, slots=True)
class _State:
    started: float
    success: dict[str, float]
    failures: dict[str, int]
    backup: LastBackup | None
    drill: LastDrill | None
    archiver: ArchiverStats | None
    repository_bytes: int | None
    role: str | None


class Metrics:
    """Thread-safe: jobs update from the scheduler's threads, scrapes read from the server's."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._started = clock()
        self._success: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._backup: LastBackup | None = None
        self._drill: LastDrill | None = None
        self._archiver: ArchiverStats | None = None
        self._repository_bytes: int | None = None
        self._role: str | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self.snapshot))

    def track(self, tasks: Iterable[str]) -> None:
        """Expose a 0 failure count for each scheduled task, so ``increase()`` sees the first."""
        with self._lock:
            for task in tasks:
                self._failures.setdefault(task, 0)

    def succeeded(self, task: str, when: float) -> None:
        with self._lock:
            self._success[task] = max(when, self._success.get(task, when))

    def failed(self, task: str) -> None:
        with self._lock:
            self._failures[task] = self._failures.get(task, 0) + 1

    def backup_taken(self, backup: LastBackup) -> None:
        """A newer backup replaces the figures; an older one (read from the repository
        while a job was committing a newer one) is ignored."""
        with self._lock:
            if self._backup is None or backup.finished >= self._backup.finished:
                self._backup = backup
            self._success["backup"] = max(backup.finished, self._success.get("backup", 0.0))

    def drill_finished(self, drill: LastDrill) -> None:
        with self._lock:
            if self._drill is None or drill.finished >= self._drill.finished:
                self._drill = drill
            if drill.passed:
                self._success["verify"] = max(drill.finished, self._success.get("verify", 0.0))

    def set_archiver(self, stats: ArchiverStats | None) -> None:
        """``None`` when PostgreSQL could not be asked: stale figures would hide a failure."""
        with self._lock:
            self._archiver = stats

    def set_repository_size(self, size_bytes: int) -> None:
        with self._lock:
            self._repository_bytes = size_bytes

    def set_role(self, role: str | None) -> None:
        """``primary`` or ``standby`` as PostgreSQL last said; ``None`` when it could not
        be asked (the role of a node that does not answer is unknown, not its old one)."""
        with self._lock:
            self._role = role

    def snapshot(self) -> _State:
        with self._lock:
            return _State(
                started=self._started,
                success=dict(self._success),
                failures=dict(self._failures),
                backup=self._backup,
                drill=self._drill,
                archiver=self._archiver,
                repository_bytes=self._repository_bytes,
                role=self._role,
            )

    def render(self) -> bytes:
        """The text exposition format, as the endpoint serves it."""
        return generate_latest(self.registry)

    def serve(self, address: str, port: int) -> Server:
        """Serves ``/metrics`` from a daemon thread; ``OSError`` if the port cannot be bound."""
        httpd, thread = start_http_server(port, address, registry=self.registry)
        return Server(httpd, thread)


class Server:
    def __init__(self, httpd: Any, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class _Collector(Collector):
    def __init__(self, read: Callable[[], _State]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        state = self._read()
        yield _gauge("daemon_start_timestamp_seconds", "When this daemon started.", state.started)
        success = GaugeMetricFamily(
            PREFIX + "last_success_timestamp_seconds",
            "When each task last succeeded (backup: when the newest backup became consistent).",
            labels=["task"],
        )
        for task, when in sorted(state.success.items()):
            success.add_metric([task], when)
        yield success
        failures = CounterMetricFamily(
            PREFIX + "job_failures",
            "Scheduled runs that failed, by task, since the daemon started.",
            labels=["task"],
        )
        for task, count in sorted(state.failures.items()):
            failures.add_metric([task], count)
        yield failures
        yield from _backup(state.backup)
        yield from _drill(state.drill)
        yield from _archiver(state.archiver)
        yield from _role(state.role)
        if state.repository_bytes is not None:
            yield _gauge(
                "repository_size_bytes",
                "Bytes stored under the repository (backups, WAL, reports).",
                state.repository_bytes,
            )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, value=value)


def _backup(backup: LastBackup | None) -> Iterator[Metric]:
    if backup is None:
        return
    yield _gauge(
        "last_backup_duration_seconds", "How long the newest backup took.", backup.duration_s
    )
    yield _gauge(
        "last_backup_size_bytes", "Data directory bytes the newest backup holds.", backup.size_bytes
    )
    yield _gauge(
        "last_backup_stored_bytes",
        "Bytes the newest backup takes in the repository.",
        backup.stored_bytes,
    )


def _drill(drill: LastDrill | None) -> Iterator[Metric]:
    if drill is None:
        return
    yield _gauge(
        "last_drill_passed", "1 if the newest restore drill passed, else 0.", float(drill.passed)
    )
    yield _gauge(
        "last_drill_timestamp_seconds", "When the newest restore drill finished.", drill.finished
    )
    yield _gauge(
        "last_drill_duration_seconds",
        "How long the newest restore drill took (restore, recovery, checks).",
        drill.duration_s,
    )


def _role(role: str | None) -> Iterator[Metric]:
    """One series per role, 1 for the node's current one (Prometheus' state-set shape:
    ``janua_backup_node_role{role="primary"} == 1`` selects the primary's daemon)."""
    if role is None:
        return
    family = GaugeMetricFamily(
        PREFIX + "node_role",
        "1 for the role this node's PostgreSQL has now (primary or standby), else 0.",
        labels=["role"],
    )
    for name in ROLES:
        family.add_metric([name], float(name == role))
    yield family


def _archiver(stats: ArchiverStats | None) -> Iterator[Metric]:
    if stats is None:
        return
    yield _gauge(
        "wal_archived_count",
        "WAL files archived since the statistics reset (pg_stat_archiver).",
        stats.archived_count,
    )
    yield _gauge(
        "wal_failed_count",
        "Failed WAL archiving attempts since the statistics reset (pg_stat_archiver).",
        stats.failed_count,
    )
    if stats.last_archived is not None:
        yield _gauge(
            "wal_last_archived_timestamp_seconds",
            "When the last WAL file was archived.",
            stats.last_archived,
        )
    if stats.last_failed is not None:
        yield _gauge(
            "wal_last_failed_timestamp_seconds",
            "When WAL archiving last failed.",
            stats.last_failed,
        )
    if stats.ready_segments is not None:
        yield _gauge(
            "wal_ready_segments",
            "WAL files waiting to be archived (.ready in pg_wal/archive_status).",
            stats.ready_segments,
        )
