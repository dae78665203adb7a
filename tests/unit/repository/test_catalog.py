from __future__ import annotations

from dataclasses import replace

import pytest

from janua_backup.errors import InputError, IntegrityError, ObjectExists
from janua_backup.repository import catalog, layout
from tests.unit.repository.helpers import manifest, memory_repo


def test_a_backup_exists_only_once_its_manifest_is_committed() -> None:
    repo = memory_repo()
    m = manifest("20261125T120000Z")
    repo.put_bytes(layout.data_key(m.backup_id, "data/000001"), b"abc")
    assert catalog.backup_ids(repo) == ([], [m.backup_id])
    assert catalog.list_backups(repo) == []
    catalog.commit(repo, m)
    assert catalog.list_backups(repo) == [m]
    catalog.commit(repo, m)  # the same bytes again: a retry after a lost answer succeeds
    with pytest.raises(ObjectExists):
        catalog.commit(repo, replace(m, host="elsewhere"))  # never replaced by another
    assert catalog.list_backups(repo) == [m]


def test_clean_incomplete_removes_only_uncommitted_backups() -> None:
    repo = memory_repo()
    done = manifest("20261125T120000Z")
    repo.put_bytes(layout.data_key(done.backup_id, "data/000001"), b"abc")
    catalog.commit(repo, done)
    repo.put_bytes(layout.data_key("20261125T130000Z", "data/000001"), b"half")
    repo.put_bytes(layout.data_key("20261125T140000Z", "data/000001"), b"running")
    assert catalog.clean_incomplete(repo, keep="20261125T140000Z") == ["20261125T130000Z"]
    assert catalog.backup_ids(repo) == (["20261125T120000Z"], ["20261125T140000Z"])


def test_loading_an_unknown_backup_is_an_input_error() -> None:
    with pytest.raises(InputError, match="no backup"):
        catalog.load(memory_repo(), "20200101T000000Z")


def test_a_manifest_copied_under_another_id_is_refused_by_every_reader() -> None:
    """Someone with write access copies backup A's manifest over backup B's: neither
    load, nor the listing restore and expire use, believes it."""
    repo = memory_repo()
    a, b = manifest("20261125T120000Z"), manifest("20261125T130000Z", minutes=60)
    catalog.commit(repo, a)
    catalog.commit(repo, b)
    raw = repo.get_bytes(layout.manifest_key(a.backup_id))
    repo.storage.delete([layout.manifest_key(b.backup_id)])
    repo.put_bytes(layout.manifest_key(b.backup_id), raw)
    with pytest.raises(IntegrityError, match="stored as backup 20261125T130000Z names backup"):
        catalog.load(repo, b.backup_id)
    with pytest.raises(IntegrityError) as refused:
        catalog.list_backups(repo)
    assert refused.value.exit_code == 20
    assert catalog.load(repo, a.backup_id) == a


@pytest.mark.parametrize("bad", ["../../x", "a/b", "..", "", "x y", "20261125T120000Z/../y"])
def test_an_id_that_could_leave_its_prefix_is_an_input_error(bad: str) -> None:
    for build in (layout.manifest_key, layout.backup_prefix, layout.pin_key, layout.drill_prefix):
        with pytest.raises(InputError, match="is not a backup id") as refused:
            build(bad)
        assert refused.value.exit_code == 4
    with pytest.raises(InputError, match="is not a backup id"):
        catalog.load(memory_repo(), bad)


def test_a_listing_with_a_foreign_prefix_still_lists_the_backups() -> None:
    repo = memory_repo()
    m = manifest("20261125T120000Z")
    catalog.commit(repo, m)
    repo.storage.put("backups/odd name/manifest", [b"x"])
    assert catalog.backup_ids(repo) == ([m.backup_id], [])
