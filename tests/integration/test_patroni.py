"""A real failover with Patroni: two nodes on etcd, ``patronictl switchover``, janua on both.

Both nodes archive into one repository with the archive_command janua prints
and catch up with wal-fetch. After the switchover the new primary writes on
timeline 2: the archive must carry on there without a gap (verify --repo
passes, list shows the backup restorable to the newest segment on timeline
2), and a restore from the backup taken before the switchover must bring back
exactly the committed rows at a time before the switchover and at a time after
it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import pytest
from localstack import PgCluster, free_port

from tests.conftest import KEEP_DIRS
from tests.integration import janua
from tests.integration.patroni_cluster import PatroniCluster, find_etcd
from tests.integration.test_daemon import scrape
from tests.integration.test_pitr import s3_spec

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def patroni(
    workdir: Path, pg_bindir: Path, janua_exe: Path, s3_server: Any, s3_bucket: str
) -> Iterator[PatroniCluster]:
    """etcd + node1 (leader) + node2 (streaming replica), archiving into one S3 repository."""
    etcd = find_etcd()
    if etcd is None:
        _missing("no etcd program: apt-get install etcd-server (.ci/run does)")
    if not (janua_exe.parent / "patroni").exists():
        _missing("no patroni in the venv: install the test extra (scripts/setup-env does)")
    base = Path(tempfile.mkdtemp(prefix="patroni-", dir=workdir))
    cluster = PatroniCluster(
        base, etcd_exe=etcd, janua_exe=janua_exe, spec=s3_spec(s3_server, s3_bucket),
        bindir=pg_bindir,
    )  # fmt: skip
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        if not KEEP_DIRS:
            shutil.rmtree(base, ignore_errors=True)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def between(rows: list[tuple[int, datetime]], last_kept: int) -> str:
    """A time strictly between the commits of row ``last_kept`` and the row after it."""
    times = dict(rows)
    before, after = times[last_kept], times[last_kept + 1]
    assert before < after, rows
    return iso(before + (after - before) / 2)


def restore_and_start(
    pg_factory: Any, janua_exe: Path, config: Path, *args: str, timeout_s: float = 120
) -> PgCluster:
    """Restores into a fresh directory and starts it as a side copy, until recovery ends.

    Patroni's postgresql.conf names node paths (hba_file, log_directory): the copy is
    pointed at its own files so it touches nothing of the nodes, and never archives.
    """
    pgdata = pg_factory.empty_dir() / "pgdata"
    janua.ok(janua.run(janua_exe, config, "restore", "--pgdata", str(pgdata), *args))
    settings = {
        "archive_mode": "off",
        "logging_collector": "off",
        "hba_file": str(pgdata / "pg_hba.conf"),
        "ident_file": str(pgdata / "pg_ident.conf"),
    }
    cluster: PgCluster = pg_factory.adopt(pgdata, settings=settings, start=True)
    deadline = time.monotonic() + timeout_s
    while cluster.sql("SELECT pg_is_in_recovery()")[0][0]:
        assert time.monotonic() < deadline, f"{pgdata} still in recovery after {timeout_s}s"
        time.sleep(0.2)
    return cluster


def test_switchover_continues_wal_on_timeline_2_and_pitr_is_exact_on_both_sides(
    patroni: PatroniCluster, pg_factory: Any, janua_exe: Path
) -> None:
    node1, node2 = patroni.nodes["node1"], patroni.nodes["node2"]
    assert node1.status()["timeline"] == 1
    primary = node1.pg
    primary.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
    janua.insert_rows(primary, 1, 3)
    backup = janua.run_json(janua_exe, node1.config, "backup")
    before_switch = janua.insert_rows(primary, 4, 5)  # rows 4..8, on timeline 1

    patroni.switchover("node1", "node2")

    assert node2.status()["timeline"] == 2, node2.status()
    assert node1.status()["role"] == "replica"
    new_primary = node2.pg
    assert janua.ids(new_primary) == list(range(1, 9))  # nothing lost in the switchover
    after_switch = janua.insert_rows(new_primary, 9, 5)  # rows 9..13, on timeline 2
    newest = janua.switch_and_wait_archived(new_primary)
    assert newest.startswith("00000002"), newest

    # The archive continues on timeline 2 without a gap, seen from either node's config.
    report = janua.run_json(janua_exe, node1.config, "verify", "--repository-only")
    assert report["ok"] and report["problems"] == [], report
    (checked,) = report["backups"]
    assert checked["backup_id"] == backup["backup_id"] and checked["restorable"], checked
    assert checked["missing_wal"] is None and checked["last_wal"] == newest, checked
    listing = janua.run_json(janua_exe, node2.config, "list")
    (listed,) = listing["backups"]
    window = listed["window"]
    assert window["restorable"] and window["timeline"] == 2, window
    assert window["missing_wal"] is None and window["last_wal"] == newest, window

    # PITR from the backup taken before the switchover, to either side of it: exact rows.
    early = restore_and_start(
        pg_factory, janua_exe, node2.config, "--target-time", between(before_switch, 6)
    )
    assert janua.ids(early) == list(range(1, 7))
    early.stop()
    late = restore_and_start(
        pg_factory, janua_exe, node2.config, "--target-time", between(after_switch, 11)
    )
    assert janua.ids(late) == list(range(1, 12))
    late.stop()
    latest = restore_and_start(pg_factory, janua_exe, node1.config)
    assert janua.ids(latest) == list(range(1, 14))
    latest.stop()

    # The new primary backs up with its own config, on timeline 2; both backups listed.
    second = janua.run_json(janua_exe, node2.config, "backup")
    listing = janua.run_json(janua_exe, node1.config, "list")
    assert [b["backup_id"] for b in listing["backups"]] == [
        backup["backup_id"],
        second["backup_id"],
    ]
    assert [b["timeline"] for b in listing["backups"]] == [1, 2], listing


# ---------------------------------------------------------------- a daemon next to each node

EVERY_S = 8  # backup turns: @every counts from the epoch, so both daemons share them
DAEMON_POLICY = f"""
[schedule]
backup = "@every {EVERY_S}s"
verify = ""
expire = ""
check = ""

[backup]
from = "primary"
"""


@dataclass
class Turn:
    """One backup turn as one daemon logged it: when it began, its outcome, the backup."""

    fire: float  # the turn's fire time, seconds since the epoch
    outcome: str
    role: str | None
    backup_id: str | None


@dataclass
class Daemon:
    node: str
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_port: int

    def turns(self) -> list[Turn]:
        """The backup turns this daemon finished, in order (begin and done lines paired)."""
        found: list[Turn] = []
        begun: float | None = None
        for raw in self.log.read_text(encoding="utf-8").splitlines():
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if line.get("job") != "backup":
                continue
            if line.get("event") == "begin":
                begun = datetime.fromisoformat(line["time"]).timestamp()
            elif line.get("event") == "done" and begun is not None:
                found.append(
                    Turn(turn_of(begun), line["outcome"], line.get("role"), line.get("backup_id"))
                )
                begun = None
        return found

    def role(self) -> str:
        values = scrape(self.metrics_port)
        roles = [r for r in ("primary", "standby") if values.get(f'{ROLE}{{role="{r}"}}') == 1]
        return roles[0] if len(roles) == 1 else f"unknown: {values}"


ROLE = "janua_backup_node_role"


def turn_of(when: float) -> float:
    return when - when % EVERY_S


@pytest.fixture
def daemons(patroni: PatroniCluster, janua_exe: Path) -> Iterator[dict[str, Daemon]]:
    """``janua-backup daemon`` next to each node, with its own config; stopped afterwards."""
    started: dict[str, Daemon] = {}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JANUA_BACKUP_", "AWS_")) and k != "PGDATA"
    }
    try:
        for name, node in patroni.nodes.items():
            policy = node.home / "policy.toml"
            policy.write_text(DAEMON_POLICY)
            log = node.home / "daemon.log"
            patroni.extra_logs.append(log)
            port = free_port()
            with log.open("wb") as stderr:
                proc = subprocess.Popen(
                    [str(janua_exe), "--config", str(node.config), "--log-format", "json",
                     "daemon", "--policy", str(policy), "--metrics-port", str(port)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                    cwd="/", env=env,
                )  # fmt: skip
            started[name] = Daemon(name, proc, log, port)
        yield started
    finally:
        for daemon in started.values():
            if daemon.proc.poll() is None:
                daemon.proc.send_signal(signal.SIGTERM)
        for daemon in started.values():
            try:
                daemon.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.proc.kill()
                daemon.proc.wait(timeout=10)


def wait_turns(
    what: str,
    daemons: dict[str, Daemon],
    enough: Callable[[], bool],
    timeout_s: float = 30 + 4 * EVERY_S,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not enough():
        for daemon in daemons.values():
            assert daemon.proc.poll() is None, f"the {daemon.node} daemon exited while {what}"
        assert time.monotonic() < deadline, (
            f"{what}: not seen after {timeout_s:.0f}s; turns: "
            + "; ".join(f"{d.node}: {d.turns()}" for d in daemons.values())
        )
        time.sleep(0.3)


def test_a_daemon_on_each_node_takes_one_backup_per_turn_before_and_after_the_switchover(
    patroni: PatroniCluster, daemons: dict[str, Daemon], janua_exe: Path
) -> None:
    d1, d2 = daemons["node1"], daemons["node2"]

    def taken(daemon: Daemon, since: float = 0) -> list[Turn]:
        return [t for t in daemon.turns() if t.outcome == "ok" and t.fire >= since]

    def skipped(daemon: Daemon, since: float = 0) -> list[Turn]:
        return [t for t in daemon.turns() if t.outcome == "skipped" and t.fire >= since]

    wait_turns(
        "node1 backing up, node2 skipping",
        daemons,
        lambda: len(taken(d1)) >= 2 and len(skipped(d2, taken(d1)[0].fire)) >= 2,
    )
    assert (d1.role(), d2.role()) == ("primary", "standby")
    switch_started = time.time()
    patroni.switchover("node1", "node2")
    switch_done = time.time()
    wait_turns(
        "node2 backing up, node1 skipping after the switchover",
        daemons,
        lambda: len(taken(d2, switch_done)) >= 2 and len(skipped(d1, switch_done)) >= 2,
    )
    assert (d1.role(), d2.role()) == ("standby", "primary")  # the same daemons, not restarted
    for daemon in daemons.values():
        assert daemon.proc.poll() is None, f"the {daemon.node} daemon exited"
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=60) == 0, daemon.log.read_text()

    listing = janua.run_json(janua_exe, patroni.nodes["node1"].config, "list")
    backups = {
        b["backup_id"]: turn_of(datetime.fromisoformat(b["start_time"]).timestamp())
        for b in listing["backups"]
    }
    per_turn = Counter(backups.values())
    assert max(per_turn.values()) == 1, f"two backups in one turn: {sorted(backups.items())}"
    # Every backup the daemons reported is in the repository, taken in the turn it ran.
    reported = {t.backup_id: t.fire for d in (d1, d2) for t in taken(d)}
    assert reported == backups, (reported, backups)

    # Steady turns, when a primary was up the whole turn: exactly one backup each, by the
    # primary's daemon, while the standby's daemon skipped the same turn as a standby.
    # From the first turn both daemons ran (one may have started after a turn fired).
    first = max(taken(d1)[0].fire, d2.turns()[0].fire)
    last = turn_of(switch_started) - EVERY_S
    steady_before = turns_between(first, last)
    first, last = turn_of(switch_done) + EVERY_S, taken(d2, switch_done)[-1].fire
    steady_after = turns_between(first, last)
    assert len(steady_before) >= 1 and len(steady_after) >= 1, (steady_before, steady_after)
    for turns, primary, standby in ((steady_before, d1, d2), (steady_after, d2, d1)):
        for fire in turns:
            assert per_turn[fire] == 1, f"turn {fire}: {per_turn[fire]} backups"
            assert fire in {t.fire for t in taken(primary)}, (fire, primary.turns())
            assert any(t.fire == fire and t.role == "standby" for t in skipped(standby)), (
                fire,
                standby.turns(),
            )


def turns_between(first: float, last: float) -> list[float]:
    """Fire times from first to last inclusive (both on the turn grid)."""
    count = round((last - first) / EVERY_S) + 1
    return [first + i * EVERY_S for i in range(max(count, 0))]


def _missing(why: str) -> NoReturn:
    """Skip where etcd or Patroni is missing, except in CI (.ci/run installs both and sets
    JANUA_REQUIRE_PATRONI): there a missing part must fail, not pass as a skip."""
    if os.environ.get("JANUA_REQUIRE_PATRONI"):
        pytest.fail(f"{why}; .ci/run requires it (JANUA_REQUIRE_PATRONI)")
    pytest.skip(why)
