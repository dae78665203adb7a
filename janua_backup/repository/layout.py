"""The only place that builds object keys: the repository's shape on storage.

::

    repository.json                 marker: cluster identity, format, encryption key id
    wal/<24-hex name>[.partial]     archived WAL segments
    wal/<TLI>.history               timeline history files
    wal/<segment>.<offset>.backup   backup history files
    backups/<id>/data/<n>           file contents: one big file or a bundle of small ones
    backups/<id>/manifest           written last: a backup without it does not exist
    pins/<id>                       a pinned backup: retention never expires it
    locks/<name>/<seq>              lock generations (locks.py); the highest is the holder
    verify/<id>/<drill id>.json     drill reports, one per verify run of backup <id>

Backup ids sort by time (``20261125T214300Z``), so listings come out in order.
Every id that goes into a key is checked first (``check_backup_id``): an id is
typed by a person (``--backup-id``) or read from a listing someone else may
have written, and ``../`` in it would name a key outside its backup's prefix.
"""

from __future__ import annotations

import re
from datetime import datetime

from janua_backup.errors import InputError

MARKER_KEY = "repository.json"
WAL_PREFIX = "wal/"
BACKUPS_PREFIX = "backups/"
MANIFEST_NAME = "manifest"
FORMAT_VERSION = 1


PINS_PREFIX = "pins/"
LOCKS_PREFIX = "locks/"
VERIFY_PREFIX = "verify/"


def wal_key(name: str) -> str:
    return WAL_PREFIX + name


def wal_name(key: str) -> str:
    return key[len(WAL_PREFIX) :]


_ID = re.compile(r"[0-9A-Za-z_-]{1,128}")


def is_backup_id(text: str) -> bool:
    """Letters, digits, ``-`` and ``_``: what ``new_backup_id`` makes, and nothing
    that could leave a prefix (``/``, ``..``) or surprise a shell or a listing."""
    return _ID.fullmatch(text) is not None


def check_backup_id(backup_id: str) -> str:
    if not is_backup_id(backup_id):
        raise InputError(
            f"{backup_id[:80]!r} is not a backup id (letters, digits, '-' and '_', like "
            "20261125T214300Z); `janua-backup list` shows the backups"
        )
    return backup_id


def backup_prefix(backup_id: str) -> str:
    return f"{BACKUPS_PREFIX}{check_backup_id(backup_id)}/"


def manifest_key(backup_id: str) -> str:
    return backup_prefix(backup_id) + MANIFEST_NAME


def data_name(number: int) -> str:
    return f"data/{number:06d}"


def data_key(backup_id: str, name: str) -> str:
    return backup_prefix(backup_id) + name


def backup_id_of(key: str) -> str | None:
    """``backups/<id>/...`` -> ``<id>``; other keys -> None."""
    if not key.startswith(BACKUPS_PREFIX):
        return None
    rest = key[len(BACKUPS_PREFIX) :]
    backup_id, sep, _ = rest.partition("/")
    return backup_id if sep else None


def new_backup_id(start: datetime) -> str:
    return start.strftime("%Y%m%dT%H%M%SZ")


def pin_key(backup_id: str) -> str:
    return PINS_PREFIX + check_backup_id(backup_id)


def lock_prefix(name: str) -> str:
    return f"{LOCKS_PREFIX}{name}/"


def lock_key(name: str, seq: int) -> str:
    """Zero-padded so listings sort by generation."""
    return f"{lock_prefix(name)}{seq:012d}"


def drill_prefix(backup_id: str) -> str:
    return f"{VERIFY_PREFIX}{check_backup_id(backup_id)}/"


def drill_key(backup_id: str, drill_id: str) -> str:
    return f"{drill_prefix(backup_id)}{check_backup_id(drill_id)}.json"
