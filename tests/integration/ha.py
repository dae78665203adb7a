"""A primary and a streaming replica on this machine, and a janua daemon next to each.

Reusable by the HA tests (manual promote here, Patroni elsewhere): ``two_nodes``
builds the pair, each with its own janua config file pointing at the same
repository and at its own server; ``start_daemon`` runs ``janua-backup daemon``
beside a node as the README says, its JSON log in a file and metrics on a free
port. The replica is made with ``pg_basebackup -R`` (streaming, a
``standby.signal``), so ``pg_ctl promote`` makes it a primary on timeline 2.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localstack import PgCluster, archiving_settings, as_postgres, free_port

from tests.integration import janua
from tests.integration.test_daemon import DaemonLog


@dataclass
class Node:
    """One PostgreSQL server and the janua config file of the daemon beside it."""

    name: str
    cluster: PgCluster
    config: Path


def two_nodes(
    factory: Any,
    exe: Path,
    spec: janua.RepoSpec,
    *,
    extra: Mapping[str, str] | None = None,
) -> tuple[Node, Node]:
    """(primary, standby): both archive into ``spec``'s repository with their own config
    (``archive_mode = on``: only the primary archives until ``extra`` says ``always``)."""
    primary_home = factory.empty_dir()
    primary_config = janua.write_config(primary_home / "janua.toml", spec)
    settings = archiving_settings(janua.archive_command(exe, primary_config))
    settings.update(extra or {})
    primary = factory(settings)
    janua.write_config(primary_config, spec, pgdata=primary.pgdata, dsn=primary.dsn)
    standby = replica_of(factory, primary)
    standby_config = janua.write_config(
        factory.empty_dir() / "janua.toml", spec, pgdata=standby.pgdata, dsn=standby.dsn
    )
    # The replica's postgresql.conf is the primary's copy: point its archive_command at its
    # own config, so that once promoted it archives as itself.
    standby.configure({"archive_command": janua.archive_command(exe, standby_config)})
    standby.start()
    standby.wait_ready()
    return Node("primary", primary, primary_config), Node("standby", standby, standby_config)


def replica_of(factory: Any, primary: PgCluster) -> PgCluster:
    """A streaming replica of ``primary`` (``pg_basebackup -R``), on its own port; not started."""
    pgdata = factory.empty_dir()
    argv = [
        str(primary.bindir / "pg_basebackup"), "-D", str(pgdata), "-R", "-X", "stream",
        "-c", "fast", "--no-sync", "-h", str(primary.socket_dir), "-p", str(primary.port),
        "-U", "postgres",
    ]  # fmt: skip
    done = subprocess.run(as_postgres(argv), capture_output=True, text=True, cwd="/", check=False)
    assert done.returncode == 0, f"pg_basebackup failed:\n{done.stdout}{done.stderr}"
    replica: PgCluster = factory.adopt(pgdata)
    return replica


@dataclass
class Daemon:
    node: Node
    proc: subprocess.Popen[bytes]
    log: DaemonLog
    metrics_port: int


def start_daemon(
    exe: Path, node: Node, policy: Path, env: Mapping[str, str], started: list[Any]
) -> Daemon:
    """``janua-backup daemon`` beside ``node``; appended to ``started`` (to be killed)."""
    port = free_port()
    log = DaemonLog(node.config.parent / f"daemon-{node.name}.log")
    with log.path.open("wb") as stderr:
        proc = subprocess.Popen(
            [str(exe), "--config", str(node.config), "--log-format", "json",
             "daemon", "--policy", str(policy), "--metrics-port", str(port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            cwd="/", env=dict(env),
        )  # fmt: skip
    started.append(proc)
    return Daemon(node, proc, log, port)
