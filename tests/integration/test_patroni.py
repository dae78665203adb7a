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

import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from localstack import PgCluster

from tests.conftest import KEEP_DIRS
from tests.integration import janua
from tests.integration.patroni_cluster import PatroniCluster, find_etcd
from tests.integration.test_pitr import s3_spec

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def patroni(
    workdir: Path, pg_bindir: Path, janua_exe: Path, s3_server: Any, s3_bucket: str
) -> Iterator[PatroniCluster]:
    """etcd + node1 (leader) + node2 (streaming replica), archiving into one S3 repository."""
    etcd = find_etcd()
    if etcd is None:
        pytest.skip("no etcd program: apt-get install etcd-server (.ci/run does)")
    if not (janua_exe.parent / "patroni").exists():
        pytest.skip("no patroni in the venv: install the test extra (scripts/setup-env does)")
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
    report = janua.run_json(janua_exe, node1.config, "verify", "--repo")
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
