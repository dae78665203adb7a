from __future__ import annotations

from dataclasses import replace

import pytest

from janua_backup.errors import InputError, ObjectExists
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
