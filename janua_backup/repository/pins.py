"""Pinned backups: retention never expires a backup that has a pin object.

A pin is an object of its own (``pins/<id>``), not a field of the manifest,
because the manifest is written once and never changed: pinning and
unpinning must not rewrite the object that makes a backup exist.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from janua_backup.errors import ObjectNotFound
from janua_backup.repository import catalog, layout
from janua_backup.repository.objects import Repo


def pin(repo: Repo, backup_id: str, reason: str = "") -> None:
    catalog.load(repo, backup_id)  # refuses an unknown id with the list hint
    body = {"backup_id": backup_id, "pinned_at": datetime.now(UTC).isoformat(), "reason": reason}
    repo.put_bytes(layout.pin_key(backup_id), json.dumps(body).encode())


def unpin(repo: Repo, backup_id: str) -> bool:
    """False when the backup was not pinned."""
    key = layout.pin_key(backup_id)
    if repo.storage.head(key) is None:
        return False
    repo.storage.delete([key])
    return True


def pinned(repo: Repo) -> set[str]:
    return {i.key[len(layout.PINS_PREFIX) :] for i in repo.storage.list(layout.PINS_PREFIX)}


def reason(repo: Repo, backup_id: str) -> str | None:
    try:
        data = json.loads(repo.get_bytes(layout.pin_key(backup_id)))
    except ObjectNotFound:
        return None
    return str(data.get("reason", ""))
