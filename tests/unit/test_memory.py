"""The allocator settings apply on glibc (the platform janua-backup ships for)."""

from __future__ import annotations

import platform

from janua_backup.memory import bound_allocator


def test_bound_allocator_applies_on_glibc() -> None:
    assert bound_allocator() is (platform.libc_ver()[0] == "glibc")
