"""The command lines janua-backup gives PostgreSQL, run by a real PostgreSQL 15.

PostgreSQL 15 expands archive_command into a 1024-byte buffer and drops what
does not fit. The line ``archive-command`` prints with archive_async, chained
behind another command, with janua-backup installed under a long path and a
long config path that holds ``%`` signs, must still archive every segment; the
restore_command ``restore`` writes with the same paths must recover exactly.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from localstack import archiving_settings, chown_to_postgres, make_postgres_dir

from janua_backup.pg import command_line
from tests.integration import janua
from tests.integration.test_pitr import s3_spec
from tests.integration.test_wal_push_async import AsyncStack, archived, every_segment


def deep_dir(base: Path, label: str, length: int) -> Path:
    """A directory postgres can reach whose path is about ``length`` characters long."""
    path = base / label
    while len(str(path)) < length:
        path = path / ("x" * min(60, length - len(str(path))))
    make_postgres_dir(path, 0o755)
    for parent in path.relative_to(base).parents:
        (base / parent).chmod(0o755)
    return path


def long_install(base: Path, exe: Path) -> Path:
    """A copy of the console script under a ~200-character path (a symlink would be
    resolved to the short venv path: a copy is what a deep install looks like)."""
    target = deep_dir(base, "opt-janua-100%p%%", 200) / "janua-backup"
    shutil.copy2(exe, target)
    chown_to_postgres(target)
    return target


def test_the_printed_lines_survive_long_paths_with_percent_signs_chained(
    s3_server: Any, s3_bucket: str, s3_client: Any, pg_factory: Any, janua_exe: Path
) -> None:
    base = pg_factory.empty_dir()
    base.chmod(0o755)
    exe = long_install(base, janua_exe)
    config = deep_dir(base, "etc-50%f%%r", 190) / "janua.toml"
    assert len(str(exe)) >= 200 and len(str(config)) >= 200
    stack = AsyncStack.__new__(AsyncStack)  # built by hand: this exe and this config
    stack.factory, stack.exe, stack.config = pg_factory, exe, config
    stack.spec = s3_spec(s3_server, s3_bucket, extra="archive_async = true\n")
    janua.write_config(config, stack.spec, s3_deadline_s=20)
    plain = command_line.escape(f"{exe} --config {config}") + " wal-push %p"
    stack.cluster = pg_factory(archiving_settings(plain))
    janua.write_config(
        config, stack.spec, pgdata=stack.cluster.pgdata, dsn=stack.cluster.dsn, s3_deadline_s=20
    )
    stack.spool = stack.cluster.pgdata / "pg_wal" / ".janua-spool" / "archive"
    stack.cluster.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
    janua.insert_rows(stack.cluster, 1, 3, pause_s=0)
    stack.backup = janua.run_json(exe, config, "backup")
    stack.rows = 3

    printed = janua.printed_archive_command(exe, config)
    chained = f"test 1 = 1 && {printed}"
    assert command_line.expanded_bytes("archive_command", chained) <= 800  # room to spare
    stack.cluster.configure({"archive_command": chained})
    stack.cluster.sql("SELECT pg_reload_conf()")
    (first,) = stack.cluster.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")[0]
    names = stack.burst(6)
    janua.wait_archived(stack.cluster, names[-1], timeout_s=120)

    server_log = stack.cluster.log_path.read_text()
    assert "archive command failed" not in server_log
    assert "Syntax error" not in server_log
    assert "mode=async (shell)" in server_log  # the script in the spool answered
    (failed,) = stack.cluster.sql("SELECT failed_count FROM pg_stat_archiver")[0]
    assert failed == 0
    assert set(every_segment(first, names[-1])) <= archived(s3_client, s3_bucket)

    target = pg_factory.empty_dir() / "restored"
    janua.ok(janua.run(exe, config, "restore", "--pgdata", str(target)))
    settings = (target / "postgresql.auto.conf").read_text()
    line = next(x for x in settings.splitlines() if x.startswith("restore_command = "))
    written = line[len("restore_command = '") : -1].replace("''", "'")
    assert str(config).replace("%", "%%") in written and "wal-fetch.1.sh" in written
    assert command_line.expanded_bytes("restore_command", written) <= 800
    restored = janua.start_restored(pg_factory, target)
    assert janua.ids(restored) == list(range(1, stack.rows + 1))
    assert "wal-fetch name=" in restored.log_path.read_text()  # our restore_command ran
    restored.stop()
