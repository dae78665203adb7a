"""Which backups exist: a backup exists exactly when its manifest does.

``commit`` writes the manifest as the last object of a backup, with a
conditional put, so a crash at any earlier point leaves objects without a
manifest: never listed, never restored, and removed by ``clean_incomplete``.

A manifest is believed only under the id it names (``bound``): someone who can
write to the bucket could copy one backup's manifest over another's, and
restore, list and expire would then act on a backup that is not there. Every
reader goes through ``load`` (or ``bound``), so a mismatch is an
``IntegrityError`` everywhere; ``list_backups`` refuses the whole listing, as it
does for a manifest that does not parse, rather than silently drop a backup and
let restore pick an older one or expire count without it (``verify --repository-only``
reports it as a damaged manifest and goes on).
"""

from __future__ import annotations

import logging

from janua_backup.errors import InputError, IntegrityError, ObjectNotFound
from janua_backup.repository import layout
from janua_backup.repository.manifest import Manifest, from_json, to_json
from janua_backup.repository.objects import Repo

log = logging.getLogger(__name__)


def backup_ids(repo: Repo) -> tuple[list[str], list[str]]:
    """(committed ids, incomplete ids), both sorted oldest first."""
    seen: dict[str, bool] = {}
    for info in repo.storage.list(layout.BACKUPS_PREFIX):
        backup_id = layout.backup_id_of(info.key)
        if backup_id is None:
            continue
        if not layout.is_backup_id(backup_id):
            log.warning("ignoring an object outside any backup key=%r", info.key)
            continue
        committed = info.key == layout.manifest_key(backup_id)
        seen[backup_id] = seen.get(backup_id, False) or committed
    done = sorted(i for i, c in seen.items() if c)
    incomplete = sorted(i for i, c in seen.items() if not c)
    return done, incomplete


def load(repo: Repo, backup_id: str) -> Manifest:
    try:
        raw = repo.get_bytes(layout.manifest_key(backup_id))
    except ObjectNotFound:
        raise InputError(
            f"no backup {backup_id} in {repo.describe()}; `janua-backup list` shows the backups"
        ) from None
    return bound(raw, backup_id)


def bound(raw: bytes, backup_id: str) -> Manifest:
    """The manifest stored as ``backups/<backup_id>/manifest``, refused if it names
    another backup (copied over this one, or tampered with)."""
    manifest = from_json(raw)
    if manifest.backup_id != backup_id:
        raise IntegrityError(
            f"the manifest stored as backup {backup_id} names backup {manifest.backup_id[:80]}: "
            "it was copied there or tampered with and is not believed; "
            "`janua-backup verify --repository-only` lists the damage"
        )
    return manifest


def list_backups(repo: Repo) -> list[Manifest]:
    """Every committed backup, oldest first."""
    done, _ = backup_ids(repo)
    return [load(repo, backup_id) for backup_id in done]


def commit(repo: Repo, manifest: Manifest) -> None:
    """The backup's last write: from here on it exists."""
    repo.put_bytes(layout.manifest_key(manifest.backup_id), to_json(manifest), if_absent=True)


def clean_incomplete(repo: Repo, *, keep: str | None = None) -> list[str]:
    """Removes the objects of backups that never committed (a crash or Ctrl-C)."""
    _, incomplete = backup_ids(repo)
    removed = []
    for backup_id in incomplete:
        if backup_id == keep:
            continue
        keys = [i.key for i in repo.storage.list(layout.backup_prefix(backup_id))]
        repo.storage.delete(keys)
        log.info("removed incomplete backup backup_id=%s objects=%d", backup_id, len(keys))
        removed.append(backup_id)
    return removed
