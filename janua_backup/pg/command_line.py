"""The command lines PostgreSQL runs (``archive_command``, ``restore_command``): ``%`` and length.

PostgreSQL replaces ``%p`` and ``%f`` (and ``%r`` in ``restore_command``) and
turns ``%%`` into ``%``; any other ``%`` stays as it is. So every path written
into such a line must have its ``%`` doubled (``escape``), or a config file
named ``50%p.toml`` becomes another file once PostgreSQL expands it.

PostgreSQL 15 expands ``archive_command`` into a MAXPGPATH (1024-byte) buffer
and silently drops what does not fit: the shell then gets a line cut in half
("sh: Syntax error") and every archive attempt fails while WAL piles up in
``pg_wal``. (``restore_command`` is built in a growing buffer since 13, but
older servers and tools had the same buffer: one limit for both.) ``check_fits``
computes the longest expansion PostgreSQL can make of a line and refuses one
that could exceed the buffer.

Nothing of storage, pipeline or psycopg.
"""

from __future__ import annotations

from typing import Literal

from janua_backup.errors import ConfigError

Setting = Literal["archive_command", "restore_command"]

MAXPGPATH = 1024
LIMIT_BYTES = MAXPGPATH - 1  # the buffer ends with a NUL
# %f at its longest: a backup history file (a segment name is 24 characters).
LONGEST_NAME = "000000010000000000000001.00000028.backup"
# %p: the archiver passes pg_wal/<name>; recovery asks for pg_wal/RECOVERYXLOG or,
# for a timeline history file, the longer pg_wal/RECOVERYHISTORY.
ARCHIVE_PATH = "pg_wal/" + LONGEST_NAME
RESTORE_PATH = "pg_wal/RECOVERYHISTORY"
RESTART_NAME = "000000010000000000000001"  # %r: a segment name


def escape(text: str) -> str:
    """``text`` as it must appear in the line for PostgreSQL to pass it on unchanged."""
    return text.replace("%", "%%")


def expand(command: str, *, path: str, name: str, restart: str | None = None) -> str:
    """``command`` as PostgreSQL expands it; ``restart`` None: ``%r`` is not special
    (``archive_command``)."""
    values = {"p": path, "f": name, "%": "%"}
    if restart is not None:
        values["r"] = restart
    out: list[str] = []
    i = 0
    while i < len(command):
        if command[i] == "%" and i + 1 < len(command) and command[i + 1] in values:
            out.append(values[command[i + 1]])
            i += 2
        else:
            out.append(command[i])
            i += 1
    return "".join(out)


def expanded_bytes(setting: Setting, command: str) -> int:
    """The longest ``command`` can become once PostgreSQL expands it, in bytes."""
    if setting == "archive_command":
        line = expand(command, path=ARCHIVE_PATH, name=LONGEST_NAME)
    else:
        line = expand(command, path=RESTORE_PATH, name=LONGEST_NAME, restart=RESTART_NAME)
    return len(line.encode("utf-8", "surrogateescape"))


def check_fits(setting: Setting, command: str) -> None:
    """Raise ``ConfigError`` if PostgreSQL could cut ``command`` short."""
    length = expanded_bytes(setting, command)
    if length > LIMIT_BYTES:
        raise ConfigError(
            f"{setting} can expand to {length} bytes, over PostgreSQL's limit of "
            f"{LIMIT_BYTES} bytes (MAXPGPATH), which would cut it short; "
            "use a shorter path for the config file, the program or wal.spool_dir"
        )
