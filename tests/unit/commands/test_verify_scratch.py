"""Where a drill restores by default: on disk, and a warning when a tmpfs cannot hold it."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from janua_backup.commands import verify


def test_the_default_scratch_directory_is_on_disk_not_the_temp_dir() -> None:
    home = verify._scratch_home(None)
    try:
        assert home.parent == Path("/var/tmp")
        assert verify._tmpfs_mount(home) is None or Path("/var/tmp").is_mount()
    finally:
        shutil.rmtree(home)


def test_a_given_scratch_directory_is_used(tmp_path: Path) -> None:
    home = verify._scratch_home(tmp_path)
    assert home.parent == tmp_path


@pytest.mark.skipif(
    verify._tmpfs_mount(Path("/dev/shm")) is None, reason="/dev/shm is not a tmpfs here"
)
def test_a_restore_bigger_than_memory_on_a_tmpfs_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    available = verify._memory_available_bytes()
    assert available is not None
    with caplog.at_level(logging.WARNING):
        verify._warn_if_in_memory(Path("/dev/shm"), available // 2)
        assert caplog.records == []
        verify._warn_if_in_memory(Path("/dev/shm"), available * 2)
    (record,) = caplog.records
    assert "tmpfs" in record.getMessage() and "--scratch-dir" in record.getMessage()


def test_a_disk_directory_is_never_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if verify._tmpfs_mount(tmp_path) is not None:
        pytest.skip("the test's tmp_path is on a tmpfs here")
    with caplog.at_level(logging.WARNING):
        verify._warn_if_in_memory(tmp_path, 10**18)
    assert caplog.records == []
