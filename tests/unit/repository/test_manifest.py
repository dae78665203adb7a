from __future__ import annotations

import pytest

from janua_backup.errors import FormatError
from janua_backup.repository.manifest import from_json, to_json
from tests.unit.repository.helpers import manifest


def test_manifest_round_trips_through_json() -> None:
    m = manifest()
    assert from_json(to_json(m)) == m
    assert m.original_size_bytes == 3 and m.stored_size_bytes == 40
    assert m.object("data/000001").plain_size_bytes == 3


def test_manifest_refuses_malformed_and_newer_formats() -> None:
    with pytest.raises(FormatError):
        from_json(b'{"backup_id": "x"}')
    raw = to_json(manifest()).replace(b'"format_version":1', b'"format_version":99')
    with pytest.raises(FormatError, match="newer"):
        from_json(raw)
    with pytest.raises(FormatError):
        manifest().object("data/999999")
