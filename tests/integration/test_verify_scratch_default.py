"""A drill without --scratch-dir restores under /var/tmp (on disk), not the system temp
dir that is often a tmpfs, and leaves nothing behind there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.integration import janua
from tests.integration.janua import RepoSpec

DEFAULT = Path("/var/tmp")


def ours() -> set[Path]:
    return set(DEFAULT.glob("janua-verify-*"))


def test_a_drill_without_scratch_dir_restores_under_var_tmp(
    pg_factory: Any, janua_exe: Path
) -> None:
    home = pg_factory.empty_dir()
    home.chmod(0o755)
    spec = RepoSpec(url=f"file://{pg_factory.empty_dir()}")
    config = janua.write_config(home / "janua.toml", spec)
    cluster = janua.archiving_cluster(pg_factory, janua_exe, config)
    janua.write_config(config, spec, pgdata=cluster.pgdata, dsn=cluster.dsn)
    janua.ok(janua.run(janua_exe, config, "backup"))
    before = ours()

    done = janua.run(janua_exe, config, "verify", "--keep", "--json")

    janua.ok(done)
    report = json.loads(done.stdout)
    kept = Path(report["kept_dir"])
    try:
        assert kept.parent == DEFAULT
        assert (kept / "data" / "PG_VERSION").is_file()
        assert ours() - before == {kept}
    finally:
        shutil.rmtree(kept, ignore_errors=True)
