"""Re-reads pause for nothing here: the tests count reads, not time."""

from __future__ import annotations

import pytest

from janua_backup.repository import reread


@pytest.fixture(autouse=True)
def _no_reread_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reread, "BACKOFF_S", (0.0, 0.0))
