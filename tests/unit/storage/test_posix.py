"""The storage contract on ``PosixStorage``, and what only a directory can get wrong."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from janua_backup.errors import AccessDenied, BucketNotFound, ObjectNotFound, StorageError
from janua_backup.storage.posix import PosixStorage
from tests.unit.storage.contract import BIG_BYTES, Boom, StorageContract, failing, pattern, read


class TestPosixStorage(StorageContract):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> PosixStorage:
        root = tmp_path / "repo"
        root.mkdir()
        return PosixStorage(root)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    return path


def leftovers(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.startswith(".tmp-")]


def test_objects_are_plain_files_under_the_root(root: Path) -> None:
    storage = PosixStorage(root)
    storage.put("wal/000000010000000000000001", [b"segment"])
    assert (root / "wal" / "000000010000000000000001").read_bytes() == b"segment"
    assert storage.describe() == f"file://{root}"


def test_relative_root_is_made_absolute(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(root.parent)
    assert PosixStorage(Path("repo")).describe() == f"file://{root}"


@pytest.mark.parametrize("missing", ["absent", "a-file"])
def test_missing_root_is_bucket_not_found_for_every_operation(tmp_path: Path, missing: str) -> None:
    (tmp_path / "a-file").write_bytes(b"not a directory")
    storage = PosixStorage(tmp_path / missing)
    calls: list[Callable[[], Any]] = [
        lambda: storage.put("k", [b"x"]),
        lambda: storage.put("deep/k", [b"x"], if_absent=True),
        lambda: storage.get("k"),
        lambda: storage.head("k"),
        lambda: storage.list(),
        lambda: storage.delete(["k"]),
    ]
    for call in calls:
        with pytest.raises(BucketNotFound, match="does not exist"):
            call()
    # Never created behind the user's back: a typo'd path or an unmounted
    # share must not turn into an empty local repository.
    assert not (tmp_path / "absent").exists()


def test_failed_puts_leave_no_temp_files(root: Path) -> None:
    storage = PosixStorage(root)
    with pytest.raises(Boom):
        storage.put("d/partial", failing(pattern(BIG_BYTES), 1 << 20))
    storage.put("d/exists", [b"1"])
    with pytest.raises(Boom):
        storage.put("d/exists", failing(b"xyz", 1), if_absent=True)
    with pytest.raises(StorageError):  # ObjectExists
        storage.put("d/exists", [b"2"], if_absent=True)
    storage.put("d/exists", [b"3"])
    assert leftovers(root) == []
    assert sorted(p.name for p in (root / "d").iterdir()) == ["exists"]
    assert read(storage, "d/exists") == b"3"


def test_a_caller_oserror_is_not_translated(root: Path) -> None:
    def broken() -> Any:
        yield b"x"
        raise FileNotFoundError(errno.ENOENT, "the file being backed up vanished")

    with pytest.raises(FileNotFoundError, match="vanished"):
        PosixStorage(root).put("k", broken())
    assert leftovers(root) == []


def test_list_skips_temp_files_of_crashed_writers(root: Path) -> None:
    storage = PosixStorage(root)
    storage.put("d/kept", [b"1"])
    (root / "d" / ".tmp-0123456789abcdef").write_bytes(b"half a segment")
    assert [info.key for info in storage.list()] == ["d/kept"]


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../outside", "a/../../b", "a//b", "a/./b", "d/", "d/.tmp-x"]
)
def test_rejects_keys_that_escape_or_clash(root: Path, key: str) -> None:
    storage = PosixStorage(root)
    with pytest.raises(ValueError, match="invalid storage key"):
        storage.put(key, [b"x"])
    with pytest.raises(ValueError):
        storage.get(key)


def test_a_key_cannot_also_be_a_directory(root: Path) -> None:
    storage = PosixStorage(root)
    storage.put("a/b", [b"1"])
    with pytest.raises(StorageError):
        storage.put("a", [b"2"])
    with pytest.raises(StorageError):
        storage.put("a", [b"2"], if_absent=True)
    storage.put("f", [b"1"])
    with pytest.raises(StorageError):
        storage.put("f/below", [b"2"])
    assert leftovers(root) == []


def test_get_of_a_directory_is_object_not_found(root: Path) -> None:
    storage = PosixStorage(root)
    storage.put("a/b", [b"1"])
    with pytest.raises(ObjectNotFound):
        storage.get("a")


def test_permission_denied_is_access_denied(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated: the tests may run as root, for whom no mode bit denies anything.
    real_open = os.open

    def refuse_temp_files(path: Any, *args: Any, **kwargs: Any) -> int:
        if Path(path).name.startswith(".tmp-"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse_temp_files)
    with pytest.raises(AccessDenied, match="writable by the user"):
        PosixStorage(root).put("k", [b"x"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_unreadable_repository_is_access_denied(root: Path) -> None:
    storage = PosixStorage(root)
    storage.put("d/k", [b"x"])
    (root / "d").chmod(0)
    try:
        with pytest.raises(AccessDenied):
            storage.get("d/k")
        with pytest.raises(AccessDenied):
            storage.put("d/other", [b"x"])
    finally:
        (root / "d").chmod(0o750)
