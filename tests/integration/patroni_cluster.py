"""A real Patroni cluster on loopback for failover tests: one etcd, Patroni nodes, PostgreSQL 15.

etcd (Debian's ``etcd-server``) runs as a plain child process of the test on free
ports with a temporary data directory; each Patroni node (the venv's ``patroni``,
installed by the ``test`` extra) runs as the postgres OS user, since PostgreSQL
refuses root, with its own data directory, PostgreSQL port, REST API port, unix
socket directory and janua-backup config file. Every node archives into the same
repository with the ``archive_command`` that ``janua-backup archive-command``
prints for its config, and a replica catches up with ``wal-fetch`` as its
``restore_command``: what the README's Patroni section tells a user to write.

Every wait is bounded and raises ``PatroniError`` with what was seen;
``log_sections()`` gives the etcd, Patroni and PostgreSQL logs for a failed
test's report. ``stop()`` stops Patroni (which stops its PostgreSQL), then
etcd, and makes sure no process of theirs is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localstack import (
    POSTGRES_USER,
    PgCluster,
    StackError,
    chown_to_postgres,
    free_port,
    log_tail,
    make_postgres_dir,
    running_as_root,
    write_private,
)

from tests.integration import janua
from tests.integration.janua import RepoSpec

HOST = "127.0.0.1"
SCOPE = "janua-it"
ETCD_NAME = "etcd0"
LOG_LINES = 60


class PatroniError(StackError):
    """etcd or a Patroni node did not start, answer, switch over or stop in time."""


def find_etcd() -> Path | None:
    """The etcd server program (Debian: etcd-server), or None."""
    found = shutil.which("etcd")
    return Path(found) if found else None


def _wait_for(
    what: str, probe: Callable[[], Any], timeout_s: float, detail: Callable[[], str]
) -> Any:
    """Polls probe until it returns something truthy; PatroniError naming what, with detail."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise PatroniError(f"{what} not reached after {timeout_s:.0f}s\n{detail()}")
        time.sleep(0.3)


def _http_json(url: str, timeout_s: float = 2.0) -> tuple[int, Any]:
    """(status, decoded JSON body or None); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:  # Patroni answers 503 with a JSON body too
        status, body = exc.code, exc.read()
    except (OSError, ValueError):
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def _stop_process(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM the process group, wait bounded, then SIGKILL it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _in_recovery(pg: PgCluster) -> bool:
    """pg_is_in_recovery(); True while the server does not answer (it may be restarting)."""
    import psycopg

    try:
        return bool(pg.sql("SELECT pg_is_in_recovery()")[0][0])
    except psycopg.Error:
        return True


def _processes_naming(path: Path) -> dict[int, str]:
    """Processes whose command line names something under path: {pid: command line}."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        line = " ".join(a.decode(errors="replace") for a in argv if a)
        if str(path) in line:
            found[int(entry.name)] = line
    return found


def _child_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JANUA_BACKUP_", "AWS_", "PG", "PATRONI"))
    }
    env["HOME"] = str(home)
    return env


@dataclass
class Etcd:
    """One etcd member on loopback, v3 API, free ports, data in ``home``."""

    home: Path
    exe: Path
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.home / "etcd.log"

    def start(self, timeout_s: float = 30) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        peer = f"http://{HOST}:{self.peer_port}"
        argv = [
            str(self.exe), "--name", ETCD_NAME, "--data-dir", str(self.home / "data"),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{ETCD_NAME}={peer}", "--initial-cluster-state", "new",
            "--initial-cluster-token", f"janua-{self.client_port}",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.home, start_new_session=True,
            )  # fmt: skip

        def healthy() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise PatroniError(
                    f"etcd exited with status {self.proc.returncode}:\n{log_tail(self.log_path)}"
                )
            status, body = _http_json(f"{self.url}/health")
            return status == 200 and isinstance(body, dict) and body.get("health") == "true"

        _wait_for("etcd healthy", healthy, timeout_s, lambda: log_tail(self.log_path))

    def stop(self, timeout_s: float = 15) -> None:
        if self.proc is not None:
            _stop_process(self.proc, timeout_s)


@dataclass
class PatroniNode:
    """One Patroni node: its directories, ports, janua config and process."""

    name: str
    home: Path  # owned by postgres: data/, sockets, patroni.yml, janua.toml, logs
    pg_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        return self.home / "s"

    @property
    def config(self) -> Path:
        """This node's janua-backup config file (0600, owned by postgres)."""
        return self.home / "janua.toml"

    @property
    def patroni_yml(self) -> Path:
        return self.home / "patroni.yml"

    @property
    def log_path(self) -> Path:
        return self.home / "patroni.log"

    @property
    def pg_log_dir(self) -> Path:
        return self.home / "pglog"

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def dsn(self) -> str:
        return f"host={self.socket_dir} port={self.pg_port} user={POSTGRES_USER} dbname=postgres"

    @property
    def pg(self) -> PgCluster:
        """A handle to run SQL on this node's PostgreSQL (Patroni starts and stops it)."""
        return PgCluster(self.data_dir, port=self.pg_port, socket_dir=self.socket_dir)

    def status(self) -> dict[str, Any]:
        """Patroni's GET /patroni (role, state, timeline, replication_state), or {}."""
        _, body = _http_json(f"{self.api_url}/patroni")
        return body if isinstance(body, dict) else {}

    def pg_log_tail(self) -> str:
        logs = sorted(self.pg_log_dir.glob("*.log")) if self.pg_log_dir.exists() else []
        return "\n".join(f"== {p.name}\n{log_tail(p, LOG_LINES)}" for p in logs) or "(none)"


class PatroniCluster:
    """etcd plus Patroni nodes archiving into one janua repository."""

    def __init__(
        self,
        base: Path,
        *,
        etcd_exe: Path,
        janua_exe: Path,
        spec: RepoSpec,
        bindir: Path,
        node_names: Sequence[str] = ("node1", "node2"),
    ) -> None:
        self.base = make_postgres_dir(base, 0o755)
        self.janua_exe = janua_exe
        self.spec = spec
        self.bindir = bindir
        self.patroni_exe = janua_exe.parent / "patroni"
        self.patronictl_exe = janua_exe.parent / "patronictl"
        self.etcd = Etcd(base / "etcd", etcd_exe)
        self.extra_logs: list[Path] = []  # e.g. janua daemons' logs, for log_sections()
        self.nodes = {
            name: PatroniNode(name, make_postgres_dir(base / name, 0o755)) for name in node_names
        }

    # -- configuration

    def _write_node_files(self, node: PatroniNode) -> None:
        make_postgres_dir(node.socket_dir, 0o755)
        make_postgres_dir(node.pg_log_dir, 0o755)
        janua.write_config(node.config, self.spec, pgdata=node.data_dir, dsn=node.dsn)
        archive_command = janua.printed_archive_command(self.janua_exe, node.config)
        restore_command = f"{self.janua_exe} --config {node.config} wal-fetch %f %p"
        pgpass = node.home / "pgpass"
        settings: dict[str, Any] = {
            "scope": SCOPE,
            "name": node.name,
            "restapi": {
                "listen": f"{HOST}:{node.api_port}",
                "connect_address": f"{HOST}:{node.api_port}",
            },
            "etcd3": {"hosts": [f"{HOST}:{self.etcd.client_port}"]},
            "bootstrap": {
                "dcs": {
                    "ttl": 20,
                    "loop_wait": 1,
                    "retry_timeout": 5,
                    "maximum_lag_on_failover": 16 * 1024 * 1024,
                    "postgresql": {
                        "use_pg_rewind": False,
                        "use_slots": True,
                        "parameters": {
                            "wal_level": "replica",
                            "hot_standby": "on",
                            "archive_mode": "on",
                            "track_commit_timestamp": "on",
                            "max_wal_senders": 5,
                            "max_replication_slots": 5,
                            "wal_keep_size": "256MB",
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, {"auth": "trust"}],
                "pg_hba": [
                    "local all all trust",
                    f"host all all {HOST}/32 trust",
                    f"host replication all {HOST}/32 trust",
                ],
            },
            "postgresql": {
                "listen": f"{HOST}:{node.pg_port}",
                "connect_address": f"{HOST}:{node.pg_port}",
                "data_dir": str(node.data_dir),
                "bin_dir": str(self.bindir),
                "pgpass": str(pgpass),
                "authentication": {
                    "superuser": {"username": POSTGRES_USER, "password": "unused-trust"},
                    "replication": {"username": POSTGRES_USER, "password": "unused-trust"},
                },
                "parameters": {
                    "unix_socket_directories": str(node.socket_dir),
                    "archive_command": archive_command,
                    "logging_collector": "on",
                    "log_directory": str(node.pg_log_dir),
                    "log_filename": "postgresql.log",
                },
                "recovery_conf": {"restore_command": restore_command},
                "create_replica_methods": ["basebackup"],
                "basebackup": [{"checkpoint": "fast"}],
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
        }
        # JSON is YAML: no dumper quirks, every string quoted.
        write_private(node.patroni_yml, json.dumps(settings, indent=2) + "\n")
        chown_to_postgres(node.patroni_yml)

    # -- life cycle

    def start(self, timeout_s: float = 90) -> None:
        """etcd, then the first node (it bootstraps the cluster), then the others as replicas."""
        self.etcd.start()
        names = list(self.nodes)
        for node in self.nodes.values():
            self._write_node_files(node)
        self._start_node(self.nodes[names[0]])
        self.wait_leader(names[0], timeout_s)
        for name in names[1:]:
            self._start_node(self.nodes[name])
        for name in names[1:]:
            self.wait_streaming(name, timeout_s)

    def _start_node(self, node: PatroniNode) -> None:
        extra: dict[str, Any] = {}
        if running_as_root():  # PostgreSQL refuses root; no runuser in between to signal
            extra = {"user": POSTGRES_USER, "group": POSTGRES_USER, "extra_groups": []}
        with node.log_path.open("ab") as log:
            node.proc = subprocess.Popen(
                [str(self.patroni_exe), str(node.patroni_yml)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=node.home, env=_child_env(node.home), start_new_session=True, **extra,
            )  # fmt: skip
        chown_to_postgres(node.log_path)

    def stop(self, timeout_s: float = 60) -> None:
        """Stop every node (Patroni stops its PostgreSQL), then etcd; nothing left running.

        A node whose Patroni did not stop its PostgreSQL gets ``pg_ctl stop -m immediate``.
        Raises PatroniError naming what could not be stopped, after trying everything.
        """
        failures: list[str] = []
        for node in self.nodes.values():
            if node.proc is not None:
                _stop_process(node.proc, timeout_s)
        for node in self.nodes.values():
            if (node.data_dir / "postmaster.pid").exists() and node.pg.is_running:
                try:
                    node.pg.stop("immediate", timeout_s=30)
                except StackError as exc:
                    failures.append(f"{node.name}: {exc}")
        self.etcd.stop()
        left = _processes_naming(self.base)
        if left:  # a program of the cluster the stops above missed: kill it, and say so
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            failures.append(f"processes left running, killed: {left}")
        if failures:
            raise PatroniError("could not stop:\n" + "\n".join(failures))

    # -- waits and actions

    def _detail(self) -> str:
        states = {name: node.status() for name, node in self.nodes.items()}
        return f"node states: {json.dumps(states, default=str)}\n{self.patronictl_list()}"

    def _check_alive(self) -> None:
        for node in self.nodes.values():
            if node.proc is not None and node.proc.poll() is not None:
                raise PatroniError(
                    f"patroni {node.name} exited with status {node.proc.returncode}:\n"
                    f"{log_tail(node.log_path, LOG_LINES)}"
                )

    def wait_leader(self, name: str, timeout_s: float = 90) -> dict[str, Any]:
        """Until ``name`` is the running primary and accepts writes; its /patroni status."""
        node = self.nodes[name]

        def leading() -> dict[str, Any] | None:
            self._check_alive()
            status = node.status()
            if status.get("role") in ("primary", "master") and status.get("state") == "running":
                status_code, _ = _http_json(f"{node.api_url}/primary")
                if status_code == 200 and not _in_recovery(node.pg):
                    return status
            return None

        found: dict[str, Any] = _wait_for(f"{name} leading", leading, timeout_s, self._detail)
        return found

    def wait_streaming(self, name: str, timeout_s: float = 90) -> dict[str, Any]:
        """Until ``name`` is a running replica streaming from the leader; its /patroni status."""
        node = self.nodes[name]

        def streaming() -> dict[str, Any] | None:
            self._check_alive()
            status = node.status()
            if (
                status.get("role") == "replica"
                and status.get("state") == "running"
                and status.get("replication_state") == "streaming"
            ):
                return status
            return None

        found: dict[str, Any] = _wait_for(f"{name} streaming", streaming, timeout_s, self._detail)
        return found

    def patronictl(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        first = next(iter(self.nodes.values()))
        return subprocess.run(
            [str(self.patronictl_exe), "-c", str(first.patroni_yml), *args],
            capture_output=True, text=True, cwd=first.home, env=_child_env(first.home),
            timeout=timeout_s, check=False,
        )  # fmt: skip

    def patronictl_list(self) -> str:
        try:
            done = self.patronictl("list", timeout_s=20)
        except subprocess.TimeoutExpired:
            return "(patronictl list timed out)"
        return f"patronictl list (exit {done.returncode}):\n{done.stdout}{done.stderr}"

    def switchover(self, leader: str, candidate: str, timeout_s: float = 90) -> None:
        """``patronictl switchover --leader --candidate --force``; waits for the new roles."""
        done = self.patronictl(
            "switchover", SCOPE, "--leader", leader, "--candidate", candidate, "--force"
        )
        if done.returncode != 0:
            raise PatroniError(
                f"patronictl switchover failed with status {done.returncode}:\n"
                f"{done.stdout}{done.stderr}\n{self._detail()}"
            )
        self.wait_leader(candidate, timeout_s)
        self.wait_streaming(leader, timeout_s)

    # -- post-mortem

    def log_sections(self) -> list[tuple[str, str]]:
        """(title, text) of each log, for a failed test's report."""
        sections = [(f"etcd log {self.etcd.log_path}", log_tail(self.etcd.log_path, LOG_LINES))]
        for node in self.nodes.values():
            sections.append(
                (f"patroni {node.name} {node.log_path}", log_tail(node.log_path, LOG_LINES))
            )
            sections.append((f"postgresql {node.name} {node.pg_log_dir}", node.pg_log_tail()))
        sections += [(f"log {path}", log_tail(path, LOG_LINES)) for path in self.extra_logs]
        return sections
