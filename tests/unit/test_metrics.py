"""The daemon's figures as Prometheus reads them, and the alert rules written against them."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from janua_backup.metrics import ArchiverStats, LastBackup, LastDrill, Metrics

ALERTS = Path(__file__).resolve().parents[2] / "policies" / "prometheus-alerts.yml"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: Metrics) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get(("janua_backup_" + name, tuple(sorted(labels.items()))))


def full() -> Metrics:
    """Every figure known: what a daemon exposes once each job has run."""
    metrics = Metrics(clock=lambda: 1000.0)
    metrics.track(["backup", "verify", "expire", "check"])
    metrics.backup_taken(LastBackup(2000.0, 12.5, 300, 100))
    metrics.drill_finished(LastDrill(True, 3000.0, 40.0))
    metrics.set_archiver(ArchiverStats(7, 1, 2500.0, 2400.0, 3))
    metrics.set_repository_size(12345)
    metrics.succeeded("check", 2600.0)
    metrics.failed("expire")
    return metrics


def test_a_fresh_daemon_exposes_what_it_knows_and_nothing_made_up() -> None:
    metrics = Metrics(clock=lambda: 1000.0)
    metrics.track(["backup", "check"])
    assert samples(metrics) == {
        ("janua_backup_daemon_start_timestamp_seconds", ()): 1000.0,
        ("janua_backup_job_failures_total", (("task", "backup"),)): 0.0,
        ("janua_backup_job_failures_total", (("task", "check"),)): 0.0,
    }


def test_every_figure_once_known() -> None:
    metrics = full()
    assert value(metrics, "last_success_timestamp_seconds", task="backup") == 2000.0
    assert value(metrics, "last_success_timestamp_seconds", task="verify") == 3000.0
    assert value(metrics, "last_success_timestamp_seconds", task="check") == 2600.0
    assert value(metrics, "last_backup_duration_seconds") == 12.5
    assert value(metrics, "last_backup_size_bytes") == 300
    assert value(metrics, "last_backup_stored_bytes") == 100
    assert value(metrics, "last_drill_passed") == 1
    assert value(metrics, "last_drill_timestamp_seconds") == 3000.0
    assert value(metrics, "last_drill_duration_seconds") == 40.0
    assert value(metrics, "wal_archived_count") == 7
    assert value(metrics, "wal_failed_count") == 1
    assert value(metrics, "wal_last_archived_timestamp_seconds") == 2500.0
    assert value(metrics, "wal_last_failed_timestamp_seconds") == 2400.0
    assert value(metrics, "wal_ready_segments") == 3
    assert value(metrics, "repository_size_bytes") == 12345
    assert value(metrics, "job_failures_total", task="expire") == 1
    assert value(metrics, "job_failures_total", task="backup") == 0


def test_failures_are_counted_per_task() -> None:
    metrics = Metrics()
    metrics.track(["backup", "verify"])
    metrics.failed("backup")
    metrics.failed("backup")
    metrics.failed("verify")
    assert value(metrics, "job_failures_total", task="backup") == 2
    assert value(metrics, "job_failures_total", task="verify") == 1


def test_an_older_backup_read_late_does_not_replace_a_newer_one() -> None:
    metrics = Metrics()
    metrics.backup_taken(LastBackup(2000.0, 10.0, 300, 100))
    metrics.backup_taken(LastBackup(1500.0, 99.0, 1, 1))  # the start-up read, landing late
    assert value(metrics, "last_backup_size_bytes") == 300
    assert value(metrics, "last_success_timestamp_seconds", task="backup") == 2000.0


def test_a_failed_drill_is_the_last_drill_but_not_a_success() -> None:
    metrics = Metrics()
    metrics.drill_finished(LastDrill(True, 1000.0, 30.0))
    metrics.drill_finished(LastDrill(False, 2000.0, 50.0))
    assert value(metrics, "last_drill_passed") == 0
    assert value(metrics, "last_drill_timestamp_seconds") == 2000.0
    assert value(metrics, "last_success_timestamp_seconds", task="verify") == 1000.0


def test_archiver_figures_vanish_when_postgresql_cannot_be_asked() -> None:
    metrics = Metrics()
    metrics.set_archiver(ArchiverStats(5, 0, None, None, None))
    assert value(metrics, "wal_archived_count") == 5
    assert value(metrics, "wal_last_archived_timestamp_seconds") is None  # never archived
    assert value(metrics, "wal_ready_segments") is None  # the role may not look
    metrics.set_archiver(None)
    assert value(metrics, "wal_archived_count") is None


def test_the_endpoint_serves_the_same_text() -> None:
    metrics = full()
    server = metrics.serve("127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            body = answer.read().decode()
    finally:
        server.close()
    assert "janua_backup_last_backup_size_bytes 300.0" in body
    assert 'janua_backup_job_failures_total{task="expire"} 1.0' in body


# --- policies/prometheus-alerts.yml ----------------------------------------------------------


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    (group,) = document["groups"]
    assert group["name"] == "postgresql-ha"  # extends the HA guide's group
    found: list[dict[str, Any]] = group["rules"]
    return found


def test_each_alert_has_a_duration_a_severity_and_a_runbook_hint() -> None:
    for rule in rules():
        assert re.fullmatch(r"PostgreSQL[A-Za-z]+", rule["alert"]), rule["alert"]
        assert re.fullmatch(r"[0-9]+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        for annotation in ("summary", "description", "runbook"):
            assert rule["annotations"][annotation].strip(), (rule["alert"], annotation)


def test_alerts_use_only_metrics_the_daemon_exposes() -> None:
    exposed = {name for name, _ in samples(full())}
    exposed |= {name.removesuffix("_total") for name in exposed}
    for rule in rules():
        for name in re.findall(r"\bjanua_backup_[a-z_]+", rule["expr"]):
            assert name in exposed, (rule["alert"], name)
        assert 'job="' not in rule["expr"], "the daemon's label is task, not job"


def test_the_four_kinds_of_alert_are_there() -> None:
    by_name = {rule["alert"]: rule for rule in rules()}
    backup = by_name["PostgreSQLBackupMissing"]["expr"]
    assert "26 * 3600" in backup and 'task="backup"' in backup
    assert (
        "janua_backup_wal_last_failed_timestamp_seconds"
        in (by_name["PostgreSQLWALArchivingFailing"]["expr"])
    )
    assert "janua_backup_wal_ready_segments" in by_name["PostgreSQLWALArchivingBehind"]["expr"]
    assert "janua_backup_last_drill_passed == 0" in by_name["PostgreSQLRestoreDrillFailed"]["expr"]
    assert "2 * 86400" in by_name["PostgreSQLRestoreDrillStale"]["expr"]


def test_the_node_role_is_a_state_set_absent_until_known() -> None:
    metrics = Metrics()
    assert value(metrics, "node_role", role="primary") is None  # never asked: no made-up role
    metrics.set_role("standby")
    assert value(metrics, "node_role", role="primary") == 0.0
    assert value(metrics, "node_role", role="standby") == 1.0
    metrics.set_role("primary")  # promoted: the next read says so
    assert value(metrics, "node_role", role="primary") == 1.0
    assert value(metrics, "node_role", role="standby") == 0.0
    metrics.set_role(None)  # PostgreSQL could not be asked
    assert value(metrics, "node_role", role="primary") is None
