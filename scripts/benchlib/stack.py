"""The benchmark's servers: S3 over https, the source cluster, restored clusters.

Owns starting them, switching archive_command between the tools, pausing the
archiver, waiting for WAL to be archived, and timing a restored cluster's
recovery. Everything it starts is stopped by Stack.close(), which the caller
runs in a finally block (also on Ctrl-C). Must not import janua_backup.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from localstack import (
    PgCluster,
    SeaweedServer,
    StackError,
    archiving_settings,
    free_port,
    make_postgres_dir,
)

from benchlib.tls import TlsFiles

POLL_S = 0.05
# Not PostgreSQL's defaults: 1 GiB of max_wal_size would checkpoint in the middle of
# every 64-segment burst, at a moment that differs between rounds.
SOURCE_SETTINGS = {"max_wal_size": "4GB", "checkpoint_timeout": "30min"}


class Stack:
    """One S3 server and one source cluster under home (a directory postgres can read)."""

    def __init__(self, home: Path, tls: TlsFiles) -> None:
        self.home = home
        self.pause_flag = home / "archiving-paused"
        self.s3 = SeaweedServer(
            home / "s3", tls_cert_file=tls.cert_file, tls_key_file=tls.key_file,
            ca_file=tls.ca_file,
        )  # fmt: skip
        self.clusters: list[PgCluster] = []
        self.cluster: PgCluster | None = None
        # the tools' config directories (tools.py, barman.py): their processes name them
        self.tool_markers = [str(home / t) + "/" for t in ("janua", "pgbackrest", "barman")]

    def start(self, buckets: list[str]) -> PgCluster:
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o755)
        self.s3.start()
        for bucket in buckets:
            self.s3.create_bucket(bucket)
        settings = {**archiving_settings("/bin/true"), **SOURCE_SETTINGS}
        self.cluster = PgCluster.initdb(
            self.home / "source", port=free_port(), socket_dir=self.home / "sock",
            settings=settings,
        )  # fmt: skip
        self.clusters.append(self.cluster)
        self.cluster.start()
        return self.cluster

    @property
    def source(self) -> PgCluster:
        if self.cluster is None:
            raise StackError("the source cluster has not been started")
        return self.cluster

    # -- archiving

    def set_archive_command(self, command: str, *, pausable: bool = False) -> None:
        """ALTER SYSTEM + reload. pausable: the command first waits while the pause flag exists.

        Waiting (rather than failing, as '/bin/false' would) keeps PostgreSQL's
        archiver out of its retry sleep: once the flag is gone, the very next
        poll (20 ms) hands the first ready segment to the tool.
        """
        from psycopg import sql

        if pausable:
            command = f"while test -e {self.pause_flag}; do sleep 0.02; done; {command}"
        with self.source.connect() as conn:
            conn.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(command))
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.2)  # the archiver reads the file on its next wake-up

    def pause_archiving(self) -> None:
        self.pause_flag.touch()

    def resume_archiving(self) -> None:
        self.pause_flag.unlink(missing_ok=True)

    def ready_segments(self) -> int:
        status = self.source.pgdata / "pg_wal" / "archive_status"
        return sum(1 for p in status.glob("*.ready") if len(p.name) == len("0" * 24 + ".ready"))

    def wait_archived(self, segment: str, timeout_s: float = 1800) -> float:
        """Seconds until pg_stat_archiver.last_archived_wal reaches segment (polled every 50 ms)."""
        started = time.monotonic()
        deadline = started + timeout_s
        with self.source.connect() as conn:
            while True:
                row = conn.execute(
                    "SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, ''),"
                    " failed_count FROM pg_stat_archiver"
                ).fetchone()
                assert row is not None
                if row[0] and row[0][:24] >= segment:
                    return time.monotonic() - started
                if time.monotonic() > deadline:
                    raise StackError(
                        f"{segment} not archived after {timeout_s:.0f}s (last archived "
                        f"{row[0] or 'none'}, last failed {row[1] or 'none'}, {row[2]} failures;"
                        f" see {self.source.log_path})"
                    )
                time.sleep(POLL_S)

    def switch_and_wait(self) -> str:
        (segment,) = self.source.sql("SELECT pg_walfile_name(pg_switch_wal())")[0]
        self.wait_archived(str(segment), timeout_s=300)
        return str(segment)

    # -- restored clusters

    def empty_dir(self, name: str) -> Path:
        path = self.home / name
        if path.exists():
            shutil.rmtree(path)
        return make_postgres_dir(path, 0o700)

    def time_recovery(self, pgdata: Path, timeout_s: float = 3600) -> tuple[float, PgCluster]:
        """Start a restored data directory; seconds from pg_ctl start until promoted."""
        import psycopg

        cluster = PgCluster(pgdata, port=free_port(), socket_dir=self.home / "sock-restored")
        cluster.configure({"archive_mode": "off"})  # never archive into a repository
        self.clusters.append(cluster)
        started = time.monotonic()
        cluster.start(wait=False)
        while True:
            with contextlib.suppress(psycopg.OperationalError), cluster.connect() as conn:
                while conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,):
                    time.sleep(POLL_S)
                return time.monotonic() - started, cluster
            if time.monotonic() - started > timeout_s:
                raise StackError(f"{pgdata} still recovering after {timeout_s:.0f}s")
            if not (pgdata / "postmaster.pid").exists() and time.monotonic() - started > 5:
                raise StackError(f"{pgdata} did not start; see {cluster.log_path}")
            time.sleep(POLL_S)

    def drop_cluster(self, cluster: PgCluster) -> None:
        """Stop a restored cluster, end the tools' helpers working for it, remove it.

        A recovery prefetcher (janua's waits a minute for the next request)
        runs in the data directory it fetches for: its working directory says so.
        """
        cluster.stop("immediate")
        if cluster in self.clusters:
            self.clusters.remove(cluster)
        for pid in tool_pids(self.tool_markers):
            with contextlib.suppress(OSError):
                if Path(os.readlink(f"/proc/{pid}/cwd")).is_relative_to(cluster.pgdata):
                    os.kill(pid, signal.SIGTERM)
        shutil.rmtree(cluster.pgdata, ignore_errors=True)

    # -- the end

    def close(self) -> None:
        """Stop every cluster, then S3; then end the tools' detached helpers of this run."""
        self.resume_archiving()
        for cluster in reversed(self.clusters):
            with contextlib.suppress(Exception):
                cluster.stop("immediate")
        self.clusters.clear()
        self.s3.stop()
        end_leftovers(self.tool_markers)


def tool_pids(markers: list[str]) -> list[int]:
    """Pids of running processes (not our ancestors) whose arguments name one of markers.

    The tools' config files live in per-tool directories of this run, so their
    processes, including the detached helpers PostgreSQL never waits for
    (pgBackRest's async archiver), name such a directory in their arguments.
    """
    skip = _ancestors()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if any(m.encode() in cmdline for m in markers):
            found.append(int(entry))
    return found


def wait_quiet(markers: list[str], timeout_s: float = 60.0) -> bool:
    """Wait until no process of the tools is left; False if some still run after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while tool_pids(markers):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def end_leftovers(markers: list[str], grace_s: float = 10.0) -> None:
    """After grace_s, SIGTERM (by pid) what is left of the tools' processes of this run."""
    if wait_quiet(markers, grace_s):
        return
    for pid in tool_pids(markers):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _ancestors() -> set[int]:
    pids = {os.getpid()}
    pid = os.getpid()
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            break
        pid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        pids.add(pid)
    return pids


class Closing:
    """with Closing(stack): ... closes the stack on any exit, Ctrl-C included."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stack.close()
