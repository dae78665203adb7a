"""The command lines janua-backup gives PostgreSQL: refused when PostgreSQL could cut them
short, when no config file carries their settings; every % in a path escaped."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from janua_backup.cli import cli
from janua_backup.commands import check
from janua_backup.commands.restore import restore_command
from janua_backup.config import RepoSettings, Settings, WalSettings
from janua_backup.pg import command_line


def config(tmp_path: Path, name: str = "janua.toml", extra: str = "") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[repository]\nurl = "file://{tmp_path}/repo"\n\n[wal]\n{extra}\n')
    return path


def invoke(*args: str) -> tuple[int, str]:
    done = CliRunner(env={"JANUA_BACKUP_CONFIG": None}).invoke(cli, list(args))
    return done.exit_code, done.output


def test_archive_command_refuses_a_line_postgresql_would_cut_short(tmp_path: Path) -> None:
    deep = config(tmp_path / ("d" * 250) / ("e" * 250) / ("f" * 250), extra="archive_async = true")
    code, out = invoke("--config", str(deep), "archive-command")
    assert code == 3, out
    assert "archive_command can expand to" in out and "limit of 1023 bytes" in out
    assert "archive_command =" not in out and len(out.strip().splitlines()) == 1


def test_the_printed_lines_fit_with_room_to_spare(tmp_path: Path) -> None:
    path = config(tmp_path / ("d" * 100) / ("e" * 100), extra="archive_async = true")
    code, out = invoke("--config", str(path), "archive-command")
    assert code == 0, out
    line = out.strip()[len("archive_command = '") : -1]
    assert command_line.expanded_bytes("archive_command", line) < 700
    settings = Settings(repository=RepoSettings(url="file:///r"), config_path=str(path))
    assert command_line.expanded_bytes("restore_command", restore_command(settings)) < 700


def test_every_percent_in_a_path_is_doubled(tmp_path: Path) -> None:
    odd = str(tmp_path / "50%p%%" / "j%f.toml")
    settings = Settings(
        repository=RepoSettings(url="file:///r"),
        wal=WalSettings(spool_dir="/sp%r", archive_async=True),
        config_path=odd,
    )
    line = restore_command(settings)
    expanded = command_line.expand(line, path="P", name="F", restart="R")
    assert f'--config {odd} wal-fetch F "P"' in expanded and "d=/sp%r;" in expanded


def test_restore_without_a_config_file_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "restored"
    code, out = invoke("--repo", f"file://{tmp_path}/repo", "restore", "--pgdata", str(target))
    assert code == 3, out
    assert "restore needs --config" in out and len(out.strip().splitlines()) == 1
    assert not target.exists()


def test_restore_refuses_a_restore_command_postgresql_would_cut_short(tmp_path: Path) -> None:
    deep = config(tmp_path / ("d" * 250) / ("e" * 250) / ("f" * 250) / ("g" * 250))
    target = tmp_path / "restored"
    code, out = invoke("--config", str(deep), "restore", "--pgdata", str(target))
    assert code == 3, out
    assert "restore_command can expand to" in out and "1023" in out
    assert not target.exists()


def test_check_fails_an_archive_command_postgresql_would_cut_short(tmp_path: Path) -> None:
    ours = Settings(repository=RepoSettings(url="file:///r"), config_path=None)
    long_line = f"test 1 = 1 && {'x' * 1000} && janua-backup --repo file:///r wal-push %p"
    try:
        check.confirm_archive_command(long_line, ours, tmp_path)
    except check.CheckFailed as failed:
        assert "archive_command can expand to" in failed.message
    else:
        raise AssertionError("a line PostgreSQL would cut short passed")


def test_a_restore_keeps_no_spool_it_did_not_make(tmp_path: Path) -> None:
    # A spool under the restored pg_wal (named by a manifest, or left in a --delta
    # target) would run its script as restore_command and hand its files over as WAL.
    from janua_backup.commands import restore

    pgdata = tmp_path / "data"
    planted = pgdata / "pg_wal" / ".janua-spool"
    (planted / "prefetch").mkdir(parents=True)
    (planted / "wal-fetch.1.sh").write_text("exit 0\n")
    (planted / "prefetch" / "000000010000000000000001").write_bytes(b"not wal")
    custom = tmp_path / "spool" / "prefetch"
    custom.mkdir(parents=True)
    for name in ("000000020000000000000007", "00000002.history", "request", "lock"):
        (custom / name).write_text("x")
    restore._clear_spool(pgdata, str(custom.parent))
    assert not planted.exists() and (pgdata / "pg_wal").is_dir()
    assert sorted(p.name for p in custom.iterdir()) == ["lock"]
