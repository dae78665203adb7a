"""A spool is trusted only when it is this user's alone: never one of another user, never
one others may write; nothing in it is written through a link planted there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from janua_backup import spool
from janua_backup.cli import cli
from janua_backup.errors import ConfigError
from janua_backup.localfs import atomic_write
from janua_backup.prefetch import PrefetchSpool

NAME = "000000010000000000000005"
NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to another user")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "spool"
    path.mkdir(mode=0o700)
    return path


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o750, 0o701])
def test_a_spool_others_may_enter_is_refused(root: Path, mode: int) -> None:
    root.chmod(mode)
    for make in (spool.archive_dir, lambda r: PrefetchSpool.open(r / "prefetch")):
        with pytest.raises(ConfigError, match=f"mode {mode:04o}.*chmod 700") as caught:
            make(root)
        assert "\n" not in caught.value.message
    assert sorted(os.listdir(root)) == []  # nothing made in it, no script installed


@pytest.mark.parametrize("sub", [spool.ARCHIVE_SUBDIR, "prefetch"])
def test_a_subdirectory_others_may_write_is_refused(root: Path, sub: str) -> None:
    (root / sub).mkdir(mode=0o700)
    (root / sub).chmod(0o733)
    with pytest.raises(ConfigError, match="mode 0733"):
        spool.archive_dir(root) if sub == spool.ARCHIVE_SUBDIR else PrefetchSpool.open(root / sub)


@needs_root
def test_a_spool_of_another_user_is_refused(root: Path) -> None:
    os.chown(root, NOBODY, NOBODY)
    with pytest.raises(ConfigError, match=f"belongs to uid {NOBODY}, not to this user"):
        spool.archive_dir(root)
    with pytest.raises(ConfigError, match=f"belongs to uid {NOBODY}"):
        PrefetchSpool.open(root / "prefetch")


def test_a_new_spool_is_made_0700(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        directory = spool.archive_dir(tmp_path / "new" / "spool")
    finally:
        os.umask(old)
    assert directory.stat().st_mode & 0o777 == 0o700
    assert directory.parent.stat().st_mode & 0o777 == 0o700


def test_wal_push_refuses_a_world_writable_spool_with_exit_3(tmp_path: Path) -> None:
    pgdata = tmp_path / "data"
    (pgdata / "pg_wal" / "archive_status").mkdir(parents=True)
    wal = pgdata / "pg_wal" / NAME
    wal.write_bytes(b"wal")
    (pgdata / "pg_wal" / "archive_status" / f"{NAME}.ready").touch()
    planted = pgdata / "pg_wal" / ".janua-spool"
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)
    config = tmp_path / "janua.toml"
    config.write_text(
        f'[repository]\nurl = "file://{tmp_path}/repo"\n[postgres]\npgdata = "{pgdata}"\n'
        "[wal]\narchive_async = true\n"
    )
    done = CliRunner(env={"JANUA_BACKUP_CONFIG": None}).invoke(
        cli, ["--config", str(config), "wal-push", str(wal)]
    )
    assert done.exit_code == 3, done.output
    errors = [line for line in done.output.splitlines() if "error" in line]
    assert len(errors) == 1 and "mode 0777" in errors[0], done.output
    assert not (tmp_path / "repo").exists()  # not pushed past the refusal either


def test_a_planted_request_temp_link_is_not_followed(root: Path, tmp_path: Path) -> None:
    where = PrefetchSpool.open(root / "prefetch")
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0\n")
    (where.path / f"request.new.{os.getpid()}").symlink_to(victim)
    (where.path / "request.new").symlink_to(victim)
    where.note_request(NAME)
    assert victim.read_text() == "root:x:0:0\n"
    request = where.request()
    assert request is not None and request.name == NAME


def test_a_request_that_is_a_link_is_not_read(root: Path, tmp_path: Path) -> None:
    where = PrefetchSpool.open(root / "prefetch")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text(NAME)
    (where.path / "request").symlink_to(elsewhere)
    assert where.request() is None


def test_a_planted_link_under_a_segments_name_is_never_handed_over(
    root: Path, tmp_path: Path
) -> None:
    from janua_backup.pg.wal import WalSegment

    where = PrefetchSpool.open(root / "prefetch")
    victim = tmp_path / "victim"
    victim.write_bytes(b"\0" * 64)
    (where.path / NAME).symlink_to(victim)
    dest = tmp_path / "RECOVERYXLOG"
    assert where.take(WalSegment.parse(NAME), dest, 1) is None
    assert not dest.exists() and victim.exists() and not (where.path / NAME).is_symlink()


def test_status_temp_files_are_never_written_through_a_link(root: Path, tmp_path: Path) -> None:
    directory = spool.archive_dir(root)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (directory / f".{NAME}.ok.janua-tmp").symlink_to(victim)
    spool.write_ok(directory, NAME, spool.FileIdentity(3, 4, 5), "stored")
    assert victim.read_text() == "keep me"
    status = spool.read_status(directory, NAME)
    assert status is not None and status.identity == spool.FileIdentity(3, 4, 5)


def test_a_status_that_is_a_link_is_not_believed(root: Path, tmp_path: Path) -> None:
    directory = spool.archive_dir(root)
    fake = tmp_path / "fake-ok"
    fake.write_text("3 4 5 stored\n")
    (directory / f"{NAME}.ok").symlink_to(fake)
    assert spool.read_status(directory, NAME) is None


def test_atomic_write_replaces_a_link_at_its_temp_name(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    target = tmp_path / "file"
    (tmp_path / ".file.janua-tmp").symlink_to(victim)
    atomic_write(target, [b"new"])
    assert victim.read_text() == "keep me" and target.read_bytes() == b"new"
