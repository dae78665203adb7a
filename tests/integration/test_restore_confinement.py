"""Restore confinement against real PostgreSQL and real S3 (SeaweedFS).

The legitimate link a restore follows, a tablespace whose files live outside
PGDATA at its location, restores (delta into the same directory, and fresh with
the location gone) and starts with its rows. A manifest planted in the bucket by
someone with write access, naming a directory outside the target, is refused
with exit 24 and nothing around the target changes.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from janua_backup import config as janua_config
from janua_backup.commands.common import open_repo
from janua_backup.repository import catalog, layout
from janua_backup.repository.manifest import FileEntry, to_json
from tests.integration import janua
from tests.integration.test_pitr import s3_spec

PLANTED = "20300101T000000Z"


def test_tablespaces_restore_and_a_planted_manifest_writes_nothing_outside(
    s3_server: Any, s3_bucket: str, pg_factory: Any, janua_exe: Path
) -> None:
    spec = s3_spec(s3_server, s3_bucket)
    config = pg_factory.empty_dir() / "janua.toml"
    janua.write_config(config, spec)
    cluster = janua.archiving_cluster(pg_factory, janua_exe, config)
    janua.write_config(config, spec, pgdata=cluster.pgdata, dsn=cluster.dsn)
    location = pg_factory.empty_dir()
    cluster.sql(f"CREATE TABLESPACE fast LOCATION '{location}'")
    (oid,) = cluster.sql("SELECT oid FROM pg_tablespace WHERE spcname = 'fast'")[0]
    cluster.sql("CREATE TABLE items (id int PRIMARY KEY, note text) TABLESPACE fast")
    janua.insert_rows(cluster, 1, 5, pause_s=0)
    backup = janua.run_json(janua_exe, config, "backup")
    janua.switch_and_wait_archived(cluster)
    cluster.stop()

    # Delta into the same directory: through the tablespace link, into its location.
    janua.ok(janua.run(janua_exe, config, "restore", "--delta", "--pgdata", str(cluster.pgdata)))
    again = janua.start_restored(pg_factory, cluster.pgdata)
    assert janua.ids(again) == [1, 2, 3, 4, 5]
    again.stop()

    # Fresh, with the location gone: made again where the link and the map say.
    location.rename(location.with_name(location.name + ".moved"))
    target = pg_factory.empty_dir() / "target"
    janua.ok(janua.run(janua_exe, config, "restore", "--pgdata", str(target)))
    assert os.readlink(target / f"pg_tblspc/{oid}") == str(location)
    fresh = janua.start_restored(pg_factory, target)
    assert janua.ids(fresh) == [1, 2, 3, 4, 5]
    fresh.stop()

    # Someone with write access to the bucket plants a backup whose manifest names a
    # directory next to the target: refused, nothing written anywhere.
    repo = open_repo(janua_config.load(str(config), {}))
    real = catalog.load(repo, backup["backup_id"])
    escape = FileEntry("../sibling/made", "dir", 0o777, 1, 0, 0)
    planted = replace(real, backup_id=PLANTED, files=(*real.files, escape))
    repo.put_bytes(layout.manifest_key(PLANTED), to_json(planted))
    home = pg_factory.empty_dir()
    (home / "sibling").mkdir()
    (home / "sibling/precious").write_text("not the restore's")
    before = janua.tree_snapshot(home)
    victim = home / "pgdata"
    done = janua.run(janua_exe, config, "restore", "--pgdata", str(victim), "--backup-id", PLANTED)
    janua.one_line_error(done, 24, "../sibling/made", "nothing was written")
    assert janua.tree_snapshot(home) == before
    assert (home / "sibling/precious").read_text() == "not the restore's"
