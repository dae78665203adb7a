"""``pin`` and ``unpin``: keep a backup whatever the retention policy says."""

from __future__ import annotations

import logging

from janua_backup.commands.common import open_repo
from janua_backup.config import Settings
from janua_backup.repository import marker, pins

log = logging.getLogger(__name__)


def pin(settings: Settings, backup_id: str, reason: str = "") -> None:
    repo = open_repo(settings)
    found = marker.read(repo)
    if found is not None:
        marker.check_key(repo, found)
    pins.pin(repo, backup_id, reason)
    log.info("pinned backup_id=%s", backup_id)


def unpin(settings: Settings, backup_id: str) -> bool:
    removed = pins.unpin(open_repo(settings), backup_id)
    log.info("unpinned backup_id=%s was_pinned=%s", backup_id, removed)
    return removed
