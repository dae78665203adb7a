"""``check`` against the real stack: it passes on a correct setup (the switched
segment really is in the bucket), and fails with exit 41 and a message naming
the setting when archive_command points elsewhere, archive_mode is off or the
repository cannot be reached. Two clusters in all."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from localstack import free_port

from tests.integration import janua
from tests.integration.test_pitr import s3_spec

STEPS = [
    "configuration",
    "repository",
    "postgresql",
    "archive_mode",
    "archive_command",
    "wal_switch",
]


def check_json(exe: Path, config: Path, env: dict[str, str] | None = None) -> tuple[Any, Any]:
    """(the completed process, its JSON report): the report is printed on failure too."""
    done = janua.run(exe, config, "check", "--timeout", "30", "--json", env=env)
    return done, json.loads(done.stdout)


def statuses(report: Any) -> dict[str, str]:
    return {step["name"]: step["status"] for step in report["steps"]}


def test_check_passes_on_a_correct_setup_and_names_archive_command_or_the_repository(
    s3_server: Any, s3_bucket: str, s3_client: Any, pg_factory: Any, janua_exe: Path
) -> None:
    home = pg_factory.empty_dir()
    config = home / "janua.toml"
    spec = s3_spec(s3_server, s3_bucket)
    janua.write_config(config, spec)
    cluster = janua.archiving_cluster(pg_factory, janua_exe, config)
    janua.write_config(config, spec, pgdata=cluster.pgdata, dsn=cluster.dsn)

    done, report = check_json(janua_exe, config)
    janua.ok(done)
    assert report["ok"] and [s["name"] for s in report["steps"]] == STEPS
    assert set(statuses(report).values()) == {"ok"}, report
    segment = report["archived_wal"]
    assert re.fullmatch("[0-9A-F]{24}", segment)
    s3_client.head_object(Bucket=s3_bucket, Key=f"cluster-a/wal/{segment}")
    probes = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="cluster-a/probe/")
    assert probes.get("KeyCount", 0) == 0
    text = janua.ok(janua.run(janua_exe, config, "check"))
    assert re.search(r"^ok +repository +s3://\S+ reachable; probe written", text.stdout, re.M)

    # The same server checked with a config for another repository: its
    # archive_command (with --config janua.toml) archives elsewhere.
    other = janua.write_config(
        home / "other.toml", replace(spec, url=f"s3://{s3_bucket}/cluster-b"), dsn=cluster.dsn
    )
    done, report = check_json(janua_exe, other)
    janua.one_line_error(done, 41, "archive_command", "cluster-a", "cluster-b")
    assert statuses(report)["archive_command"] == "failed"
    assert statuses(report)["wal_switch"] == "skipped"

    # The repository's endpoint is a closed port.
    s3 = {**spec.s3, "endpoint": f"http://127.0.0.1:{free_port()}"}
    down = janua.write_config(
        home / "down.toml", replace(spec, s3=s3), dsn=cluster.dsn, s3_deadline_s=0.5
    )
    done, report = check_json(janua_exe, down)
    janua.one_line_error(done, 41, "repository", "cannot reach")
    assert statuses(report)["repository"] == "failed"
    assert statuses(report)["wal_switch"] == "skipped"

    # An archive_command that does not run janua-backup at all.
    cluster.sql("ALTER SYSTEM SET archive_command = 'cp %p /mnt/archive/%f'")
    cluster.sql("SELECT pg_reload_conf()")
    for _ in range(100):  # the reload reaches new sessions a moment later
        if cluster.sql("SHOW archive_command")[0][0] == "cp %p /mnt/archive/%f":
            break
        time.sleep(0.1)
    done, report = check_json(janua_exe, config)
    janua.one_line_error(done, 41, "archive_command", "does not run janua-backup wal-push %p")
    assert statuses(report)["wal_switch"] == "skipped"


def test_check_names_archive_mode_on_a_cluster_that_does_not_archive(
    s3_server: Any, s3_bucket: str, pg_factory: Any, janua_exe: Path
) -> None:
    cluster = pg_factory()  # archive_mode off
    config = janua.write_config(
        pg_factory.empty_dir() / "janua.toml", s3_spec(s3_server, s3_bucket), dsn=cluster.dsn
    )

    done, report = check_json(janua_exe, config)
    janua.one_line_error(done, 41, "archive_mode is off", "archive_mode = on", "restart")
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["repository"]["status"] == "ok"
    assert steps["archive_mode"]["status"] == "failed"
    assert steps["archive_command"]["status"] == "skipped"  # PostgreSQL shows "(disabled)"
    assert steps["wal_switch"]["status"] == "skipped"


def _set_archive_command(cluster: Any, value: str) -> None:
    """What a user does with ``archive-command --value``: ALTER SYSTEM, quotes doubled."""
    quoted = value.replace("'", "''")
    cluster.sql(f"ALTER SYSTEM SET archive_command = '{quoted}'")
    cluster.sql("SELECT pg_reload_conf()")
    for _ in range(100):  # the reload reaches new sessions a moment later
        if cluster.sql("SHOW archive_command")[0][0] == value:
            return
        time.sleep(0.1)
    raise AssertionError(f"archive_command did not become {value!r}")


def test_the_printed_value_checks_ok_and_postgres_pgdata_must_be_the_servers(
    s3_server: Any, s3_bucket: str, pg_factory: Any, janua_exe: Path
) -> None:
    home = pg_factory.empty_dir()
    config = home / "janua.toml"
    spec = s3_spec(s3_server, s3_bucket)
    janua.write_config(config, spec)
    cluster = janua.archiving_cluster(pg_factory, janua_exe, config)
    janua.write_config(config, spec, pgdata=cluster.pgdata, dsn=cluster.dsn)

    # archive-command --value, set with ALTER SYSTEM, is what check confirms.
    value = janua.ok(janua.run(janua_exe, config, "archive-command", "--value")).stdout
    assert value.count("\n") == 1 and not value.startswith("archive_command")
    _set_archive_command(cluster, value.strip())
    # A PGDATA naming another cluster in the user's shell does not override the file.
    elsewhere = pg_factory.empty_dir()
    done, report = check_json(janua_exe, config, env={"PGDATA": str(elsewhere)})
    janua.ok(done)
    assert set(statuses(report).values()) == {"ok"}, report

    # The file's postgres.pgdata through a symlink: the same directory.
    link = home / "link"
    link.symlink_to(cluster.pgdata)
    linked = janua.write_config(home / "linked.toml", spec, pgdata=link, dsn=cluster.dsn)
    janua.ok(check_json(janua_exe, linked)[0])

    # postgres.pgdata names another directory than the server's data_directory.
    wrong = janua.write_config(home / "wrong.toml", spec, pgdata=elsewhere, dsn=cluster.dsn)
    done, report = check_json(janua_exe, wrong)
    janua.one_line_error(done, 41, str(elsewhere), str(cluster.pgdata), "data_directory")
    assert statuses(report)["postgresql"] == "failed"
    assert statuses(report)["wal_switch"] == "skipped"
