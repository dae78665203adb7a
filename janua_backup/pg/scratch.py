"""A throw-away PostgreSQL server on a restored data directory, for restore drills.

Owns finding binaries of the right major version, starting the postmaster on
a free port with settings that keep it away from production, waiting for
recovery to finish, and stopping it. Nothing of storage or the repository.

Why the overrides: a restored data directory carries production's settings.
The drill server must not archive into the repository (archive_mode=off), must
not wait for a synchronous standby that will never come (writes would hang),
must not point its logs, SSL files, hba or data_directory at production paths,
and must accept only our own connections: it listens on a socket in a
directory only its owner can enter, with an hba file that trusts that socket
alone (TCP on 127.0.0.1 is open but has no hba entry, so it refuses all).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from janua_backup.errors import ConfigError, FormatError, PostgresError
from janua_backup.pg.version import parse_version_output

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 15


class Cancelled(PostgresError):
    """The caller asked the drill to stop; not a finding about the backup."""


def find_bindir(major: int, configured: str | None) -> Path:
    """The server programs for ``major``: postgres.bindir, else ``pg_config``, else Debian's."""
    candidates: list[Path] = []
    if configured:
        candidates.append(Path(configured))
    else:
        pg_config = shutil.which("pg_config")
        if pg_config:
            done = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=False
            )
            if done.returncode == 0:
                candidates.append(Path(done.stdout.strip()))
        candidates.append(Path(f"/usr/lib/postgresql/{major}/bin"))
    for bindir in candidates:
        if _major_of(bindir) == major:
            return bindir
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError(
        f"no PostgreSQL {major} server programs found (tried {tried}); the backup needs "
        f"PostgreSQL {major}: install it or point --pg-bindir / postgres.bindir at its bin "
        "directory"
    )


def _major_of(bindir: Path) -> int | None:
    postgres = bindir / "postgres"
    if not postgres.exists():
        return None
    done = subprocess.run([str(postgres), "--version"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None
    try:
        return parse_version_output(done.stdout).major
    except FormatError:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Owner:
    """The OS user the server runs as: the data directory's owner, never root."""

    uid: int
    gid: int
    name: str

    @classmethod
    def of(cls, path: Path) -> Owner:
        st = path.stat()
        try:
            name = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            name = str(st.st_uid)
        return cls(st.st_uid, st.st_gid, name)


class ScratchServer:
    """One postmaster on ``pgdata``; ``home`` holds its socket, hba file and log."""

    def __init__(
        self,
        pgdata: Path,
        home: Path,
        bindir: Path,
        *,
        user: str,
        owner: Owner,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.pgdata = pgdata
        self.home = home
        self.bindir = bindir
        self.user = user  # the database role we connect as
        self.owner = owner
        self.env = dict(env if env is not None else os.environ)
        self.port = free_port()
        self.socket_dir = home / "socket"
        self.log_path = home / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _settings(self) -> dict[str, str]:
        settings = {
            "port": str(self.port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.socket_dir),
            "unix_socket_permissions": "0700",
            "hba_file": str(self.home / "pg_hba.conf"),
            "ident_file": str(self.home / "pg_ident.conf"),
            "data_directory": str(self.pgdata),
            "archive_mode": "off",
            "synchronous_standby_names": "",
            "hot_standby": "on",
            "logging_collector": "off",
            "log_destination": "stderr",
            "ssl": "off",
            "shared_buffers": "128MB",
            "cluster_name": "janua-verify",
        }
        if not (self.pgdata / "postgresql.conf").exists():
            # Debian keeps postgresql.conf in /etc: the backup has none. Production's
            # file is not ours to read here; the defaults plus auto.conf replay WAL.
            settings["config_file"] = str(self.home / "postgresql.conf")
        return settings

    def _prepare_home(self) -> None:
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        (self.home / "pg_hba.conf").write_text("local all all trust\n")
        (self.home / "pg_ident.conf").write_text("")
        (self.home / "postgresql.conf").write_text("# janua-backup verify: defaults\n")
        for path in (self.home, self.socket_dir, *self.home.iterdir()):
            with contextlib.suppress(PermissionError):
                os.chown(path, self.owner.uid, self.owner.gid)

    def start(self) -> None:
        self._prepare_home()
        argv = [str(self.bindir / "postgres"), "-D", str(self.pgdata)]
        for name, value in self._settings().items():
            argv += ["-c", f"{name}={value}"]
        as_root = os.geteuid() == 0
        if as_root and self.owner.uid == 0:
            raise PostgresError(
                f"{self.pgdata} is owned by root; PostgreSQL refuses to run as root "
                "(restore as root gives files the owner recorded in the backup)"
            )
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        try:
            self._proc = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.home,
                env=self.env,
                user=self.owner.uid if as_root else None,
                group=self.owner.gid if as_root else None,
                extra_groups=[] if as_root else None,
                start_new_session=True,  # a Ctrl-C in the terminal is ours to handle
            )
        finally:
            log_file.close()
        log.info("scratch server started pid=%d port=%d", self._proc.pid, self.port)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _exited(self) -> PostgresError:
        code = self._proc.returncode if self._proc else None
        return PostgresError(
            f"the scratch server stopped (exit {code}) before recovery finished; "
            f"its log ends with: {_one_line(self.log_tail(3))}"
        )

    @contextlib.contextmanager
    def connect(self, dbname: str = "postgres") -> Iterator[psycopg.Connection[Any]]:
        import psycopg

        try:
            conn = psycopg.connect(
                host=str(self.socket_dir),
                port=self.port,
                user=self.user,
                dbname=dbname,
                autocommit=True,
                connect_timeout=10,
            )
        except psycopg.Error as exc:
            raise PostgresError(f"cannot connect to database {dbname}: {_first_line(exc)}") from exc
        try:
            yield conn
        finally:
            conn.close()

    def query(self, sql: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        import psycopg

        with self.connect(dbname) as conn:
            try:
                return [tuple(r) for r in conn.execute(sql.encode()).fetchall()]
            except psycopg.Error as exc:
                raise PostgresError(f"{_first_line(exc)} (query: {sql})") from exc

    def wait_promoted(self, timeout_s: float, cancel: threading.Event | None = None) -> None:
        """Until recovery has ended and the server accepts writes, or a loud failure.

        ``cancel`` (the daemon stopping) ends the wait with ``Cancelled``."""
        deadline = time.monotonic() + timeout_s
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled("the drill was cancelled while WAL was replaying")
            if not self.running:
                raise self._exited()
            with contextlib.suppress(PostgresError):
                if self.query("SELECT pg_is_in_recovery()")[0][0] is False:
                    return
            if time.monotonic() > deadline:
                raise PostgresError(
                    f"recovery did not finish within {timeout_s:.0f}s; "
                    f"the server log ends with: {_one_line(self.log_tail(3))}"
                )
            time.sleep(0.2)

    def stop(self, timeout_s: float = 60.0) -> None:
        """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGQUIT, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(wait_s)
                return
            except subprocess.TimeoutExpired:
                log.warning("scratch server pid=%d ignored signal %s", proc.pid, sig.name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def run_tool(self, program: str, *args: str, timeout_s: float) -> tuple[int, str]:
        """A client program of the same bindir (pg_amcheck, pg_checksums), as the owner."""
        as_root = os.geteuid() == 0
        try:
            done = subprocess.run(
                [str(self.bindir / program), *args],
                capture_output=True,
                text=True,
                cwd=self.home,
                env=self.env,
                user=self.owner.uid if as_root else None,
                group=self.owner.gid if as_root else None,
                extra_groups=[] if as_root else None,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return -1, f"{program} did not finish within {timeout_s:.0f}s"
        except OSError as exc:  # removed or not executable since it was looked for
            raise PostgresError(f"could not run {self.bindir / program}: {exc.strerror}") from exc
        return done.returncode, (done.stdout + done.stderr).strip()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _one_line(text: str) -> str:
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())
