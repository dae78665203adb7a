"""A primary and a streaming replica on this machine, and a janua daemon next to each.

Reusable by the HA tests (manual promote here, Patroni elsewhere): ``two_nodes``
builds the pair, each with its own janua config file pointing at the same
repository and at its own server; ``start_daemon`` runs ``janua-backup daemon``
beside a node as the README says, its JSON log in a file and metrics on a free
port. Replicas are made with ``pg_basebackup -R`` (``pg_factory.replica``), so
``pg_ctl promote`` makes one a primary on timeline 2.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localstack import PgCluster, archiving_settings, free_port

from tests.integration import janua
from tests.integration.conftest import wait_streaming
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
    """(primary, standby): see ``cluster``."""
    primary, standby = cluster(factory, exe, spec, standbys=1, extra=extra)
    return primary, standby


def cluster(
    factory: Any,
    exe: Path,
    spec: janua.RepoSpec,
    *,
    standbys: int = 1,
    extra: Mapping[str, str] | None = None,
) -> list[Node]:
    """[primary, standby1, ...]: streaming replicas made with ``pg_basebackup -R``, each
    node with its own janua config on ``spec``'s repository (a standby's names the
    primary as ``primary_dsn``), and its own archive_command. ``archive_mode = on``:
    only the primary archives, unless ``extra`` says ``always``."""
    home = factory.empty_dir()
    primary_config = janua.write_config(home / "primary.toml", spec)
    settings = archiving_settings(janua.archive_command(exe, primary_config))
    settings.update(extra or {})
    primary = factory(settings)
    janua.write_config(primary_config, spec, pgdata=primary.pgdata, dsn=primary.dsn)
    nodes = [Node("primary", primary, primary_config)]
    for number in range(1, standbys + 1):
        config = home / f"standby{number}.toml"
        # The replica's postgresql.conf is the primary's copy: its archive_command names
        # its own config, so that once promoted it archives as itself.
        standby = factory.replica(
            primary, {"archive_command": janua.archive_command(exe, config)}, start=False
        )
        janua.write_config(
            config, spec, pgdata=standby.pgdata, dsn=standby.dsn, primary_dsn=primary.dsn
        )
        standby.start()
        standby.wait_ready()
        nodes.append(Node(f"standby{number}", standby, config))
    wait_streaming(primary)
    return nodes


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
