"""The storage contract on ``MemoryStorage``, the driver other unit tests use."""

from __future__ import annotations

import pytest

from janua_backup.storage.memory import MemoryStorage
from tests.unit.storage.contract import StorageContract


class TestMemoryStorage(StorageContract):
    @pytest.fixture
    def storage(self) -> MemoryStorage:
        return MemoryStorage()


def test_describe_names_the_instance() -> None:
    assert MemoryStorage("unit").describe() == "memory://unit"


@pytest.mark.parametrize(
    "key", ["", "/absolute", "nul\x00byte", "a//b", "a/./b", "../up", "dir/.tmp-x", "trailing/"]
)
def test_rejects_keys_no_driver_could_store(key: str) -> None:
    with pytest.raises(ValueError):
        MemoryStorage().put(key, [b"x"])
