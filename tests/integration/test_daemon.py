"""The daemon as a person leaves it running: a backup on schedule, metrics, a clean stop.

One daemon, started the way the README says, on a policy whose backup runs
every 5 seconds. It must take a backup, serve metrics that agree with
``list``, and on SIGTERM in the middle of its next backup exit 0 leaving that
backup neither listed nor stored, and the repository lock released.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from localstack import free_port
from prometheus_client.parser import text_string_to_metric_families

from janua_backup import locks
from janua_backup.storage.s3 import S3Location, S3Storage
from tests import promtool
from tests.integration import janua
from tests.integration.test_pitr import s3_spec

T = TypeVar("T")
PREFIX = "cluster-a"  # s3_spec's repository path in the bucket
POLICY = """
[schedule]
backup = "@every 5s"
verify = ""
expire = ""
check = ""

[backup]
compression = "gzip"
level = 9
"""


class DaemonLog:
    """The daemon's stderr, one JSON object per line, read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for raw in self.path.read_text(encoding="utf-8").splitlines():
            try:
                found.append(json.loads(raw))
            except json.JSONDecodeError:
                found.append({"message": raw, "not_json": True})
        return found

    def matching(self, pattern: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if re.search(pattern, line["message"])]


def wait_for(what: str, probe: Callable[[], T | None], proc: subprocess.Popen[bytes]) -> T:
    deadline = time.monotonic() + 90
    while True:
        found = probe()
        if found:
            return found
        assert proc.poll() is None, f"the daemon exited {proc.returncode} while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def exposition(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return str(answer.read().decode())


def scrape(port: int) -> dict[str, float]:
    values = {}
    for family in text_string_to_metric_families(exposition(port)):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


@pytest.fixture
def daemon_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JANUA_BACKUP_", "AWS_")) and k != "PGDATA"
    }


@pytest.fixture
def stopper() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Daemons a test started: killed afterwards if the test left them running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_daemon_backs_up_serves_metrics_and_stops_cleanly_in_the_middle_of_a_backup(
    s3_server: Any,
    s3_bucket: str,
    s3_client: Any,
    pg_factory: Any,
    janua_exe: Path,
    daemon_env: dict[str, str],
    stopper: list[subprocess.Popen[bytes]],
) -> None:
    home = pg_factory.empty_dir()
    config = home / "janua.toml"
    spec = s3_spec(s3_server, s3_bucket, extra="[backup]\njobs = 1\n")  # slower: a window
    janua.write_config(config, spec)
    cluster = janua.archiving_cluster(pg_factory, janua_exe, config)
    janua.write_config(config, spec, pgdata=cluster.pgdata, dsn=cluster.dsn)
    # Two tables of about 20 MB of poorly compressible text: a backup of a few seconds at
    # gzip level 9, stored as several objects (big files first), so one can be seen stored
    # while the copy goes on.
    for table in ("filler_a", "filler_b"):
        cluster.sql(
            f"CREATE TABLE {table} AS SELECT i, md5(i::text) AS a, md5((-i)::text) AS b"
            " FROM generate_series(1, 150000) i"
        )
    policy = home / "policy.toml"
    policy.write_text(POLICY)
    port = free_port()
    log = DaemonLog(home / "daemon.log")
    with log.path.open("wb") as stderr:
        proc = subprocess.Popen(
            [str(janua_exe), "--config", str(config), "--log-format", "json",
             "daemon", "--policy", str(policy), "--metrics-port", str(port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            cwd="/", env=daemon_env,
        )  # fmt: skip
    stopper.append(proc)

    def stored(prefix: str) -> list[str]:
        found = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=f"{PREFIX}/{prefix}")
        return [item["Key"] for item in found.get("Contents", [])]

    # The next run times are logged at start.
    (scheduled,) = wait_for("the schedule", lambda: log.matching(r"^scheduled job=backup"), proc)
    assert scheduled["schedule"] == "@every 5s"
    datetime.fromisoformat(scheduled["next_run"])

    # The first backup: logged with its outcome and sizes, listed, and in the metrics.
    done = wait_for("the first backup", lambda: log.matching(r"^job done job=backup"), proc)[0]
    assert done["outcome"] == "ok", done
    listing = janua.run_json(janua_exe, config, "list")
    (first,) = listing["backups"]
    assert (done["backup_id"], done["size_bytes"], done["stored_bytes"]) == (
        first["backup_id"],
        first["size_bytes"],
        first["stored_bytes"],
    )
    assert done["duration_s"] > 0
    metrics = scrape(port)
    stop_time = datetime.fromisoformat(first["stop_time"]).timestamp()
    assert metrics["janua_backup_last_backup_size_bytes"] == first["size_bytes"]
    assert metrics["janua_backup_last_backup_stored_bytes"] == first["stored_bytes"]
    assert metrics["janua_backup_last_backup_duration_seconds"] > 0
    assert metrics['janua_backup_last_success_timestamp_seconds{task="backup"}'] == pytest.approx(
        stop_time, abs=0.001
    )
    assert metrics['janua_backup_job_failures_total{task="backup"}'] == 0
    # The archiver's figures (read at start and every 30 s): the table's WAL was archived.
    assert metrics["janua_backup_wal_archived_total"] >= 1
    assert metrics["janua_backup_wal_failed_total"] == 0
    assert metrics["janua_backup_wal_last_archived_timestamp_seconds"] > 0
    assert metrics["janua_backup_wal_ready_segments"] >= 0  # a superuser may list them
    assert metrics["janua_backup_repository_size_bytes"] > 0  # listed at start: WAL
    assert "janua_backup_last_drill_passed" not in metrics  # no drill ever ran: absent
    assert metrics['janua_backup_node_role{role="primary"}'] == 1
    if promtool.available():  # CI installs it: Prometheus' linter on a real daemon's scrape
        linted = promtool.check_metrics(exposition(port))
        assert (linted.returncode, linted.stdout + linted.stderr) == (0, "")

    # SIGTERM in the middle of the second backup: it has begun and stored its first object.
    def second_begun() -> str | None:
        for line in log.matching(r"^backup begins backup_id="):
            backup_id = re.search(r"backup_id=(\S+)", line["message"])
            if backup_id and backup_id[1] != first["backup_id"]:
                return backup_id[1]
        return None

    second = wait_for("the second backup to begin", second_begun, proc)
    wait_for("an object of the second backup", lambda: stored(f"backups/{second}/"), proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, log.path.read_text()

    outcomes = [
        (line.get("backup_id"), line["outcome"]) for line in log.matching(r"^job done job=backup")
    ]
    assert outcomes == [(first["backup_id"], "ok"), (None, "abandoned")]
    assert log.matching(r"^daemon stopping on SIGTERM")
    assert log.matching(r"^daemon stopped")
    assert not [line for line in log.lines() if line.get("not_json")]

    # Nothing of the abandoned backup: not listed, no object stored, the lock released.
    after = janua.run_json(janua_exe, config, "list")
    assert [b["backup_id"] for b in after["backups"]] == [first["backup_id"]]
    assert after["incomplete_backups"] == []
    assert stored(f"backups/{second}/") == []
    uploads = s3_client.list_multipart_uploads(Bucket=s3_bucket, Prefix=f"{PREFIX}/backups/")
    assert uploads.get("Uploads", []) == []
    storage = S3Storage(
        S3Location(
            bucket=s3_bucket,
            prefix=PREFIX,
            endpoint_url=s3_server.endpoint_url,
            region=s3_server.region,
            access_key_id=s3_server.access_key_id,
            secret_access_key=s3_server.secret_access_key,
        )
    )
    try:
        holder = locks.holder(storage, "cluster")
    finally:
        storage.close()
    assert holder is not None and holder.released, holder
