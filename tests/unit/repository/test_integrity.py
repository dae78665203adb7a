"""The repository check on an in-memory repository: real objects through the real
pipeline, then damage done to them the way a disk, a bucket or a person would."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace

import pytest

from janua_backup.commands.verify_repo import RepoVerifyResult
from janua_backup.errors import InputError, StorageError, StorageUnreachable
from janua_backup.pg.wal import Lsn, WalSegment
from janua_backup.pipeline.crypto import Key
from janua_backup.repository import catalog, integrity, layout, reread
from janua_backup.repository.integrity import ProblemKind
from janua_backup.repository.manifest import FileEntry, Manifest, StoredObject
from janua_backup.repository.objects import Repo
from janua_backup.storage.memory import MemoryStorage
from tests.unit.repository.helpers import Flaky, manifest, memory_repo, segment_bytes

MIB = 1024 * 1024  # the smallest WAL segment size initdb allows: keeps the tests quick
BACKUP = "20261125T120000Z"
FILES = {
    "PG_VERSION": b"15\n",
    "global/pg_filenode.map.tmp": b"",  # empty: hashed at its offset like any file
    "global/pg_control": bytes(range(256)) * 32,
    "base/5/1259": b"relation page " * 40_000,  # ~560 kB: an object of its own
}


def seg(number: int, timeline: int = 1) -> str:
    return WalSegment.from_number(timeline, number, MIB).name


def _entry(path: str, data: bytes, obj: str, offset: int) -> FileEntry:
    return FileEntry(
        path=path,
        kind="file",
        mode=0o600,
        mtime_ns=1,
        uid=101,
        gid=104,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        object=obj,
        offset=offset,
    )


def _put_object(repo: Repo, backup_id: str, name: str, data: bytes) -> StoredObject:
    put = repo.put_bytes(layout.data_key(backup_id, name), data)
    return StoredObject(
        name, put.plain.size_bytes, put.plain.sha256, put.stored.size_bytes, put.stored.sha256
    )


def store_backup(
    repo: Repo, backup_id: str = BACKUP, *, start_seg: int = 2, stop_seg: int = 2, tli: int = 1
) -> Manifest:
    """A committed backup of FILES: a bundle of the two small files, and the big one alone."""
    small, big = ["PG_VERSION", "global/pg_filenode.map.tmp", "global/pg_control"], "base/5/1259"
    entries, offset = [], 0
    for path in small:
        entries.append(_entry(path, FILES[path], "data/000001", offset))
        offset += len(FILES[path])
    entries.append(_entry(big, FILES[big], "data/000002", 0))
    bundle = b"".join(FILES[p] for p in small)
    objects = (
        _put_object(repo, backup_id, "data/000001", bundle),
        _put_object(repo, backup_id, "data/000002", FILES[big]),
    )
    m = replace(
        manifest(backup_id, timeline=tli),
        start_lsn=Lsn(start_seg * MIB + 0x28),
        stop_lsn=Lsn(stop_seg * MIB + 0x100),
        wal_segment_size=MIB,
        files=(*entries, FileEntry(path="base", kind="dir", mode=0o700, mtime_ns=1, uid=1, gid=1)),
        objects=objects,
    )
    catalog.commit(repo, m)
    return m


def archive(repo: Repo, first: int, last: int, tli: int = 1) -> None:
    for number in range(first, last + 1):
        repo.put_bytes(layout.wal_key(seg(number, tli)), segment_bytes(seg(number, tli), MIB))


def history(repo: Repo, tli: int, parent: int, switch_seg: int) -> None:
    text = f"{parent}\t0/{switch_seg * MIB + 0x100:X}\tno recovery target specified\n"
    repo.put_bytes(layout.wal_key(f"{tli:08X}.history"), text.encode())


def raw(repo: Repo, key: str) -> bytes:
    return b"".join(repo.storage.get(key))


def rewrite(repo: Repo, key: str, data: bytes) -> None:
    repo.storage.put(key, [data])


def flip(repo: Repo, key: str, offset: int) -> None:
    data = bytearray(raw(repo, key))
    data[offset % len(data)] ^= 0x01
    rewrite(repo, key, bytes(data))


def check(repo: Repo, backup_id: str | None = None) -> integrity.RepoCheck:
    return integrity.check(repo, MIB, jobs=3, backup_id=backup_id)


def kinds(result: integrity.RepoCheck) -> list[ProblemKind]:
    return [p.kind for p in result.problems]


@pytest.fixture(params=[None, Key(bytes(range(32)))], ids=["gzip", "encrypted"])
def repo(request: pytest.FixtureRequest) -> Repo:
    r = memory_repo(key=request.param)
    store_backup(r)
    archive(r, 2, 8)
    return r


def test_a_clean_repository_passes_with_every_object_and_segment_read(repo: Repo) -> None:
    result = check(repo)
    assert result.problems == ()
    assert (result.objects_checked, result.wal_checked) == (2, 7)
    stored = sum(i.size_bytes for i in repo.storage.list(layout.backup_prefix(BACKUP)))
    manifest_bytes = len(raw(repo, layout.manifest_key(BACKUP)))
    wal_bytes = sum(i.size_bytes for i in repo.storage.list(layout.WAL_PREFIX))
    assert result.bytes_read == stored - manifest_bytes + wal_bytes
    (b,) = result.backups
    assert b.restorable and b.objects_checked == 2 and b.objects_failed == 0
    assert b.restorable_to_lsn == Lsn(9 * MIB) and b.restorable_to_timeline == 1
    assert b.last_segment == seg(8) and b.missing_segment is None


def test_a_flipped_byte_in_a_data_object_is_reported_with_the_object(repo: Repo) -> None:
    key = layout.data_key(BACKUP, "data/000002")
    flip(repo, key, 300)
    result = check(repo)
    (problem,) = result.problems
    assert problem.kind is ProblemKind.DAMAGED_OBJECT
    assert (problem.backup_id, problem.key) == (BACKUP, key)
    assert problem.message.startswith(f"backup {BACKUP} object data/000002 is damaged (")
    (b,) = result.backups
    assert not b.restorable and b.objects_failed == 1 and b.restorable_to_lsn is not None


def test_a_truncated_and_a_missing_object_are_reported(repo: Repo) -> None:
    bundle, big = layout.data_key(BACKUP, "data/000001"), layout.data_key(BACKUP, "data/000002")
    rewrite(repo, bundle, raw(repo, bundle)[:-20])
    repo.storage.delete([big])
    result = check(repo)
    assert kinds(result) == [ProblemKind.DAMAGED_OBJECT, ProblemKind.MISSING_OBJECT]
    truncated, missing = result.problems
    assert truncated.key == bundle and "data/000001 is damaged" in truncated.message
    assert missing.key == big
    assert missing.message == (
        f"backup {BACKUP} object data/000002 is missing: the backup cannot be restored; "
        "take a new backup"
    )


def test_a_file_that_differs_from_the_manifest_is_reported() -> None:
    repo = memory_repo()
    m = store_backup(repo, "20261125T110000Z")
    archive(repo, 2, 3)
    wrong = replace(m.files[2], sha256="00" * 32)
    forged = replace(m, backup_id=BACKUP, files=(*m.files[:2], wrong, *m.files[3:]))
    for obj in m.objects:  # same objects under the second backup, one file entry wrong
        key = layout.data_key(m.backup_id, obj.name)
        rewrite(repo, layout.data_key(BACKUP, obj.name), raw(repo, key))
    catalog.commit(repo, forged)
    (problem,) = check(repo).problems
    assert problem.kind is ProblemKind.FILE_MISMATCH and problem.backup_id == BACKUP
    assert "file global/pg_control is 8192 bytes" in problem.message
    assert "the manifest says 8192 bytes, 000000000000" in problem.message


def test_a_missing_segment_in_the_middle_is_a_gap_that_says_what_it_costs(repo: Repo) -> None:
    repo.storage.delete([layout.wal_key(seg(5))])
    result = check(repo)
    (problem,) = result.problems
    assert problem.kind is ProblemKind.WAL_GAP and problem.key == layout.wal_key(seg(5))
    assert problem.message.startswith(f"backup {BACKUP} can be restored only up to 20")
    assert problem.message.endswith(
        f": WAL {seg(5)} is missing (3 later archived segments cannot be replayed)"
    )
    (b,) = result.backups
    assert b.restorable and b.missing_segment == seg(5)
    assert b.restorable_to_lsn == Lsn(5 * MIB) and b.last_segment == seg(4)
    assert result.wal_checked == 3  # 2, 3 and 4: what the backup can use


def test_a_backup_without_the_wal_to_become_consistent_is_not_restorable() -> None:
    repo = memory_repo()
    store_backup(repo, stop_seg=3)
    archive(repo, 2, 2)
    archive(repo, 4, 5)
    (problem,) = check(repo).problems
    assert problem.kind is ProblemKind.NOT_RESTORABLE
    assert problem.message == (
        f"backup {BACKUP} cannot be restored: WAL {seg(3)}, needed to make it consistent, "
        "is missing"
    )
    assert not check(repo).backups[0].restorable


def test_a_damaged_segment_cuts_the_window_like_a_missing_one(repo: Repo) -> None:
    flip(repo, layout.wal_key(seg(6)), 100)
    result = check(repo)
    assert kinds(result) == [ProblemKind.WAL_GAP, ProblemKind.DAMAGED_WAL]
    gap, damaged = result.problems
    assert gap.message.endswith(
        f"WAL {seg(6)} is damaged (2 later archived segments cannot be replayed)"
    )
    assert damaged.message.startswith(f"WAL {seg(6)} is damaged (") and damaged.backup_id is None
    assert result.backups[0].restorable_to_lsn == Lsn(6 * MIB)


def test_segments_stored_under_each_others_names_are_damaged(repo: Repo) -> None:
    """Issue 15, finding 2: swapped objects passed, and a restore promoted with rows missing."""
    four, five = raw(repo, layout.wal_key(seg(4))), raw(repo, layout.wal_key(seg(5)))
    rewrite(repo, layout.wal_key(seg(4)), five)
    rewrite(repo, layout.wal_key(seg(5)), four)
    result = check(repo)
    damaged = [p for p in result.problems if p.kind is ProblemKind.DAMAGED_WAL]
    assert [p.key for p in damaged] == [layout.wal_key(seg(4)), layout.wal_key(seg(5))]
    # Unencrypted: the page header names the other segment. Encrypted: the AAD binds
    # each object to its key, so decryption fails before the header is read.
    assert (
        f"the file named {seg(4)} holds segment {seg(5)}" in damaged[0].message
        or "is not the object stored under this name" in damaged[0].message
    )
    assert result.backups[0].restorable_to_lsn == Lsn(4 * MIB)


def test_a_segment_of_another_cluster_is_damaged_not_a_crash(repo: Repo) -> None:
    repo.put_bytes(layout.wal_key(seg(6)), segment_bytes(seg(6), MIB, sysid=43))
    result = integrity.check(repo, MIB, jobs=3, system_identifier=42, pg_major=15)
    damaged = [p for p in result.problems if p.kind is ProblemKind.DAMAGED_WAL]
    assert [p.key for p in damaged] == [layout.wal_key(seg(6))]
    assert "system identifier 43" in damaged[0].message
    assert result.backups[0].restorable_to_lsn == Lsn(6 * MIB)


def test_the_segment_of_a_timeline_switch_keeps_its_old_timeline_header() -> None:
    """PostgreSQL copies the segment holding the switch point from the old timeline,
    first page included: 000000020000000000000004 starts with timeline 1's header."""
    repo = memory_repo()
    store_backup(repo)
    archive(repo, 2, 4, tli=1)
    history(repo, 2, parent=1, switch_seg=4)
    archive(repo, 5, 6, tli=2)
    repo.put_bytes(layout.wal_key(seg(4, 2)), segment_bytes(seg(4, 1), MIB))
    assert integrity.check(repo, MIB, jobs=3, system_identifier=42).problems == ()


def test_a_timeline_switch_with_contiguous_wal_passes() -> None:
    repo = memory_repo()
    store_backup(repo)
    archive(repo, 2, 4, tli=1)
    history(repo, 2, parent=1, switch_seg=4)
    archive(repo, 4, 6, tli=2)
    result = check(repo)
    assert result.problems == ()
    (b,) = result.backups
    assert b.restorable_to_timeline == 2 and b.last_segment == seg(6, 2)
    assert result.wal_checked == 6  # timeline 1: 2-4; timeline 2 from its switch: 4-6


def test_a_gap_on_a_later_timeline_names_the_timeline() -> None:
    repo = memory_repo()
    store_backup(repo)
    archive(repo, 2, 4, tli=1)
    history(repo, 2, parent=1, switch_seg=4)
    archive(repo, 4, 4, tli=2)
    archive(repo, 6, 7, tli=2)
    (problem,) = check(repo).problems
    assert problem.kind is ProblemKind.WAL_GAP
    assert f"on timeline 2: WAL {seg(5, 2)} is missing (2 later" in problem.message


def test_a_timeline_with_segments_but_no_history_file_is_reported() -> None:
    repo = memory_repo()
    store_backup(repo)
    archive(repo, 2, 4, tli=1)
    archive(repo, 4, 5, tli=2)
    result = check(repo)
    (problem,) = result.problems
    assert problem.kind is ProblemKind.MISSING_HISTORY and problem.backup_id is None
    assert problem.key == layout.wal_key("00000002.history")
    assert problem.message.startswith(
        f"timeline 2 has archived WAL (from {seg(4, 2)}) but no 00000002.history"
    )


def test_backup_id_checks_one_backup_and_an_unknown_id_is_an_input_error(repo: Repo) -> None:
    other = "20261126T120000Z"
    store_backup(repo, other, start_seg=6, stop_seg=6)
    repo.storage.delete([layout.data_key(other, "data/000001")])
    assert check(repo, BACKUP).problems == ()
    assert [b.backup_id for b in check(repo, BACKUP).backups] == [BACKUP]
    assert kinds(check(repo)) == [ProblemKind.MISSING_OBJECT]
    with pytest.raises(InputError, match="no backup 20200101T000000Z"):
        check(repo, "20200101T000000Z")


def test_a_damaged_manifest_is_a_problem_and_an_empty_repository_is_one_too() -> None:
    repo = memory_repo()
    store_backup(repo)
    archive(repo, 2, 3)
    flip(repo, layout.manifest_key(BACKUP), 60)
    (problem,) = check(repo).problems
    assert problem.kind is ProblemKind.DAMAGED_MANIFEST
    assert problem.message.startswith(f"backup {BACKUP} cannot be restored: its manifest")
    assert kinds(check(memory_repo())) == [ProblemKind.EMPTY_REPOSITORY]


class _Unreachable(MemoryStorage):
    def get(self, key: str) -> Iterator[bytes]:
        if key.startswith(layout.WAL_PREFIX):
            raise StorageUnreachable("connection refused")
        return super().get(key)


def test_storage_that_cannot_be_reached_stops_the_check() -> None:
    repo = Repo(storage=_Unreachable(), spec=memory_repo().spec)
    store_backup(repo)
    archive(repo, 2, 3)
    with pytest.raises(StorageUnreachable):
        check(repo)


def test_the_summary_is_the_verdict_or_the_first_problem_and_how_many_more(repo: Repo) -> None:
    clean = check(repo)
    result = RepoVerifyResult("memory://x", clean.backups, 2, 1, 7, (), 0.1)
    assert result.ok
    assert result.summary == "repository check passed: 1 backup, 2 objects, 7 WAL segments"
    repo.storage.delete([layout.wal_key(seg(4)), layout.data_key(BACKUP, "data/000001")])
    found = check(repo).problems
    failed = RepoVerifyResult("memory://x", (), 2, 1, 7, found, 0.1)
    assert not failed.ok and len(found) == 2
    assert failed.summary == f"{found[0].message} (and 1 more problem)"
    assert found[0].kind is ProblemKind.MISSING_OBJECT


def test_a_damaged_history_file_is_reported_and_its_timeline_not_followed() -> None:
    repo = memory_repo()
    store_backup(repo)
    archive(repo, 2, 4, tli=1)
    history(repo, 2, parent=1, switch_seg=4)
    archive(repo, 4, 5, tli=2)
    flip(repo, layout.wal_key("00000002.history"), 40)
    result = check(repo)
    (problem,) = result.problems
    assert problem.kind is ProblemKind.DAMAGED_WAL
    assert problem.message.startswith("timeline history 00000002.history is damaged (")
    assert result.backups[0].restorable_to_timeline == 1


def copied(repo: Repo, flaky: Flaky) -> Repo:
    for info in repo.storage.list():
        flaky.put(info.key, repo.storage.get(info.key))
    return Repo(flaky, repo.spec)


@pytest.mark.parametrize("fault", ["reset", "cut", "flip"])
def test_damage_a_re_read_does_not_show_is_not_reported(repo: Repo, fault: str) -> None:
    # Every object, segment and manifest fails its first two reads (in transit):
    # the check reads each again and passes, as a restore would.
    flaky = Flaky(fault, times=reread.ATTEMPTS - 1)
    flaky.targets = {i.key for i in repo.storage.list()}
    result = check(copied(repo, flaky))
    assert result.problems == ()
    (b,) = result.backups
    assert b.restorable and b.objects_failed == 0
    assert set(flaky.faults.values()) == {reread.ATTEMPTS - 1}
    assert layout.manifest_key(BACKUP) in flaky.faults


def test_damage_every_read_shows_is_reported_as_before(repo: Repo) -> None:
    flaky = Flaky("flip", times=reread.ATTEMPTS)
    key = layout.data_key(BACKUP, "data/000002")
    flaky.targets = {key, layout.wal_key(seg(5))}
    result = check(copied(repo, flaky))
    assert kinds(result) == [
        ProblemKind.DAMAGED_OBJECT, ProblemKind.WAL_GAP, ProblemKind.DAMAGED_WAL
    ]  # fmt: skip
    assert flaky.faults == {key: reread.ATTEMPTS, layout.wal_key(seg(5)): reread.ATTEMPTS}


def test_a_read_that_dies_mid_body_every_time_stops_the_check_as_before(repo: Repo) -> None:
    flaky = Flaky("reset", times=reread.ATTEMPTS)
    flaky.targets = {layout.wal_key(seg(4))}
    with pytest.raises(StorageError, match="mid-stream"):
        check(copied(repo, flaky))
