"""Settings: loaded once from the TOML file, then the environment, then flags.

Owns the frozen ``Settings`` tree and its validation; everything below the CLI
receives a slice of it and never reads the environment itself. Must not
import anything of janua_backup except ``errors`` (and, inside the level check,
the codec table of ``pipeline.compress``).

Why a config file matters: ``archive_command`` and ``restore_command`` run in
PostgreSQL's environment, not the operator's shell, so everything they need
(repository, endpoint, credentials, key) must be reachable from the file named
in the command string (``janua-backup --config FILE wal-push %p``).

That file, and a key file, then hold secrets: they are refused when group or
others can read them (``[security] allow_readable_secrets`` overrides that, with
a warning on every run), and no error message ever repeats a setting's value.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from janua_backup.errors import ConfigError

CODECS = ("none", "gzip", "zstd")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RepoSettings:
    url: str = ""  # s3://bucket/prefix or file:///path

    @property
    def scheme(self) -> str:
        return urlparse(self.url).scheme

    def location(self) -> RepoUrl:
        """The URL taken apart by the one set of rules (``parse_repo_url``)."""
        return parse_repo_url(self.url)


@dataclass(frozen=True, slots=True)
class RepoUrl:
    """A repository URL taken apart: ``file`` with ``path``, or ``s3`` with bucket and prefix."""

    scheme: str  # "s3" or "file"
    bucket: str = ""  # s3 only
    prefix: str = ""  # s3 only: "" or "a/b" (no empty parts, no leading or trailing slash)
    path: str = ""  # file only: absolute, percent-decoded

    @property
    def canonical(self) -> str:
        """The one spelling of this location (for comparing two URLs)."""
        if self.scheme == "file":
            return f"file://{os.path.normpath(self.path)}"
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_repo_url(url: str) -> RepoUrl:
    """The one reading of ``repository.url``; every place that needs its parts calls this.

    ``file://relative/path`` is refused rather than read as ``/path`` (urllib takes
    ``relative`` for a host name). In an S3 prefix, one leading or trailing slash is
    dropped (``s3://bucket/prefix/`` is a common spelling), but an empty part
    (``a//b``) or a ``.``/``..`` part is refused rather than normalised: S3 keys are
    literal, some servers collapse ``//`` and others do not, so a segment pushed
    under ``a//b`` can be invisible to a ``list`` of the same URL; and silently moving
    an existing repository to another prefix would hide its objects.
    """
    from urllib.parse import unquote

    examples = "s3://bucket/prefix or file:///var/backups/pg"
    parsed = urlparse(url)
    if parsed.scheme not in ("s3", "file"):
        raise ConfigError(f"repository.url {url!r} must start with s3:// or file:// ({examples})")
    if parsed.query or parsed.fragment or url.endswith(("?", "#")):
        raise ConfigError(
            f"repository.url {url!r} contains '?' or '#'; write them as %3F and %23 ({examples})"
        )
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(
                f"repository.url {url!r} is not an absolute path: file:// is followed by the "
                "path's own slash, as in file:///abs/path"
            )
        path = unquote(parsed.path)
        if not path.startswith("/"):
            raise ConfigError(f"repository.url {url!r} must be an absolute path (file:///path)")
        return RepoUrl("file", path=path)
    if not parsed.netloc:
        raise ConfigError(f"repository.url {url!r} names no bucket (s3://bucket/prefix)")
    prefix = parsed.path.removeprefix("/").removesuffix("/")
    parts = prefix.split("/") if prefix else []
    if any(part in ("", ".", "..") for part in parts):
        raise ConfigError(
            f"repository.url {url!r} has an empty, '.' or '..' part in its prefix; S3 keys are "
            "literal, so write the prefix with single slashes, as in s3://bucket/a/b"
        )
    return RepoUrl("s3", bucket=parsed.netloc, prefix=prefix)


@dataclass(frozen=True, slots=True)
class S3Settings:
    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    path_style: bool | None = None  # None: path-style when an endpoint is set, else virtual-hosted
    profile: str | None = None  # AWS profile (~/.aws of the user running janua-backup)
    verify_tls: bool = True
    ca_bundle: str | None = None
    retry_deadline_s: float = 60.0


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    # True: accept a config or key file holding secrets that group or others can read
    # (a shared read-only mount, say); each run then logs a warning naming the file.
    allow_readable_secrets: bool = False


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
    # A backup from a standby asks the primary for pg_switch_wal() here, so that its stop
    # segment is archived at once; without it the backup waits for the primary's
    # archive_timeout (or enough writes) to close that segment.
    primary_dsn: str | None = field(default=None, repr=False)


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
    security: SecuritySettings = SecuritySettings()
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
    "security": SecuritySettings,
}

# Settings that are secrets: a file holding one must be private, and no message shows them.
SECRET_KEYS = frozenset(
    {("s3", "secret_access_key"), ("s3", "session_token"), ("encryption", "passphrase")}
)
# A libpq DSN with a password in it ("password=..." or "postgresql://user:pw@host").
_DSN_PASSWORD = re.compile(r"password\s*=|://[^/@:]*:[^/@]*@", re.IGNORECASE)

# The allowed range of each numeric setting, and why its ends are there.
_BOUNDS: dict[tuple[str, str], tuple[int, int, str]] = {
    # 0 gives up at once; past an hour, a stuck call should fail and be seen
    # (PostgreSQL retries archive_command and restore_command itself).
    ("s3", "retry_deadline_s"): (0, 3600, "seconds"),
    ("wal", "fetch_retry_deadline_s"): (0, 3600, "seconds"),
    # Each job holds a thread, a connection and its buffers: past 1024, file
    # descriptors and memory run out long before throughput grows. 0: one per core.
    ("backup", "jobs"): (0, 1024, "0 is one per core"),
    ("wal", "async_jobs"): (0, 1024, "0 is one per core"),
    # 1 GiB is PostgreSQL's largest file: a larger limit bundles every file.
    ("backup", "bundle_limit_bytes"): (0, 1 << 30, "bytes"),
    # A bundle is one object: at least 1 MiB or the cost per request dominates, at
    # most 5 GiB, what S3 stores with one PUT or part.
    ("backup", "bundle_size_bytes"): (1 << 20, 5 << 30, "bytes"),
    ("backup", "part_size_bytes"): (1 << 20, 5 << 30, "bytes"),
    # A stop segment that takes over a day to archive means archiving is broken.
    ("backup", "archive_timeout_s"): (1, 86400, "seconds"),
    # Status files in the spool; more than this is a backlog to report, not to take on.
    ("wal", "async_max_segments"): (1, 100_000, "segments"),
    # Prefetched segments sit in pg_wal's file system: 256 of 16 MiB is 4 GiB already.
    ("wal", "prefetch_segments"): (0, 256, "0 is off"),
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
    "JANUA_BACKUP_PRIMARY_DSN": ("postgres", "primary_dsn"),
    "JANUA_BACKUP_PG_BINDIR": ("postgres", "bindir"),
    "JANUA_BACKUP_JOBS": ("backup", "jobs"),
    "JANUA_BACKUP_ARCHIVE_ASYNC": ("wal", "archive_async"),
    "JANUA_BACKUP_SPOOL_DIR": ("wal", "spool_dir"),
    "JANUA_BACKUP_ALLOW_READABLE_SECRETS": ("security", "allow_readable_secrets"),
}

# boto3's own variables, used only where nothing else (file, JANUA_BACKUP_*, flags) set
# the key, as boto3 does; read here so the defaults that depend on them (path style,
# the quick client) see them. The first one set wins.
AWS_FALLBACKS: dict[tuple[str, str], tuple[str, ...]] = {
    ("s3", "endpoint"): ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    ("s3", "profile"): ("AWS_PROFILE",),
}

# Generic variables of the user's shell, not janua-backup's: the config file names its
# cluster on purpose, so a PGDATA left in the shell fills a gap but never switches the
# cluster the file names (check said ok while backup read another cluster).
FILE_WINS_OVER: frozenset[str] = frozenset({"PGDATA"})


def load(
    config_path: str | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, Mapping[str, object]] | None = None,
) -> Settings:
    """File, then environment, then flags (``overrides``: section -> key -> value).

    Except the variables in ``FILE_WINS_OVER``: the file wins over those."""
    path = config_path or environ.get("JANUA_BACKUP_CONFIG")
    raw: dict[str, dict[str, object]] = {name: {} for name in _SECTIONS}
    abs_path: str | None = None
    from_file: dict[str, dict[str, object]] = {}
    if path:
        abs_path = str(Path(path).resolve())
        from_file = _read_file(Path(path))
        for section, values in from_file.items():
            raw[section].update(values)
    for var, (section, key) in ENV_VARS.items():
        if var in FILE_WINS_OVER and from_file.get(section, {}).get(key) is not None:
            continue
        if environ.get(var):
            raw[section][key] = environ[var]
    passphrase_env = raw["encryption"].get("passphrase_env")
    if isinstance(passphrase_env, str) and environ.get(passphrase_env):
        raw["encryption"]["passphrase"] = environ[passphrase_env]
    for section, flags in (overrides or {}).items():
        raw[section].update({k: v for k, v in flags.items() if v is not None})
    for (section, key), names in AWS_FALLBACKS.items():
        given = next((environ[name] for name in names if environ.get(name)), None)
        if raw[section].get(key) in (None, "") and given is not None:
            raw[section][key] = given
    built = {name: _build(name, cls, raw[name]) for name, cls in _SECTIONS.items()}
    settings = Settings(config_path=abs_path, **built)
    _validate(settings)
    if path:
        _check_private(Path(path), _secrets_in(from_file), settings)
    if settings.encryption.key_file:
        _check_private(Path(settings.encryption.key_file), ["the encryption key"], settings)
    return settings


def _secrets_in(values: Mapping[str, Mapping[str, object]]) -> list[str]:
    """The secret settings a config file holds inline."""
    found = [
        f"{section}.{key}"
        for section, key in sorted(SECRET_KEYS)
        if values.get(section, {}).get(key) not in (None, "")
    ]
    for key in ("dsn", "primary_dsn"):
        dsn = values.get("postgres", {}).get(key)
        if isinstance(dsn, str) and _DSN_PASSWORD.search(dsn):
            found.append(f"postgres.{key} (with a password)")
    return found


_warned_readable: set[str] = set()


def _check_private(path: Path, secrets: list[str], settings: Settings) -> None:
    """Refuse a file holding ``secrets`` that group or others can read.

    A missing or unreadable file is left to whoever reads it (it says so better).
    """
    if not secrets:
        return
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if not mode & 0o044:
        return
    what = f"{path} holds {', '.join(secrets)} but is readable by group or others (mode {mode:04o})"
    if not settings.security.allow_readable_secrets:
        raise ConfigError(
            f"{what}; run chmod 600 {path} (or set [security] allow_readable_secrets = true)"
        )
    if str(path) not in _warned_readable:  # once per process: Settings are loaded per command
        _warned_readable.add(str(path))
        log.warning("%s; allowed by security.allow_readable_secrets", what)


def _read_file(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from exc
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
    """Environment values arrive as strings; coerce them to the field's type.

    Errors name the key and the type wanted, never the value: it may be a secret, and
    wal-push's errors land in the PostgreSQL log on every retry.
    """
    name = f"{section}.{key}"
    if isinstance(default, bool) or (section, key) in _OPTIONAL_BOOLS:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{name} must be true or false{_not(value)}")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,18}\s*", value):
            return int(value)
        raise ConfigError(f"{name} must be a whole number{_not(value)}")
    if isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{name} must be a number{_not(value)}")
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string{_not(value)}")
    return value


_OPTIONAL_BOOLS = frozenset({("s3", "path_style")})  # None (unset) picks a default later
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _not(value: object) -> str:
    """What a wrong value is, for messages that must not show it: its kind, not itself."""
    if isinstance(value, str):
        return ""
    if isinstance(value, bool):
        return ", not true or false"
    if isinstance(value, int | float):
        return ", not a number"
    if isinstance(value, dict):
        return ", not a table"
    if isinstance(value, list):
        return ", not an array"
    return ", not a date or time"


def _validate(settings: Settings) -> None:
    if settings.repository.url:
        parse_repo_url(settings.repository.url)
    codec = settings.compression.codec
    if codec not in CODECS:
        raise ConfigError(f"compression.codec {codec!r} must be one of {', '.join(CODECS)}")
    _check_level(codec, settings.compression.level)
    for (section, key), (low, high, unit) in _BOUNDS.items():
        value = getattr(getattr(settings, section), key)
        if not (math.isfinite(value) and low <= value <= high):
            raise ConfigError(f"{section}.{key} must be between {low} and {high} ({unit})")
    enc = settings.encryption
    if enc.key_file and enc.passphrase:
        raise ConfigError("set either encryption.key_file or a passphrase, not both")
    if enc.passphrase_env and not enc.passphrase and not enc.key_file:
        raise ConfigError(
            f"encryption.passphrase_env names {enc.passphrase_env}, but that variable is "
            "empty or unset in this environment"
        )


def _check_level(codec: str, level: int) -> None:
    """0 is the codec's default; otherwise the codec's own range."""
    from janua_backup.pipeline.compress import LEVEL_RANGES  # the one codec table

    if level == 0:
        return
    if codec == "none":
        raise ConfigError("compression.level must be 0 when compression.codec is 'none'")
    low, high = LEVEL_RANGES[codec]
    if not low <= level <= high:
        raise ConfigError(
            f"compression.level must be 0 (the codec's default) or between {low} and {high} "
            f"for {codec}"
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
