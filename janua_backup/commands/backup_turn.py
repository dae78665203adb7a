"""The daemon's backup turn on a cluster with a daemon on every node: one backup per turn.

Every node's daemon fires at the same times (``daemon.turns``), and each one
whose role the policy allows runs this. The repository lock settles the race,
and its loser waits for it rather than failing: the winner may still fail, and
then the loser's backup is the turn's. Once the lock is held, a committed
backup that started at or after the turn's fire time is this turn's backup: a
loser that arrives after the winner released the lock finds it there and takes
no second one.

Imports ``commands.backup``, ``locks`` and ``repository``; nothing of the daemon.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from datetime import datetime

from janua_backup import locks
from janua_backup.commands import backup
from janua_backup.commands.backup import LOCK_NAME, BackupResult
from janua_backup.commands.common import open_repo
from janua_backup.config import Settings
from janua_backup.errors import BackupError, InputError, LockHeld
from janua_backup.repository import catalog
from janua_backup.repository.manifest import Manifest
from janua_backup.repository.objects import Repo

log = logging.getLogger(__name__)

LOCK_POLL_S = 2.0  # waiting for another node's backup: one listing every 2 s


def run(
    settings: Settings,
    due: datetime,
    *,
    cancel: threading.Event,
    backup_type: str = "full",
    poll_s: float = LOCK_POLL_S,
) -> BackupResult | Manifest:
    """The backup of the turn that fell due at ``due``, or the manifest of the one
    another node took for it; ``cancel`` stops the wait or the backup."""
    if backup_type not in backup.BACKUP_TYPES:
        choices = ", ".join(backup.BACKUP_TYPES)
        raise InputError(f"backup type {backup_type!r} is not one of {choices}")
    repo = open_repo(settings, quick_start=True)
    with _hold_waiting(repo, cancel, poll_s) as lock:
        taken = started_since(repo, due)
        if taken is not None:
            return taken
        return backup.locked(settings, repo, lock, cancel=cancel, backup_type=backup_type)


def started_since(repo: Repo, due: datetime) -> Manifest | None:
    """The newest committed backup if it started at or after ``due``, else ``None``.

    Backup ids grow with their start, so the newest id is the newest start.
    """
    done, _ = catalog.backup_ids(repo)
    if not done:
        return None
    newest = catalog.load(repo, done[-1])
    return newest if newest.start_time >= due else None


@contextlib.contextmanager
def _hold_waiting(repo: Repo, cancel: threading.Event, poll_s: float) -> Iterator[locks.LockHandle]:
    """The cluster lock, waiting while another process holds it; ``cancel`` stops the wait."""
    waiting = False
    while True:
        try:
            handle = locks.acquire(repo.storage, LOCK_NAME, purpose="backup")
            break
        except LockHeld as exc:
            if not waiting:
                waiting = True
                log.info("backup waits for the repository lock: %s", exc.message)
        if cancel.wait(poll_s):
            raise BackupError("backup cancelled while waiting for the repository lock")
    try:
        yield handle
    finally:
        handle.release()
