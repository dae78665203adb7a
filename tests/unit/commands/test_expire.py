"""``expire`` on a real ``file://`` repository with hand-made backups and WAL, no PostgreSQL.

Four backups, ten, twenty, thirty and three days old... see ``build``; with a
7-day window and ``min_backups`` 1, the two oldest must go with the WAL before
the third one's start segment, on every timeline, and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from janua_backup import locks
from janua_backup.cli import cli
from janua_backup.commands import backup as backup_command
from janua_backup.commands import expire
from janua_backup.commands.common import open_repo
from janua_backup.config import RepoSettings, Settings
from janua_backup.errors import LockHeld, ObjectNotFound
from janua_backup.pg.wal import Lsn, WalSegment, backup_history_file_name, history_file_name
from janua_backup.policy import RetentionPolicy
from janua_backup.repository import catalog, layout, marker, pins
from janua_backup.repository.objects import Repo
from janua_backup.retention import BEFORE_WINDOW, INSIDE_WINDOW, NEEDED_BY, PINNED
from janua_backup.storage.base import ObjectInfo, Storage
from tests.unit.repository.helpers import SEG, T0, manifest

NOW = T0 + timedelta(days=40)
WEEK = RetentionPolicy(recovery_window_days=7, min_backups=1)
# id -> (days before NOW at which it became consistent, start segment number)
BACKUPS = {
    "20261026T120000Z": (30, 2),
    "20261105T120000Z": (20, 5),
    "20261115T120000Z": (10, 8),
    "20261201T120000Z": (3, 11),
}
B1, B2, B3, B4 = BACKUPS


def seg(number: int, timeline: int = 1) -> str:
    return WalSegment.from_number(timeline, number, SEG).name


# Timeline 2 branched off in segment 6: its history file must stay whatever its age.
WAL = [
    *(seg(n) for n in range(1, 13)),
    backup_history_file_name(1, Lsn(2 * SEG + 0x28), SEG),
    seg(6) + ".partial",
    history_file_name(2),
    *(seg(n, timeline=2) for n in range(6, 9)),
]
GONE_WAL = [
    *(seg(n) for n in range(1, 8)),
    backup_history_file_name(1, Lsn(2 * SEG + 0x28), SEG),
    seg(6) + ".partial",
    seg(6, timeline=2),
    seg(7, timeline=2),
]


@dataclass
class Cluster:
    settings: Settings
    repo: Repo
    root: Path


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    root = tmp_path / "repo"
    root.mkdir()
    settings = Settings(repository=RepoSettings(url=f"file://{root}"))
    repo = open_repo(settings)
    marker.ensure(repo, system_identifier=42, wal_segment_size=SEG, pg_major=15)
    for name in WAL:
        repo.put_bytes(layout.wal_key(name), name.encode() * 100)
    return Cluster(settings, repo, root)


def add_backup(
    repo: Repo, backup_id: str, *, depends_on: str | None = None, now: datetime = NOW
) -> None:
    days, start_seg = BACKUPS[backup_id]
    stop = now - timedelta(days=days)
    m = manifest(backup_id, start_seg=start_seg, stop_seg=start_seg)
    m = replace(m, start_time=stop - timedelta(minutes=20), stop_time=stop)
    if depends_on is not None:
        m = replace(m, backup_type="incr", depends_on=depends_on)
    repo.put_bytes(layout.data_key(backup_id, "data/000001"), backup_id.encode() * 1000)
    repo.put_bytes(layout.data_key(backup_id, "data/000002"), b"more")
    repo.put_bytes(layout.drill_key(backup_id, "20261201T000000Z"), b'{"report": 1}')
    catalog.commit(repo, m)


def build(repo: Repo, depends: dict[str, str] | None = None, now: datetime = NOW) -> None:
    for backup_id in BACKUPS:
        add_backup(repo, backup_id, depends_on=(depends or {}).get(backup_id), now=now)


def keys(repo: Repo) -> dict[str, int]:
    """Every object but the lock generations, with its size."""
    listed = repo.storage.list()
    return {i.key: i.size_bytes for i in listed if not i.key.startswith(layout.LOCKS_PREFIX)}


def owned_by(backup_id: str, found: Iterable[str]) -> set[str]:
    mine = (layout.backup_prefix(backup_id), layout.drill_prefix(backup_id))
    return {key for key in found if key.startswith(mine)}


def test_expire_deletes_exactly_the_backups_and_wal_the_window_does_not_need(
    cluster: Cluster,
) -> None:
    build(cluster.repo)
    before = keys(cluster.repo)

    result = expire.run(cluster.settings, WEEK, now=NOW)

    assert [b.backup_id for b in result.expired] == [B1, B2]
    assert [(k.backup_id, k.reason) for k in result.kept] == [
        (B3, BEFORE_WINDOW),
        (B4, INSIDE_WINDOW),
    ]
    gone = owned_by(B1, before) | owned_by(B2, before) | {layout.wal_key(n) for n in GONE_WAL}
    assert set(keys(cluster.repo)) == set(before) - gone
    assert [m.backup_id for m in catalog.list_backups(cluster.repo)] == [B3, B4]
    assert (result.wal_deleted, result.wal_first_deleted) == (len(GONE_WAL), seg(1))
    assert result.wal_last_deleted == seg(7, timeline=2)
    wal_bytes = sum(before[layout.wal_key(n)] for n in GONE_WAL)
    assert result.wal_deleted_bytes == wal_bytes
    backup_bytes = sum(
        v for k, v in before.items() if k.startswith(("backups/" + B1, "backups/" + B2))
    )
    assert [b.stored_bytes for b in result.expired] == [
        sum(v for k, v in before.items() if k.startswith(layout.backup_prefix(i))) for i in (B1, B2)
    ]
    assert result.freed_bytes == backup_bytes + wal_bytes
    assert not result.dry_run and result.incomplete_removed == ()
    # It ran under the cluster lock that backup takes, and released it.
    record = locks.holder(cluster.repo.storage, backup_command.LOCK_NAME)
    assert record is not None and record.purpose == "expire" and record.released

    again = expire.run(cluster.settings, WEEK, now=NOW)  # idempotent: nothing more to do
    assert (again.expired, again.wal_deleted, again.freed_bytes) == ((), 0, 0)


Keys = list[str]  # named here: inside the class, ``list`` is the storage method


class RecordingStorage:
    """The real storage, recording each delete call's keys in order."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.deletes: list[Keys] = []

    def put(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> None:
        self.inner.put(key, chunks, if_absent=if_absent)

    def get(self, key: str) -> Iterator[bytes]:
        return self.inner.get(key)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, keys: Iterable[str]) -> None:
        batch = list(keys)
        self.deletes.append(batch)
        self.inner.delete(batch)

    def describe(self) -> str:
        return self.inner.describe()

    @property
    def deleted(self) -> Keys:
        return [key for batch in self.deletes for key in batch]


@pytest.fixture
def recorded(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> RecordingStorage:
    storage = RecordingStorage(cluster.repo.storage)
    repo = replace(cluster.repo, storage=storage)
    monkeypatch.setattr(expire, "open_repo", lambda settings: repo)
    return storage


def test_a_backup_loses_its_manifest_before_any_other_object_and_wal_goes_last(
    cluster: Cluster, recorded: RecordingStorage
) -> None:
    build(cluster.repo)
    expire.run(cluster.settings, WEEK, now=NOW)

    deleted = [k for k in recorded.deleted if not k.startswith(layout.LOCKS_PREFIX)]
    for backup_id in (B1, B2):
        mine = [i for i, key in enumerate(deleted) if key in owned_by(backup_id, deleted)]
        assert deleted[mine[0]] == layout.manifest_key(backup_id)
        assert len(mine) == 4  # manifest, two data objects, one drill report
    wal = [i for i, key in enumerate(deleted) if key.startswith(layout.WAL_PREFIX)]
    assert min(wal) > max(i for i, key in enumerate(deleted) if key.startswith("backups/"))
    assert deleted.index(layout.manifest_key(B1)) < deleted.index(layout.manifest_key(B2))


def test_wal_is_deleted_in_bounded_batches(
    cluster: Cluster, recorded: RecordingStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(expire, "WAL_BATCH", 3)
    build(cluster.repo)
    expire.run(cluster.settings, WEEK, now=NOW)
    batches = [b for b in recorded.deletes if b and b[0].startswith(layout.WAL_PREFIX)]
    assert [len(b) for b in batches] == [3, 3, 3, 2]
    assert [layout.wal_name(k) for b in batches for k in b] == sorted(GONE_WAL)


def test_dry_run_deletes_nothing_takes_no_lock_and_tells_what_would_go(
    cluster: Cluster,
) -> None:
    build(cluster.repo)
    cluster.repo.put_bytes(layout.data_key("20261202T000000Z", "data/000001"), b"left over")
    before = keys(cluster.repo)

    with locks.hold(cluster.repo.storage, backup_command.LOCK_NAME, purpose="backup"):
        seen = expire.run(cluster.settings, WEEK, dry_run=True, now=NOW)  # reads only
    assert keys(cluster.repo) == before
    assert seen.dry_run and seen.incomplete_removed == ("20261202T000000Z",)

    done = expire.run(cluster.settings, WEEK, now=NOW)
    assert replace(seen, duration_s=0, dry_run=False) == replace(done, duration_s=0)
    assert (
        seen.freed_bytes > 0
        and seen.incomplete_bytes == before[layout.data_key("20261202T000000Z", "data/000001")]
    )
    assert "20261202T000000Z" not in {layout.backup_id_of(k) for k in keys(cluster.repo)}


def test_a_held_lock_refuses_with_exit_42_and_deletes_nothing(cluster: Cluster) -> None:
    build(cluster.repo)
    before = keys(cluster.repo)
    with (
        locks.hold(cluster.repo.storage, backup_command.LOCK_NAME, purpose="backup"),
        pytest.raises(LockHeld) as refused,
    ):
        expire.run(cluster.settings, WEEK, now=NOW)
    assert refused.value.exit_code == 42
    assert "another backup of this cluster is running" in refused.value.message
    assert keys(cluster.repo) == before


def test_a_pinned_backup_survives_and_keeps_its_wal(cluster: Cluster) -> None:
    build(cluster.repo)
    pins.pin(cluster.repo, B1, "audit")
    result = expire.run(cluster.settings, WEEK, now=NOW)
    assert [b.backup_id for b in result.expired] == [B2]
    assert dict((k.backup_id, k.reason) for k in result.kept)[B1] == PINNED
    assert [m.backup_id for m in catalog.list_backups(cluster.repo)] == [B1, B3, B4]
    # The horizon is now B1's start segment (2): only segment 1 is below it.
    assert result.wal_first_deleted == result.wal_last_deleted == seg(1)


def test_an_incremental_chain_is_kept_whole(cluster: Cluster) -> None:
    build(cluster.repo, depends={B3: B2})
    result = expire.run(cluster.settings, WEEK, now=NOW)
    assert [b.backup_id for b in result.expired] == [B1]
    assert dict((k.backup_id, k.reason) for k in result.kept)[B2] == NEEDED_BY.format(B3)
    assert [m.backup_id for m in catalog.list_backups(cluster.repo)] == [B2, B3, B4]
    assert result.wal_last_deleted == seg(4)  # B2 starts in segment 5


def test_an_expired_chain_goes_dependents_first(
    cluster: Cluster, recorded: RecordingStorage
) -> None:
    build(cluster.repo, depends={B2: B1})
    result = expire.run(cluster.settings, WEEK, now=NOW)
    # Deleting B1 first would leave B2 listed without the backup it is built on.
    assert [b.backup_id for b in result.expired] == [B2, B1]
    manifests = [k for k in recorded.deleted if k.endswith("/" + layout.MANIFEST_NAME)]
    assert manifests == [layout.manifest_key(B2), layout.manifest_key(B1)]


def test_a_missing_parent_stops_expire_before_any_deletion(cluster: Cluster) -> None:
    build(cluster.repo, depends={B4: "20261001T000000Z"})
    before = keys(cluster.repo)
    with pytest.raises(ObjectNotFound, match="built on backup 20261001T000000Z"):
        expire.run(cluster.settings, WEEK, now=NOW)
    assert keys(cluster.repo) == before


def test_min_backups_keeps_old_backups_when_no_new_ones_come(cluster: Cluster) -> None:
    build(cluster.repo)
    result = expire.run(
        cluster.settings, replace(WEEK, min_backups=3), now=NOW + timedelta(days=60)
    )
    assert [b.backup_id for b in result.expired] == [B1]
    assert [k.backup_id for k in result.kept] == [B2, B3, B4]


def test_an_empty_repository_has_nothing_to_expire(tmp_path: Path) -> None:
    settings = Settings(repository=RepoSettings(url=f"file://{tmp_path}"))
    result = expire.run(settings, WEEK, now=NOW)
    assert (result.kept, result.expired, result.freed_bytes) == ((), (), 0)
    assert list(tmp_path.iterdir()) == []


def test_cli_expire_applies_the_policy_and_its_overrides(cluster: Cluster, tmp_path: Path) -> None:
    build(cluster.repo, now=datetime.now(UTC))  # the CLI runs on the real clock
    policy = tmp_path / "policy.toml"
    # A 1-day window holds no backup (B4 is 3 days old): only the minimum count keeps any.
    policy.write_text("[retention]\nrecovery_window_days = 1\nmin_backups = 3\n")
    runner = CliRunner()
    base = ["--repo", f"file://{cluster.root}", "expire", "--policy", str(policy)]

    shown = runner.invoke(cli, [*base, "--dry-run"])
    assert shown.exit_code == 0, shown.output
    assert f"would remove backup {B1}" in shown.stdout and "would free" in shown.stdout
    assert f"keeps backup {B2}: minimum count" in shown.stdout

    done = runner.invoke(cli, [*base, "--min-backups", "2", "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert [b["backup_id"] for b in report["expired"]] == [B1, B2]
    assert [k["backup_id"] for k in report["kept"]] == [B3, B4]
    assert report["freed_bytes"] > 0 and not report["dry_run"]
