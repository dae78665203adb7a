"""What every command needs: the repository handle built from settings.

Commands build the storage driver and pass it down; nothing below reads
settings it was not handed. The S3 driver (and boto3) is imported only when
the repository is on S3.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from janua_backup.config import EncryptionSettings, Settings
from janua_backup.errors import ConfigError
from janua_backup.pg.command_line import check_fits, escape
from janua_backup.pipeline.crypto import Key, Passphrase, key_from_file
from janua_backup.pipeline.stream import EncodeSpec
from janua_backup.repository.objects import Repo
from janua_backup.storage.base import Storage


def open_storage(
    settings: Settings, *, quick_start: bool = False, part_size_bytes: int | None = None
) -> Storage:
    """The repository's storage; ``quick_start`` for commands whose start-up counts.

    ``quick_start`` lets the S3 driver skip boto3 where its standard-library
    client gives the same answers (``storage/s3_wire.py``): PostgreSQL starts
    wal-push and wal-fetch once per file, so start-up is archive latency, and a
    restore's start-up is downtime. ``part_size_bytes``: S3 objects up to this size
    are stored with one PUT (default: the driver's part size).
    """
    url = settings.require_repo().location()
    if url.scheme == "file":
        from janua_backup.storage.posix import PosixStorage

        return PosixStorage(Path(url.path))
    from janua_backup.storage.s3 import S3Location, S3Storage

    s3 = settings.s3
    verify: bool | str = s3.ca_bundle or s3.verify_tls
    location = S3Location(
        bucket=url.bucket,
        prefix=url.prefix,
        endpoint_url=s3.endpoint,
        region=s3.region,
        access_key_id=s3.access_key_id,
        secret_access_key=s3.secret_access_key,
        session_token=s3.session_token,
        # Unset: path-style for an S3-compatible endpoint, virtual-hosted on AWS.
        path_style=s3.endpoint is not None if s3.path_style is None else s3.path_style,
        profile=s3.profile,
        verify_tls=verify,
        retry_deadline_s=s3.retry_deadline_s,
        quick_start=quick_start,
    )
    if part_size_bytes is not None:
        location = replace(location, part_size_bytes=part_size_bytes)
    return S3Storage(location)


def load_key(enc: EncryptionSettings) -> Key | Passphrase | None:
    """The key file's key, or the passphrase: its key depends on the repository's
    salt and is derived once the marker is read (``repository.objects.Repo``)."""
    if enc.key_file:
        return key_from_file(Path(enc.key_file))
    if enc.passphrase:
        return Passphrase(enc.passphrase)
    if enc.passphrase_env:
        raise ConfigError(f"encryption.passphrase_env names {enc.passphrase_env}, which is not set")
    return None


def open_repo(
    settings: Settings,
    *,
    quick_start: bool = False,
    threads: int = 1,
    part_size_bytes: int | None = None,
) -> Repo:
    """The repository; ``threads`` compress each object (one at a time) on that many
    threads; ``quick_start`` and ``part_size_bytes`` as for ``open_storage``."""
    comp = settings.compression
    key = load_key(settings.encryption)
    spec = EncodeSpec(codec=comp.codec, level=comp.level or None, key=key, threads=threads)
    storage = open_storage(settings, quick_start=quick_start, part_size_bytes=part_size_bytes)
    return Repo(storage=storage, spec=spec)


def jobs(settings: Settings) -> int:
    return settings.backup.jobs or os.cpu_count() or 1


def invocation(settings: Settings) -> str:
    """This program with this config file, as PostgreSQL runs it from a command line:
    quoted for sh, and every ``%`` doubled (PostgreSQL would expand ``%p`` in a path)."""
    import shlex
    import shutil
    import sys

    exe = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).name == "janua-backup" else None
    if exe is None or not exe.exists():
        found = shutil.which("janua-backup")
        exe = Path(found) if found else None
    program = shlex.quote(str(exe)) if exe else f"{sys.executable} -m janua_backup"
    config = f" --config {shlex.quote(settings.config_path)}" if settings.config_path else ""
    return escape(program + config)


def archive_command(settings: Settings) -> str:
    """The ``archive_command`` for this config: ``wal-push %p``, after the shell
    hand-over of ``spool`` when pushes are asynchronous.

    ``ConfigError`` if PostgreSQL could cut it short (``pg.command_line``).
    """
    command = f"{invocation(settings)} wal-push %p"
    if settings.wal.archive_async:
        from janua_backup.spool import shell_hand_over

        command = shell_hand_over(settings.wal.spool_dir) + command
    check_fits("archive_command", command)
    return command
