"""PostgreSQL's expansion of archive_command / restore_command, and its 1024-byte limit."""

from __future__ import annotations

import pytest

from janua_backup.errors import ConfigError
from janua_backup.pg import command_line
from tests.unit.test_prefetch_shell import as_postgres_would


def test_expand_is_postgresqls_substitution() -> None:
    line = "cp %p /a/%f %% %r %x %"
    name = "000000010000000000000001"
    assert command_line.expand(line, path="pg_wal/x", name=name) == as_postgres_would(
        line, name, "pg_wal/x"
    )
    assert command_line.expand(line, path="P", name="F", restart="R") == "cp P /a/F % R %x %"


def test_escape_survives_expansion() -> None:
    path = "/etc/100%p%%/j%f.toml"
    escaped = command_line.escape(path)
    assert command_line.expand(escaped, path="X", name="Y", restart="Z") == path


def test_the_longest_expansion_counts_every_placeholder_in_bytes() -> None:
    # %f: 40 characters (a .backup history file); %p: pg_wal/ + that for archive_command.
    assert command_line.expanded_bytes("archive_command", "%f %p") == 40 + 1 + 47
    # restore_command: pg_wal/RECOVERYHISTORY, and %r a segment name.
    assert command_line.expanded_bytes("restore_command", "%f %p %r") == 40 + 1 + 22 + 1 + 24
    assert command_line.expanded_bytes("archive_command", "é%%") == 3


def test_check_fits_refuses_past_the_limit_naming_it_and_the_length() -> None:
    fits = "x" * (command_line.LIMIT_BYTES - 47) + "%p"
    command_line.check_fits("archive_command", fits)
    with pytest.raises(ConfigError) as caught:
        command_line.check_fits("archive_command", fits + "%f")
    message = caught.value.message
    assert "archive_command" in message and "1023" in message and "1063" in message
    assert caught.value.exit_code == 3
