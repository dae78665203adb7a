"""Integration fixtures: PostgreSQL clusters, directories postgres owns, the janua-backup program.

Every test under tests/integration is marked `integration`. Clusters are made with
initdb from JANUA_TEST_PG_BINDIR, else `pg_config --bindir`, else the Debian
PostgreSQL 15 directory; as root they run as the postgres OS user. Tests marked
``pg_matrix`` run again on each bin directory in JANUA_TEST_PG_MATRIX (':'-separated;
.ci/run sets it to the PostgreSQL 14, 16, 17 and 18 that scripts/pg-matrix fetches).
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from localstack import (
    PgCluster,
    StackError,
    as_postgres,
    default_pg_bindir,
    free_port,
    log_tail,
    make_postgres_dir,
    running_as_root,
)

from janua_backup.errors import FormatError
from janua_backup.pg.version import parse_version_output
from tests.conftest import KEEP_DIRS

HERE = Path(__file__).resolve().parent


MATRIX_ENV = "JANUA_TEST_PG_MATRIX"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pg_matrix(only={...}): also run on each PostgreSQL of JANUA_TEST_PG_MATRIX; `only` "
        "names the one parameter set the extra majors run with",
    )


def matrix_bindirs() -> list[Path]:
    """The extra majors' bin directories: JANUA_TEST_PG_MATRIX, ':'-separated (CI sets it
    from scripts/pg-matrix, which fetches PostgreSQL 14, 16, 17 and 18)."""
    listed = os.environ.get(MATRIX_ENV, "")
    return [Path(p) for p in listed.split(":") if p.strip()]


def _major_id(bindir: Path) -> str:
    done = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
    )
    try:
        return f"pg{parse_version_output(done.stdout).major}"
    except FormatError:
        raise pytest.UsageError(f"{MATRIX_ENV}: no PostgreSQL server in {bindir}") from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked pg_matrix runs once per bin directory: the default one, then each of
    JANUA_TEST_PG_MATRIX, so the README's one test command also covers the extra majors."""
    extra = matrix_bindirs()
    if not extra or "pg_bindir" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("pg_matrix") is None:
        return
    bindirs = [default_bindir(), *extra]
    metafunc.parametrize(
        "pg_bindir", bindirs, ids=[_major_id(b) for b in bindirs], indirect=True, scope="session"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    deselected: list[pytest.Item] = []
    default = default_bindir()
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)
        marker = item.get_closest_marker("pg_matrix")
        params = getattr(item, "callspec", None)
        if marker is None or params is None or params.params.get("pg_bindir", default) == default:
            continue
        only: Mapping[str, object] = marker.kwargs.get("only", {})
        if any(params.params.get(name) != value for name, value in only.items()):
            deselected.append(item)  # an extra major runs one parameter set, not all
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [i for i in items if i not in deselected]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report carries the tail of each of its clusters' server logs."""
    report = yield
    factory = getattr(item, "funcargs", {}).get("pg_factory")
    if report.when == "call" and report.failed and isinstance(factory, PgFactory):
        for cluster in factory.clusters:
            report.sections.append((f"server log {cluster.log_path}", log_tail(cluster.log_path)))
    if report.when == "call" and report.failed:  # e.g. a PatroniCluster: etcd, Patroni, PG logs
        for value in getattr(item, "funcargs", {}).values():
            if callable(getattr(value, "log_sections", None)):
                report.sections.extend(value.log_sections())
    return report


class PgFactory:
    """Makes PgCluster instances on free ports in postgres-owned directories under base.

    Layout: base/cN/data (PGDATA), base/cN/data.log, base/sN (unix socket), base/dN
    (empty_dir). stop_all() stops every cluster made or adopted here.
    """

    def __init__(self, base: Path, bindir: Path) -> None:
        self.base = base
        self.bindir = bindir
        self.clusters: list[PgCluster] = []
        self._count = 0

    def _next(self, prefix: str) -> Path:
        self._count += 1
        return self.base / f"{prefix}{self._count}"

    def __call__(
        self,
        settings: Mapping[str, str] | None = None,
        *,
        start: bool = True,
        listen_addresses: str = "",
        initdb_args: Sequence[str] = (),
    ) -> PgCluster:
        """A new cluster (initdb), started unless start=False."""
        home = make_postgres_dir(self._next("c"), 0o755)
        cluster = PgCluster.initdb(
            home / "data",
            port=free_port(),
            socket_dir=self._next("s"),
            settings=settings,
            bindir=self.bindir,
            listen_addresses=listen_addresses,
            initdb_args=initdb_args,
        )
        self.clusters.append(cluster)
        if start:
            cluster.start()
        return cluster

    def empty_dir(self) -> Path:
        """A fresh empty directory owned by postgres, mode 0700: a restore target."""
        return make_postgres_dir(self._next("d"), 0o700)

    def adopt(
        self, pgdata: Path, *, settings: Mapping[str, str] | None = None, start: bool = False
    ) -> PgCluster:
        """A cluster on an existing data directory (e.g. restored), on a new port and socket."""
        cluster = PgCluster(
            pgdata, port=free_port(), socket_dir=self._next("s"), bindir=self.bindir
        )
        if settings:
            cluster.configure(settings)
        self.clusters.append(cluster)
        if start:
            cluster.start()
        return cluster

    def replica(
        self,
        primary: PgCluster,
        settings: Mapping[str, str] | None = None,
        *,
        start: bool = True,
        timeout_s: float = 60,
    ) -> PgCluster:
        """A streaming hot standby of ``primary``: ``pg_basebackup -R -X stream`` over the
        primary's unix socket (initdb's pg_hba trusts local replication), started on a
        free port with ``settings`` appended (e.g. its own archive_command), and
        waited for until it streams. For HA tests: a primary + replica on one machine."""
        home = make_postgres_dir(self._next("c"), 0o755)
        pgdata = home / "data"
        primary._run(
            "pg_basebackup", "-D", str(pgdata), "-R", "-X", "stream", "-c", "fast",
            "-h", str(primary.socket_dir), "-p", str(primary.port), "-U", "postgres",
        )  # fmt: skip
        standby = self.adopt(pgdata, settings=settings, start=start)
        if start:
            wait_streaming(primary, timeout_s)
        return standby

    def stop_all(self) -> None:
        """Stop every cluster (fast, then immediate); raise the failures once all are tried."""
        failures: list[str] = []
        for cluster in reversed(self.clusters):
            try:
                cluster.stop("fast", timeout_s=30)
            except StackError as fast_failure:
                try:
                    cluster.stop("immediate", timeout_s=30)
                except StackError as exc:
                    failures.append(f"{cluster}: {fast_failure}; then {exc}")
        if failures:
            raise StackError("could not stop clusters:\n" + "\n".join(failures))


def wait_streaming(primary: PgCluster, timeout_s: float = 60) -> None:
    """Until a standby streams from ``primary`` (pg_stat_replication says so)."""
    deadline = time.monotonic() + timeout_s
    while not primary.sql("SELECT 1 FROM pg_stat_replication WHERE state = 'streaming'"):
        if time.monotonic() > deadline:
            raise StackError(f"no standby streams from {primary} after {timeout_s:.0f}s")
        time.sleep(0.1)


def wait_replayed(primary: PgCluster, standby: PgCluster, timeout_s: float = 60) -> None:
    """Until ``standby`` has replayed everything ``primary`` had written when called."""
    (target,) = primary.sql("SELECT pg_current_wal_lsn()")[0]
    deadline = time.monotonic() + timeout_s
    while not standby.sql("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,))[0][0]:
        if time.monotonic() > deadline:
            raise StackError(f"{standby} did not replay up to {target} in {timeout_s:.0f}s")
        time.sleep(0.1)


def default_bindir() -> Path:
    """JANUA_TEST_PG_BINDIR, else pg_config's, else Debian's PostgreSQL 15."""
    override = os.environ.get("JANUA_TEST_PG_BINDIR")
    return Path(override) if override else default_pg_bindir()


@pytest.fixture(scope="session")
def pg_bindir(request: pytest.FixtureRequest) -> Path:
    """The PostgreSQL server programs' directory: JANUA_TEST_PG_BINDIR or pg_config's, or
    for a pg_matrix test, the major it is parametrised with."""
    bindir = Path(getattr(request, "param", None) or default_bindir())
    if not (bindir / "initdb").exists():
        pytest.exit(f"no initdb in {bindir}: install postgresql-15 or set JANUA_TEST_PG_BINDIR", 1)
    return bindir


@pytest.fixture
def pg_factory(workdir: Path, pg_bindir: Path) -> Iterator[PgFactory]:
    """Makes clusters for one test and stops them all afterwards, also when the test failed."""
    base = make_postgres_dir(Path(tempfile.mkdtemp(prefix="pg-", dir=workdir)), 0o755)
    factory = PgFactory(base, pg_bindir)
    try:
        yield factory
    finally:
        factory.stop_all()
        if not KEEP_DIRS:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_dir(pg_factory: PgFactory) -> Path:
    """A fresh empty directory owned by postgres (0700), removed with the test's clusters.

    It lives in the factory's directory so that the clusters started on it are
    stopped before it is removed.
    """
    return pg_factory.empty_dir()


@pytest.fixture(scope="session")
def janua_exe() -> Path:
    """The janua-backup console script of the venv running the tests, checked once to run
    as the user PostgreSQL runs as (it is the archive_command and restore_command)."""
    exe = Path(sys.executable).parent / "janua-backup"
    user = "postgres" if running_as_root() else getpass.getuser()
    hint = (
        "install the project into a virtual environment made with /usr/bin/python3 in a "
        f"directory {user} can read, e.g. `JANUA_VENV=/opt/janua-venv scripts/setup-env`, "
        "and run the tests with that environment's python (`scripts/test` does both)"
    )
    try:
        done = subprocess.run(
            as_postgres([str(exe), "--version"]),
            capture_output=True, text=True, cwd="/", timeout=60, check=False,
        )  # fmt: skip
        output = (done.stdout + done.stderr).strip()
        ok = done.returncode == 0
    except OSError as exc:
        output, ok = str(exc), False
    if not ok:
        pytest.exit(f"the {user} user cannot execute {exe}: {hint}\n{output}", returncode=1)
    return exe
