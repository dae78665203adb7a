"""Hostile manifests against ``restore`` and ``restore --delta``, on a real ``file://``
repository through the CLI, no PostgreSQL: what an attacker with write access to the
bucket can plant must never make a restore write, chown or chmod outside its target.

Each case writes the manifest object the way such an attacker would (the repository
is unencrypted), runs the restore, and compares a snapshot of everything around the
target (its parent, a sibling directory, the directory above) before and after.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from janua_backup.cli import cli
from janua_backup.commands.common import open_repo
from janua_backup.config import RepoSettings, Settings
from janua_backup.pg.wal import WalSegment
from janua_backup.repository import catalog, layout, marker
from janua_backup.repository.manifest import FileEntry, Manifest, StoredObject, to_json
from janua_backup.repository.objects import Repo
from tests.unit.pg.builders import control_bytes
from tests.unit.repository.helpers import SEG, manifest

BACKUP = "20261125T120000Z"
PG_VERSION = b"15\n"
CONTROL = control_bytes(sysid=42)


@dataclass
class Site:
    repo: Repo
    url: str
    base: Path  # holds the target's parent, the sibling and the repository
    outside: Path  # an existing directory next to the target, with a file in it
    parent: Path  # the target's parent
    pgdata: Path

    def snapshot(self) -> dict[str, tuple[int, int, int, bytes | str | None]]:
        """Every entry around the target (not the target itself, nor the repository):
        kind and mode, owner, and bytes or link target."""
        found = {}
        for path in sorted(self.base.rglob("*")):
            if path == self.pgdata or self.pgdata in path.parents or "repo" in path.parts:
                continue
            st = path.lstat()
            if path.is_symlink():
                body: bytes | str | None = os.readlink(path)
            else:
                body = path.read_bytes() if path.is_file() else None
            found[str(path.relative_to(self.base))] = (st.st_mode, st.st_uid, st.st_gid, body)
        return found


@pytest.fixture
def site(tmp_path: Path) -> Site:
    base = tmp_path / "base"
    (base / "repo").mkdir(parents=True)
    outside = base / "outside"
    outside.mkdir(mode=0o755)
    (outside / "precious").write_bytes(b"not the restore's")
    os.chmod(outside / "precious", 0o644)
    parent = base / "target"
    parent.mkdir(mode=0o755)
    url = f"file://{base / 'repo'}"
    repo = open_repo(Settings(repository=RepoSettings(url=url)))
    marker.ensure(repo, system_identifier=42, wal_segment_size=SEG, pg_major=15)
    segment = WalSegment.from_number(1, 2, SEG).name
    repo.put_bytes(layout.wal_key(segment), b"w" * 64)
    return Site(repo, url, base, outside, parent, parent / "pgdata")


def stored(repo: Repo, number: int, data: bytes) -> StoredObject:
    name = layout.data_name(number)
    put = repo.put_bytes(layout.data_key(BACKUP, name), data)
    return StoredObject(name, len(data), put.plain.sha256, put.stored.size_bytes, put.stored.sha256)


def file_entry(path: str, data: bytes, obj: str) -> FileEntry:
    return FileEntry(
        path=path,
        kind="file",
        mode=0o600,
        mtime_ns=1_700_000_000_000_000_000,
        uid=os.getuid(),
        gid=os.getgid(),
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        object=obj,
    )


def dir_entry(path: str) -> FileEntry:
    return FileEntry(path, "dir", 0o700, 1, os.getuid(), os.getgid())


def link_entry(path: str, target: Path | str) -> FileEntry:
    return FileEntry(path, "symlink", 0o777, 1, os.getuid(), os.getgid(), link_target=str(target))


def plant(site: Site, extra: list[FileEntry], tablespace_map: str = "") -> Manifest:
    """A backup with PG_VERSION, global/pg_control and base/1/100, plus ``extra``
    entries whose bytes are in one more object; its manifest written as is."""
    evil = b"planted by whoever can write to the bucket"
    objects = [
        stored(site.repo, 1, PG_VERSION),
        stored(site.repo, 2, CONTROL),
        stored(site.repo, 3, b"x" * 100),
        stored(site.repo, 4, evil),
    ]
    files = [
        file_entry("PG_VERSION", PG_VERSION, objects[0].name),
        dir_entry("global"),
        file_entry("global/pg_control", CONTROL, objects[1].name),
        dir_entry("base"),
        dir_entry("base/1"),
        file_entry("base/1/100", b"x" * 100, objects[2].name),
    ]
    files += [
        replace(e, size_bytes=len(evil), sha256=objects[3].plain_sha256, object=objects[3].name)
        if e.kind == "file"
        else e
        for e in extra
    ]
    m = replace(
        manifest(BACKUP),
        files=tuple(files),
        objects=tuple(objects),
        tablespace_map=tablespace_map,
    )
    site.repo.put_bytes(layout.manifest_key(BACKUP), to_json(m))  # unchecked, as planted
    return m


def restore(site: Site, *extra: str) -> tuple[int, str]:
    # restore writes a restore_command naming its config file: it needs one. It lives
    # apart from the site, so the snapshots around the target see only restore's doing.
    config = Path(tempfile.mkdtemp(prefix="janua-conf-")) / "janua.toml"
    config.write_text(f'[repository]\nurl = "{site.url}"\n')
    args = ["--config", str(config), "restore", "--pgdata", str(site.pgdata)]
    args += ["--target", "immediate"]
    done = CliRunner().invoke(cli, [*args, *extra])
    assert "Traceback" not in done.output
    return done.exit_code, done.output


def existing_cluster(site: Site) -> None:
    """A stopped data directory of the same cluster, for restore --delta."""
    (site.pgdata / "global").mkdir(parents=True)
    (site.pgdata / "global/pg_control").write_bytes(CONTROL)
    (site.pgdata / "PG_VERSION").write_bytes(PG_VERSION)


def hostile(site: Site) -> dict[str, tuple[list[FileEntry], str]]:
    out = site.outside
    ts = out / "ts"
    return {
        "dot-dot": ([file_entry("../../outside/planted", b"", "")], ""),
        "dot-dot-deep": ([file_entry("base/../../outside/precious", b"", "")], ""),
        "absolute": ([file_entry(str(out / "absolute"), b"", "")], ""),
        "dir-outside": ([dir_entry("../../outside/made")], ""),
        "link-to-existing-dir": (
            [link_entry("base/evil", out), file_entry("base/evil/planted", b"", "")],
            "",
        ),
        "link-outside-pg_tblspc": ([link_entry("evil", out / "made-by-link")], ""),
        "file-through-tablespace-link": (
            [
                dir_entry("pg_tblspc"),
                link_entry("pg_tblspc/16385", ts),
                file_entry("pg_tblspc/16385/evil", b"", ""),
            ],
            f"16385 {ts}\n",
        ),
        "tablespace-map-disagrees": (
            [dir_entry("pg_tblspc"), link_entry("pg_tblspc/16385", ts)],
            f"16385 {out}\n",
        ),
        "duplicate": ([file_entry("base/1/100", b"", "")], ""),
    }


SHAPES = [
    "dot-dot",
    "dot-dot-deep",
    "absolute",
    "dir-outside",
    "link-to-existing-dir",
    "link-outside-pg_tblspc",
    "file-through-tablespace-link",
    "tablespace-map-disagrees",
    "duplicate",
]


@pytest.mark.parametrize("delta", [False, True], ids=["restore", "delta"])
@pytest.mark.parametrize("shape", SHAPES)
def test_a_hostile_manifest_is_refused_and_nothing_outside_changes(
    site: Site, shape: str, delta: bool
) -> None:
    extra, ts_map = hostile(site)[shape]
    plant(site, extra, ts_map)
    if delta:
        existing_cluster(site)
    before = site.snapshot()
    inside = sorted(str(p) for p in site.pgdata.rglob("*")) if delta else []
    code, output = restore(site, *(["--delta"] if delta else []))
    assert code == 24, output
    assert "is refused" in output and "nothing was written" in output
    assert site.snapshot() == before
    if delta:
        assert sorted(str(p) for p in site.pgdata.rglob("*")) == inside
        assert (site.pgdata / "global/pg_control").read_bytes() == CONTROL
    else:
        assert not site.pgdata.exists()


def test_the_same_backup_without_the_hostile_entries_restores(site: Site) -> None:
    """The baseline the cases above differ from: it restores, and leaves the outside."""
    plant(site, [])
    before = site.snapshot()
    code, output = restore(site)
    assert code == 0, output
    assert (site.pgdata / "base/1/100").read_bytes() == b"x" * 100
    assert (site.pgdata / "global/pg_control").read_bytes() == CONTROL
    assert site.snapshot() == before


def test_a_tablespace_restores_at_its_location(site: Site) -> None:
    """The legitimate link: pg_tblspc/<oid> to a new location outside PGDATA, its files
    under the version subdirectory, the map agreeing."""
    ts = site.base / "ts1"
    version_dir = "pg_tblspc/16385/PG_15_202209061"
    plant(
        site,
        [
            dir_entry("pg_tblspc"),
            link_entry("pg_tblspc/16385", ts),
            dir_entry(version_dir),
            dir_entry(f"{version_dir}/16384"),
            file_entry(f"{version_dir}/16384/16386", b"", ""),
        ],
        f"16385 {ts}\n",
    )
    code, output = restore(site)
    assert code == 0, output
    assert os.readlink(site.pgdata / "pg_tblspc/16385") == str(ts)
    assert (ts / "PG_15_202209061/16384/16386").read_bytes().startswith(b"planted")


def test_a_tablespace_location_that_exists_and_is_not_empty_is_refused(site: Site) -> None:
    version_dir = "pg_tblspc/16385/PG_15_202209061"
    plant(
        site,
        [
            dir_entry("pg_tblspc"),
            link_entry("pg_tblspc/16385", site.outside),
            dir_entry(version_dir),
        ],
        f"16385 {site.outside}\n",
    )
    before = site.snapshot()
    code, output = restore(site)
    assert code == 4, output
    assert "is not empty" in output
    assert site.snapshot() == before


def test_delta_never_follows_a_link_planted_in_the_data_directory(site: Site) -> None:
    """base/1 replaced by a link to a directory outside that holds a file of the same
    name, size and bytes: delta restore removes the link, never what it points to."""
    plant(site, [])
    existing_cluster(site)
    (site.pgdata / "base").mkdir()
    (site.outside / "100").write_bytes(b"x" * 100)
    os.chmod(site.outside / "100", 0o644)
    (site.outside / "stale").write_bytes(b"not listed in the backup")
    (site.pgdata / "base/1").symlink_to(site.outside)
    before = site.snapshot()
    code, output = restore(site, "--delta")
    assert code == 0, output
    assert not (site.pgdata / "base/1").is_symlink()
    assert (site.pgdata / "base/1/100").read_bytes() == b"x" * 100
    assert site.snapshot() == before


def test_delta_refuses_a_global_directory_that_is_a_link(site: Site) -> None:
    """global/ -> outside, holding the cluster's pg_control: it is neither read through
    nor set aside (renamed) there."""
    plant(site, [])
    site.pgdata.mkdir()
    (site.pgdata / "PG_VERSION").write_bytes(PG_VERSION)
    (site.outside / "pg_control").write_bytes(CONTROL)
    (site.pgdata / "global").symlink_to(site.outside)
    before = site.snapshot()
    code, output = restore(site, "--delta")
    assert code == 4, output
    assert "global/pg_control" in output
    assert site.snapshot() == before


def test_a_manifest_copied_over_another_backup_is_refused(site: Site) -> None:
    m = plant(site, [])
    other = "20261125T130000Z"
    site.repo.put_bytes(layout.manifest_key(other), to_json(m))
    code, output = restore(site, "--backup-id", BACKUP)
    assert code == 20, output
    assert f"stored as backup {other} names backup {BACKUP}" in output
    assert not site.pgdata.exists()
    with pytest.raises(Exception, match="names backup"):
        catalog.list_backups(site.repo)


@pytest.mark.parametrize(
    "args",
    [
        ["restore", "--pgdata", "{pgdata}", "--backup-id", "../../x"],
        ["info", "../../x"],
        ["pin", "../../x"],
        ["unpin", "../../x"],
        ["verify", "--repository-only", "--backup-id", "../../x"],
    ],
)
def test_a_backup_id_that_leaves_its_prefix_is_one_sentence_and_exit_4(
    site: Site, args: list[str]
) -> None:
    plant(site, [])
    argv = [a.replace("{pgdata}", str(site.pgdata)) for a in args]
    done = CliRunner().invoke(cli, ["--repo", site.url, *argv])
    assert done.exit_code == 4, done.output
    assert "Traceback" not in done.output
    assert done.exception is None or isinstance(done.exception, SystemExit)
    errors = [line for line in done.output.splitlines() if line.startswith("janua-backup: error")]
    assert len(errors) == 1 and "is not a backup id" in errors[0], done.output
