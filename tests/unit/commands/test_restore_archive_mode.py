"""What ``restore`` writes about archiving, by where it restores and what it is told.

A copy restored anywhere but ``postgres.pgdata`` gets ``archive_mode = 'off'``
(started as restore left it, it would promote and archive its new timeline into
production's repository); a restore into ``postgres.pgdata`` writes nothing about
it. Run through the CLI on a real ``file://`` repository, no PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from janua_backup.cli import cli
from janua_backup.commands.common import open_repo
from janua_backup.config import RepoSettings, Settings
from janua_backup.pg.wal import WalSegment
from janua_backup.repository import layout, marker
from tests.unit.commands.test_restore_confinement import Site, existing_cluster, plant
from tests.unit.repository.helpers import SEG

OFF = [
    "# archive_mode off: a copy restored beside production must not archive its new "
    "timeline into production's repository (restore --archive-mode on lets it)",
    "archive_mode = 'off'",
]
ON = ["# archive_mode on: asked for with restore --archive-mode on", "archive_mode = 'on'"]


@pytest.fixture
def site(tmp_path: Path) -> Site:
    base = tmp_path / "base"
    (base / "repo").mkdir(parents=True)
    (base / "outside").mkdir()
    (base / "target").mkdir()
    url = f"file://{base / 'repo'}"
    repo = open_repo(Settings(repository=RepoSettings(url=url)))
    marker.ensure(repo, system_identifier=42, wal_segment_size=SEG, pg_major=15)
    repo.put_bytes(layout.wal_key(WalSegment.from_number(1, 2, SEG).name), b"w" * 64)
    plant_site = Site(repo, url, base, base / "outside", base / "target", base / "target/pgdata")
    plant(plant_site, [])
    return plant_site


def restore(site: Site, configured: Path | None, *extra: str) -> Result:
    config = site.base / "janua.toml"
    text = f'[repository]\nurl = "{site.url}"\n'
    if configured is not None:
        text += f'[postgres]\npgdata = "{configured}"\n'
    config.write_text(text)
    args = ["--config", str(config), "restore", "--pgdata", str(site.pgdata)]
    done = CliRunner().invoke(cli, [*args, "--target", "immediate", *extra])
    assert "Traceback" not in done.output
    return done


def archive_lines(pgdata: Path) -> list[str]:
    """The lines of postgresql.auto.conf restore wrote about archive_mode."""
    lines = (pgdata / "postgresql.auto.conf").read_text().splitlines()
    return [line for line in lines if line.startswith(("archive_mode", "# archive_mode"))]


@pytest.mark.parametrize("configured", ["elsewhere", None], ids=["other-pgdata", "no-pgdata"])
def test_a_copy_beside_production_does_not_archive(site: Site, configured: str | None) -> None:
    production = site.base / "production" if configured else None
    done = restore(site, production)
    assert done.exit_code == 0, done.output
    assert archive_lines(site.pgdata) == OFF
    assert "archiving   off (not postgres.pgdata: a copy must not archive" in done.output


def test_a_standby_beside_production_does_not_archive_either(site: Site) -> None:
    done = restore(site, site.base / "production", "--standby")
    assert done.exit_code == 0, done.output
    assert (site.pgdata / "standby.signal").exists()
    assert archive_lines(site.pgdata) == OFF


def test_a_restore_into_postgres_pgdata_keeps_archiving(site: Site) -> None:
    """The incident runbook's case; the configured path may reach it through a link."""
    link = site.base / "pgdata-link"
    link.symlink_to(site.pgdata)  # dangling until restore creates the directory
    done = restore(site, link)
    assert done.exit_code == 0, done.output
    assert archive_lines(site.pgdata) == []
    assert "archiving   unchanged (into postgres.pgdata" in done.output


def test_a_delta_restore_into_postgres_pgdata_keeps_archiving(site: Site) -> None:
    existing_cluster(site)
    done = restore(site, site.pgdata, "--delta")
    assert done.exit_code == 0, done.output
    assert archive_lines(site.pgdata) == []


@pytest.mark.parametrize(
    ("flags", "into_pgdata", "lines"),
    [
        (["--archive-mode", "on"], False, ON),
        (["--archive-mode", "preserve"], False, []),
        (["--archive"], False, []),
        (["--archive", "--archive-mode", "preserve"], False, []),
        (["--archive-mode", "off"], True, OFF),
        (["--archive-mode", "on"], True, ON),
    ],
)
def test_archive_mode_given_wins_over_where(
    site: Site, flags: list[str], into_pgdata: bool, lines: list[str]
) -> None:
    configured = site.pgdata if into_pgdata else site.base / "production"
    done = restore(site, configured, *flags)
    assert done.exit_code == 0, done.output
    assert archive_lines(site.pgdata) == lines
    assert "(as asked with --archive-mode)" in done.output


def test_archive_contradicting_archive_mode_is_refused_before_anything_is_written(
    site: Site,
) -> None:
    done = restore(site, None, "--archive", "--archive-mode", "off")
    assert done.exit_code == 4, done.output
    assert "--archive means --archive-mode preserve, not off" in done.output
    assert not site.pgdata.exists()


def test_the_json_result_says_what_was_chosen_and_why(site: Site) -> None:
    done = restore(site, site.base / "production", "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["archive_mode"] == "off"
    assert result["archive_reason"].startswith("not postgres.pgdata")
    assert str(site.pgdata / "postgresql.auto.conf") in result["files_written"]
