"""A daemon on every node of a primary + streaming replica: one backup per turn, across a failover.

Both daemons run the same policy (``backup.from = "primary"``, a backup every
15 s). Each turn the primary's daemon takes the backup and the standby's skips,
saying why; no turn has two backups. Then the primary stops and the standby is
promoted (``pg_ctl promote``): without a restart, the daemon beside it sees
its server is now a primary and takes the next turn's backup, on timeline 2,
and its role metric says primary.
"""

from __future__ import annotations

import signal
import subprocess
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.integration import janua, test_daemon
from tests.integration.ha import Daemon, cluster, start_daemon, two_nodes
from tests.integration.test_daemon import scrape, wait_for
from tests.integration.test_pitr import s3_spec

daemon_env = test_daemon.daemon_env  # the fixtures, shared with this module
stopper = test_daemon.stopper

EVERY_S = 15
POLICY = f"""
[schedule]
backup = "@every {EVERY_S}s"
verify = ""
expire = ""
check = ""

[backup]
from = "primary"
"""
STANDBY_SKIPS = "this node is a standby and the policy's backup.from is 'primary'"


def turns(daemon: Daemon, outcome: str) -> list[dict[str, Any]]:
    return [
        line for line in daemon.log.matching(r"^job done job=backup") if line["outcome"] == outcome
    ]


def turn_of(moment: str) -> int:
    """The turn a time falls in: @every intervals count from the epoch on every node."""
    return int(datetime.fromisoformat(moment).timestamp() // EVERY_S)


def assert_one_backup_per_turn(listing: dict[str, Any]) -> list[int]:
    started = [turn_of(b["start_time"]) for b in listing["backups"]]
    assert len(started) == len(set(started)), f"two backups in one turn: {listing['backups']}"
    return started


def test_one_backup_per_turn_from_the_primary_and_the_new_primary_after_a_failover(
    s3_server: Any,
    s3_bucket: str,
    pg_factory: Any,
    janua_exe: Path,
    daemon_env: dict[str, str],
    stopper: list[subprocess.Popen[bytes]],
) -> None:
    spec = s3_spec(s3_server, s3_bucket)
    primary, standby = two_nodes(pg_factory, janua_exe, spec)
    primary.cluster.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
    policy = primary.config.parent / "policy.toml"
    policy.write_text(POLICY)
    on_primary = start_daemon(janua_exe, primary, policy, daemon_env, stopper)
    on_standby = start_daemon(janua_exe, standby, policy, daemon_env, stopper)

    # Two turns: the primary's daemon backs up, the standby's skips and says why.
    wait_for("two backups", lambda: len(turns(on_primary, "ok")) >= 2, on_primary.proc)
    wait_for("two skipped turns", lambda: len(turns(on_standby, "skipped")) >= 2, on_standby.proc)
    taken = turns(on_primary, "ok")
    skipped = turns(on_standby, "skipped")
    assert all(line["role"] == "primary" for line in taken)
    assert [(s["role"], s["from"], s["summary"]) for s in skipped[:2]] == [
        ("standby", "primary", f"{STANDBY_SKIPS}: the primary takes the backup")
    ] * 2
    assert "outcome=skipped" in skipped[0]["message"] and "role=standby" in skipped[0]["message"]
    assert not turns(on_standby, "ok") and not turns(on_standby, "failed")
    # The daemons agree on the turns: the standby skipped turns the primary backed up.
    assert {s["due"] for s in skipped} & {t["due"] for t in taken}
    listing = janua.run_json(janua_exe, primary.config, "list")
    before = assert_one_backup_per_turn(listing)
    assert {b["backup_id"] for b in listing["backups"]} == {t["backup_id"] for t in taken}
    standby_metrics = scrape(on_standby.metrics_port)
    assert standby_metrics['janua_backup_node_role{role="standby"}'] == 1
    assert standby_metrics['janua_backup_node_role{role="primary"}'] == 0
    assert standby_metrics['janua_backup_job_failures_total{task="backup"}'] == 0
    assert scrape(on_primary.metrics_port)['janua_backup_node_role{role="primary"}'] == 1

    # Failover: the old primary goes away (its daemon too), the standby is promoted.
    on_primary.proc.send_signal(signal.SIGTERM)
    assert on_primary.proc.wait(timeout=60) == 0, on_primary.log.path.read_text()
    primary.cluster.stop("fast")
    standby.cluster.promote()
    promoted = datetime.now().astimezone()
    standby.cluster.sql("INSERT INTO items VALUES (1, 'after the failover')")

    # The same daemon, not restarted, takes the next turn's backup on timeline 2.
    def after_promotion() -> list[dict[str, Any]]:
        return [
            t for t in turns(on_standby, "ok") if turn_of(t["due"]) > turn_of(promoted.isoformat())
        ]

    (first_after, *_) = wait_for("a backup on the new primary", after_promotion, on_standby.proc)
    assert first_after["role"] == "primary"
    assert not turns(on_standby, "failed")
    listing = janua.run_json(janua_exe, standby.config, "list")
    after = assert_one_backup_per_turn(listing)
    assert after[: len(before)] == before
    newest = next(b for b in listing["backups"] if b["backup_id"] == first_after["backup_id"])
    assert newest["timeline"] == 2
    metrics = scrape(on_standby.metrics_port)
    assert metrics['janua_backup_node_role{role="primary"}'] == 1
    assert metrics['janua_backup_node_role{role="standby"}'] == 0
    assert metrics['janua_backup_job_failures_total{task="backup"}'] == 0
    on_standby.proc.send_signal(signal.SIGTERM)
    assert on_standby.proc.wait(timeout=60) == 0, on_standby.log.path.read_text()


def test_when_two_nodes_are_eligible_the_lock_decides_and_the_loser_takes_no_second_backup(
    s3_server: Any,
    s3_bucket: str,
    pg_factory: Any,
    janua_exe: Path,
    daemon_env: dict[str, str],
    stopper: list[subprocess.Popen[bytes]],
) -> None:
    """``from = "any"``: two daemons whose servers can both back up fire at the same time.
    Expire runs on both too: it waits for the lock rather than failing.

    Both run beside the primary (until standbys back up, the one node that can): the
    race is the one two eligible nodes run, on the real repository lock. Each turn has
    one backup; the other daemon waited for the lock, found it and skipped, naming it.
    """
    spec = s3_spec(s3_server, s3_bucket)
    primary, _ = two_nodes(pg_factory, janua_exe, spec)
    policy = primary.config.parent / "policy.toml"
    # Expire too, at the same times: both nodes apply the retention, each waiting for the lock.
    policy.write_text(
        POLICY.replace('from = "primary"', 'from = "any"').replace(
            'expire = ""', 'expire = "@every 15s"'
        )
    )
    first = start_daemon(janua_exe, primary, policy, daemon_env, stopper)
    second = start_daemon(
        janua_exe, replace(primary, name="primary-again"), policy, daemon_env, stopper
    )

    def both_turns(daemon: Daemon) -> dict[str, dict[str, Any]]:
        return {line["due"]: line for line in daemon.log.matching(r"^job done job=backup")}

    def two_shared_turns() -> list[str] | None:
        shared = sorted(set(both_turns(first)) & set(both_turns(second)))
        return shared if len(shared) >= 2 else None

    shared = wait_for("two turns run by both daemons", two_shared_turns, first.proc)
    for due in shared:
        lines = [both_turns(first)[due], both_turns(second)[due]]
        assert sorted(line["outcome"] for line in lines) == ["ok", "skipped"], lines
        (won,) = [line for line in lines if line["outcome"] == "ok"]
        (lost,) = [line for line in lines if line["outcome"] == "skipped"]
        assert lost["backup_id"] == won["backup_id"] and lost["role"] == "primary"
        assert "it is this turn's backup" in lost["summary"]
    listing = janua.run_json(janua_exe, primary.config, "list")
    assert_one_backup_per_turn(listing)
    for daemon in (first, second):
        expired = [line["outcome"] for line in daemon.log.matching(r"^job done job=expire")]
        assert expired and set(expired) == {"ok"}, expired
        metrics = scrape(daemon.metrics_port)
        assert metrics['janua_backup_job_failures_total{task="backup"}'] == 0
        assert metrics['janua_backup_job_failures_total{task="expire"}'] == 0
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=60) == 0, daemon.log.path.read_text()


def test_from_standby_two_standbys_take_one_backup_per_turn_and_the_primary_skips(
    s3_server: Any,
    s3_bucket: str,
    pg_factory: Any,
    janua_exe: Path,
    daemon_env: dict[str, str],
    stopper: list[subprocess.Popen[bytes]],
) -> None:
    """``from = "standby"`` with two standbys: both are eligible, one backs up per turn
    (from the standby it runs on), the other finds it; the primary skips and says why."""
    spec = s3_spec(s3_server, s3_bucket)
    nodes = cluster(pg_factory, janua_exe, spec, standbys=2)
    policy = nodes[0].config.parent / "policy.toml"
    policy.write_text(POLICY.replace('from = "primary"', 'from = "standby"'))
    on_primary, *on_standbys = [
        start_daemon(janua_exe, node, policy, daemon_env, stopper) for node in nodes
    ]

    def by_turn(daemon: Daemon) -> dict[str, dict[str, Any]]:
        return {line["due"]: line for line in daemon.log.matching(r"^job done job=backup")}

    def two_shared_turns() -> list[str] | None:
        turns_run = [set(by_turn(daemon)) for daemon in (on_primary, *on_standbys)]
        shared = sorted(set.intersection(*turns_run))
        return shared if len(shared) >= 2 else None

    shared = wait_for("two turns run by all three daemons", two_shared_turns, on_primary.proc)
    for due in shared:
        skipped = by_turn(on_primary)[due]
        assert (skipped["outcome"], skipped["role"]) == ("skipped", "primary")
        assert skipped["summary"] == (
            "this node is a primary and the policy's backup.from is 'standby': "
            "the standby takes the backup"
        )
        lines = [by_turn(daemon)[due] for daemon in on_standbys]
        assert sorted(line["outcome"] for line in lines) == ["ok", "skipped"], lines
        (won,) = [line for line in lines if line["outcome"] == "ok"]
        (lost,) = [line for line in lines if line["outcome"] == "skipped"]
        assert won["role"] == lost["role"] == "standby"
        assert lost["backup_id"] == won["backup_id"]
    listing = janua.run_json(janua_exe, nodes[0].config, "list")
    assert_one_backup_per_turn(listing)
    assert {b["source"] for b in listing["backups"]} == {"standby"}
    for daemon in (on_primary, *on_standbys):
        metrics = scrape(daemon.metrics_port)
        assert metrics['janua_backup_job_failures_total{task="backup"}'] == 0
        role = "primary" if daemon is on_primary else "standby"
        assert metrics[f'janua_backup_node_role{{role="{role}"}}'] == 1
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=60) == 0, daemon.log.path.read_text()
