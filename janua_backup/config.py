"""Settings: loaded once from the TOML file, then the environment, then flags.

Owns the frozen ``Settings`` tree and its validation; everything below the CLI
receives a slice of it and never reads the environment itself. Must not
import anything of janua_backup except ``errors``.

Why a config file matters: ``archive_command`` and ``restore_command`` run in
PostgreSQL's environment, not the operator's shell, so everything they need
(repository, endpoint, credentials, key) must be reachable from the file named
in the command string (``janua-backup --config FILE wal-push %p``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from janua_backup.errors import ConfigError

CODECS = ("none", "gzip", "zstd")


@dataclass(frozen=True, slots=True)
class RepoSettings:
    url: str = ""  # s3://bucket/prefix or file:///path

    @property
    def scheme(self) -> str:
        return urlparse(self.url).scheme


@dataclass(frozen=True, slots=True)
class S3Settings:
    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    path_style: bool = True
    verify_tls: bool = True
    ca_bundle: str | None = None
    retry_deadline_s: float = 60.0


@dataclass(frozen=True, slots=True)
class CompressionSettings:
    codec: str = "gzip"
    level: int = 0  # 0: the codec's default (gzip 6, zstd 3)


@dataclass(frozen=True, slots=True)
class EncryptionSettings:
    key_file: str | None = None
    passphrase_env: str | None = None  # name of the variable holding the passphrase
    passphrase: str | None = field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        return bool(self.key_file or self.passphrase or self.passphrase_env)


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    pgdata: str | None = None
    dsn: str | None = field(default=None, repr=False)
    bindir: str | None = None


@dataclass(frozen=True, slots=True)
class BackupSettings:
    jobs: int = 0  # 0: one per core
    bundle_limit_bytes: int = 1024 * 1024  # files smaller than this are bundled
    bundle_size_bytes: int = 32 * 1024 * 1024
    # Bigger files are stored in parts of this size: small enough that a 1 GiB relation
    # segment (PostgreSQL's largest file) spreads over every job, big enough that the
    # cost per object (a request, a header, a manifest line) stays small.
    part_size_bytes: int = 64 * 1024 * 1024
    archive_timeout_s: float = 300.0  # wait for the stop segment to be archived


@dataclass(frozen=True, slots=True)
class WalSettings:
    fetch_retry_deadline_s: float = 60.0
    # Local spool for async push status and prefetched segments; default: pg_wal/.janua-spool
    # (same filesystem as pg_wal, so a prefetched segment is handed over by rename).
    spool_dir: str | None = None
    archive_async: bool = False  # push ready segments ahead of the archiver, several at once
    async_jobs: int = 0  # parallel uploads of the async worker; 0: one per core
    async_max_segments: int = 256  # ready segments one worker run takes on at most
    prefetch_segments: int = 8  # wal-fetch fetches this many following segments ahead; 0: off


@dataclass(frozen=True, slots=True)
class Settings:
    repository: RepoSettings = RepoSettings()
    s3: S3Settings = S3Settings()
    compression: CompressionSettings = CompressionSettings()
    encryption: EncryptionSettings = EncryptionSettings()
    postgres: PostgresSettings = PostgresSettings()
    backup: BackupSettings = BackupSettings()
    wal: WalSettings = WalSettings()
    config_path: str | None = None  # absolute, for restore_command

    def require_repo(self) -> RepoSettings:
        if not self.repository.url:
            raise ConfigError(
                "no repository configured; set repository.url in the config file, "
                "JANUA_BACKUP_REPO, or --repo (s3://bucket/prefix or file:///path)"
            )
        return self.repository


_SECTIONS: dict[str, type[Any]] = {
    "repository": RepoSettings,
    "s3": S3Settings,
    "compression": CompressionSettings,
    "encryption": EncryptionSettings,
    "postgres": PostgresSettings,
    "backup": BackupSettings,
    "wal": WalSettings,
}

# Environment variable -> (section, key). AWS_* and libpq's PG* follow their tools' names.
ENV_VARS: dict[str, tuple[str, str]] = {
    "JANUA_BACKUP_REPO": ("repository", "url"),
    "JANUA_BACKUP_S3_ENDPOINT": ("s3", "endpoint"),
    "JANUA_BACKUP_S3_REGION": ("s3", "region"),
    "AWS_ACCESS_KEY_ID": ("s3", "access_key_id"),
    "AWS_SECRET_ACCESS_KEY": ("s3", "secret_access_key"),
    "AWS_SESSION_TOKEN": ("s3", "session_token"),
    "JANUA_BACKUP_COMPRESSION": ("compression", "codec"),
    "JANUA_BACKUP_COMPRESSION_LEVEL": ("compression", "level"),
    "JANUA_BACKUP_ENCRYPTION_KEY_FILE": ("encryption", "key_file"),
    "JANUA_BACKUP_PASSPHRASE": ("encryption", "passphrase"),
    "PGDATA": ("postgres", "pgdata"),
    "JANUA_BACKUP_DSN": ("postgres", "dsn"),
    "JANUA_BACKUP_PG_BINDIR": ("postgres", "bindir"),
    "JANUA_BACKUP_JOBS": ("backup", "jobs"),
    "JANUA_BACKUP_ARCHIVE_ASYNC": ("wal", "archive_async"),
    "JANUA_BACKUP_SPOOL_DIR": ("wal", "spool_dir"),
}


def load(
    config_path: str | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, Mapping[str, object]] | None = None,
) -> Settings:
    """File, then environment, then flags (``overrides``: section -> key -> value)."""
    path = config_path or environ.get("JANUA_BACKUP_CONFIG")
    raw: dict[str, dict[str, object]] = {name: {} for name in _SECTIONS}
    abs_path: str | None = None
    if path:
        abs_path = str(Path(path).resolve())
        for section, values in _read_file(Path(path)).items():
            raw[section].update(values)
    for var, (section, key) in ENV_VARS.items():
        if environ.get(var):
            raw[section][key] = environ[var]
    passphrase_env = raw["encryption"].get("passphrase_env")
    if isinstance(passphrase_env, str) and environ.get(passphrase_env):
        raw["encryption"]["passphrase"] = environ[passphrase_env]
    for section, flags in (overrides or {}).items():
        raw[section].update({k: v for k, v in flags.items() if v is not None})
    built = {name: _build(name, cls, raw[name]) for name, cls in _SECTIONS.items()}
    settings = Settings(config_path=abs_path, **built)
    _validate(settings)
    return settings


def _read_file(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    result: dict[str, dict[str, object]] = {}
    for section, values in data.items():
        if section not in _SECTIONS:
            known = ", ".join(_SECTIONS)
            raise ConfigError(f"{path}: unknown section [{section}] (known: {known})")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        result[section] = values
    return result


def _build(section: str, cls: type[Any], values: dict[str, object]) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, object] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(
                f"unknown setting {section}.{key} (known: {', '.join(sorted(known))})"
            )
        kwargs[key] = _coerce(section, key, value, cls().__getattribute__(key))
    return cls(**kwargs)


def _coerce(section: str, key: str, value: object, default: object) -> object:
    """Environment values arrive as strings; coerce them to the field's type."""
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if isinstance(default, int) and not isinstance(value, bool):
            return int(value)  # type: ignore[call-overload]
        if isinstance(default, float):
            return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{section}.{key} must be a number, not {value!r}") from None
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{section}.{key} must be a string, not {value!r}")
    return value


def _validate(settings: Settings) -> None:
    url = settings.repository.url
    if url:
        parsed = urlparse(url)
        if parsed.scheme not in ("s3", "file"):
            raise ConfigError(
                f"repository.url {url!r} must start with s3:// or file:// "
                "(e.g. s3://bucket/prefix or file:///var/backups/pg)"
            )
        if parsed.scheme == "s3" and not parsed.netloc:
            raise ConfigError(f"repository.url {url!r} names no bucket (s3://bucket/prefix)")
        if parsed.scheme == "file" and not parsed.path.startswith("/"):
            raise ConfigError(f"repository.url {url!r} must be an absolute path (file:///path)")
    codec = settings.compression.codec
    if codec not in CODECS:
        raise ConfigError(f"compression.codec {codec!r} must be one of {', '.join(CODECS)}")
    if settings.backup.jobs < 0:
        raise ConfigError("backup.jobs must be 0 (one per core) or more")
    if settings.backup.part_size_bytes < 1024 * 1024:
        raise ConfigError("backup.part_size_bytes must be at least 1048576 (1 MiB)")
    wal = settings.wal
    if wal.async_jobs < 0 or wal.async_max_segments < 1 or wal.prefetch_segments < 0:
        raise ConfigError(
            "wal.async_jobs and wal.prefetch_segments must be 0 or more, "
            "wal.async_max_segments 1 or more"
        )
    enc = settings.encryption
    if enc.key_file and enc.passphrase:
        raise ConfigError("set either encryption.key_file or a passphrase, not both")
    if enc.passphrase_env and not enc.passphrase and not enc.key_file:
        raise ConfigError(
            f"encryption.passphrase_env names {enc.passphrase_env}, but that variable is "
            "empty or unset in this environment"
        )


def with_compression(settings: Settings, codec: str | None, level: int | None) -> Settings:
    """Apply ``--compression``/``--level`` flags, defaulting the level to the codec's."""
    if codec is None and level is None:
        return settings
    new_codec = codec or settings.compression.codec
    new_level = level if level is not None else 0
    comp = CompressionSettings(codec=new_codec, level=new_level)
    result = replace(settings, compression=comp)
    _validate(result)
    return result
