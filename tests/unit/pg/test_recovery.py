from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from janua_backup.errors import InputError, RestoreError
from janua_backup.pg.recovery import (
    ArchiveMode,
    RecoveryTarget,
    format_pg_time,
    parse_target_time,
    quote_setting,
    render_settings,
    write_recovery,
)

from .conftest import give_to_postgres, run_as_postgres

NOW = datetime(2026, 11, 25, 22, 0, 0, tzinfo=UTC)
RESTORE = "janua-backup --config /etc/janua-backup.toml wal-fetch %f %p"
TIME = "2026-11-25 21:43:00.123456+00"


def body(target: RecoveryTarget) -> list[str]:
    """The rendered settings without the comment line."""
    lines = render_settings(RESTORE, target, now=NOW).splitlines()
    assert (
        lines[0] == "# Recovery settings written by janua-backup at 2026-11-25 22:00:00.000000+00"
    )
    return lines[1:]


# --- quoting -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("plain", "'plain'"),
        ("it's", "'it''s'"),
        ("C:\\wal\\%f", "'C:\\\\wal\\\\%f'"),
        ("cp '/a b/%f' \"%p\"", "'cp ''/a b/%f'' \"%p\"'"),
        ("", "''"),
        ("tab\there", "'tab\there'"),
    ],
)
def test_quote_setting(value: str, quoted: str) -> None:
    assert quote_setting(value) == quoted


@pytest.mark.parametrize("value", ["line\nbreak", "carriage\rreturn", "nul\0byte"])
def test_quote_setting_refuses_what_a_config_line_cannot_hold(value: str) -> None:
    with pytest.raises(InputError):
        quote_setting(value)


# --- rendering ---------------------------------------------------------------------------

RESTORE_LINE = f"restore_command = '{RESTORE}'"


@pytest.mark.parametrize(
    ("target", "lines"),
    [
        (
            RecoveryTarget("time", TIME),
            [f"recovery_target_time = '{TIME}'", "recovery_target_action = 'promote'"],
        ),
        (
            RecoveryTarget("lsn", "16/B374D848", inclusive=False, action="pause"),
            [
                "recovery_target_lsn = '16/B374D848'",
                "recovery_target_inclusive = 'false'",
                "recovery_target_action = 'pause'",
            ],
        ),
        (
            RecoveryTarget("xid", "7654321", action="shutdown", timeline="3"),
            [
                "recovery_target_xid = '7654321'",
                "recovery_target_action = 'shutdown'",
                "recovery_target_timeline = '3'",
            ],
        ),
        (
            RecoveryTarget("name", "before 'the' migration"),
            [
                "recovery_target_name = 'before ''the'' migration'",
                "recovery_target_action = 'promote'",
            ],
        ),
        (
            RecoveryTarget("immediate", None, timeline="current"),
            [
                "recovery_target = 'immediate'",
                "recovery_target_action = 'promote'",
                "recovery_target_timeline = 'current'",
            ],
        ),
        (RecoveryTarget("latest", None), []),
        (
            RecoveryTarget("latest", None, timeline="latest"),
            ["recovery_target_timeline = 'latest'"],
        ),
    ],
)
def test_render_settings_for_each_target_kind(target: RecoveryTarget, lines: list[str]) -> None:
    assert body(target) == [RESTORE_LINE, *lines]


def test_render_settings_quotes_the_restore_command() -> None:
    text = render_settings("cp '/mnt/it''s/%f' \"%p\" \\x", RecoveryTarget("latest", None))
    assert "restore_command = 'cp ''/mnt/it''''s/%f'' \"%p\" \\\\x'\n" in text
    with pytest.raises(InputError):
        render_settings("  ", RecoveryTarget("latest", None))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "time", "value": None},
        {"kind": "time", "value": "2026-11-25 21:43:00"},  # naive: PostgreSQL would guess a zone
        {"kind": "lsn", "value": "16-B374D848"},
        {"kind": "xid", "value": "12a"},
        {"kind": "name", "value": ""},
        {"kind": "immediate", "value": "now"},
        {"kind": "latest", "value": None, "inclusive": False},
        {"kind": "name", "value": "x", "inclusive": False},
        {"kind": "latest", "value": None, "action": "pause"},
        {"kind": "time", "value": TIME, "action": "explode"},
        {"kind": "time", "value": TIME, "timeline": "newest"},
        {"kind": "time", "value": TIME, "timeline": "0"},
        {"kind": "yesterday", "value": None},
    ],
)
def test_recovery_target_refuses_inconsistent_input(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError) as caught:
        RecoveryTarget(**kwargs)  # type: ignore[arg-type]
    assert caught.value.exit_code == 4


# --- writing -----------------------------------------------------------------------------


def test_write_recovery_creates_the_file_and_signal(tmp_path: Path) -> None:
    settings = render_settings(RESTORE, RecoveryTarget("time", TIME), now=NOW)
    written = write_recovery(tmp_path, settings, standby=False)
    assert written == [tmp_path / "postgresql.auto.conf", tmp_path / "recovery.signal"]
    assert (tmp_path / "postgresql.auto.conf").read_text() == settings
    assert (tmp_path / "recovery.signal").read_bytes() == b""
    assert stat.S_IMODE((tmp_path / "postgresql.auto.conf").stat().st_mode) == 0o600
    assert not (tmp_path / "postgresql.auto.conf.tmp").exists()


def test_write_recovery_appends_and_disables_earlier_recovery_settings(tmp_path: Path) -> None:
    conf = tmp_path / "postgresql.auto.conf"
    conf.write_text(
        "# Do not edit this file manually!\n"
        "work_mem = '64MB'\n"
        "recovery_target_xid = '1234'\n"
        "  Recovery_Target_Inclusive=false\n"
        "restore_command 'cp /old/%f %p'\n"
        "recovery_end_command = 'true'"  # no final newline; not ours: kept
    )
    conf.chmod(0o640)
    (tmp_path / "standby.signal").touch()
    settings = render_settings(RESTORE, RecoveryTarget("latest", None), now=NOW)
    assert write_recovery(tmp_path, settings, standby=False)[1] == tmp_path / "recovery.signal"
    lines = conf.read_text().splitlines()
    assert lines[:2] == ["# Do not edit this file manually!", "work_mem = '64MB'"]
    assert lines[2].startswith("# disabled by janua-backup at ")
    assert lines[2].endswith(": recovery_target_xid = '1234'")
    assert lines[3].endswith(":   Recovery_Target_Inclusive=false")
    assert lines[4].endswith(": restore_command 'cp /old/%f %p'")
    assert lines[5] == "recovery_end_command = 'true'"
    assert lines[6:] == settings.splitlines()
    assert stat.S_IMODE(conf.stat().st_mode) == 0o640
    assert not (tmp_path / "standby.signal").exists()  # it would win over recovery.signal


def test_write_recovery_for_a_standby(tmp_path: Path) -> None:
    (tmp_path / "recovery.signal").touch()
    settings = render_settings(RESTORE, RecoveryTarget("latest", None), now=NOW)
    assert write_recovery(tmp_path, settings, standby=True)[1] == tmp_path / "standby.signal"
    assert (tmp_path / "standby.signal").exists()
    assert not (tmp_path / "recovery.signal").exists()


def test_write_recovery_into_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(RestoreError, match=r"postgresql\.auto\.conf") as caught:
        write_recovery(tmp_path / "nope", "restore_command = 'x'\n", standby=False)
    assert caught.value.exit_code == 32


def test_postgresql_reads_back_what_we_wrote(pg_root: Path) -> None:
    """PostgreSQL's own parser (``postgres -C``) sees the values we meant."""
    pgdata = pg_root / "recovery-check"
    pgdata.mkdir(mode=0o700)
    (pgdata / "PG_VERSION").write_text("15\n")
    (pgdata / "postgresql.conf").write_text("")
    (pgdata / "postgresql.auto.conf").write_text("recovery_target_xid = '1234'\n")
    command = "cp '/mnt/arch ive/it''s/%f' \"%p\" \\ # not a comment"
    target = RecoveryTarget("time", format_pg_time(parse_target_time(TIME, timezone=None)))
    write_recovery(pgdata, render_settings(command, target), standby=False)
    for path in [pgdata, *pgdata.iterdir()]:
        give_to_postgres(path)
    assert run_as_postgres("postgres", "-D", str(pgdata), "-C", "restore_command") == command + "\n"
    assert run_as_postgres("postgres", "-D", str(pgdata), "-C", "recovery_target_time") == (
        TIME + "\n"
    )
    assert run_as_postgres("postgres", "-D", str(pgdata), "-C", "recovery_target_xid") == "\n"


# --- target times ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-25T21:43:00Z", datetime(2026, 11, 25, 21, 43, tzinfo=UTC)),
        ("2026-11-25t21:43:00z", datetime(2026, 11, 25, 21, 43, tzinfo=UTC)),
        ("2026-11-25T21:43:00.5+02:00", datetime(2026, 11, 25, 19, 43, 0, 500000, tzinfo=UTC)),
        ("2026-11-25 21:43:00-05:30", datetime(2026, 11, 26, 3, 13, tzinfo=UTC)),
        ("2026-11-25 21:43:00.123456 +0100", datetime(2026, 11, 25, 20, 43, 0, 123456, UTC)),
        ("2026-11-25 21:43:00.123456+00", datetime(2026, 11, 25, 21, 43, 0, 123456, UTC)),
        ("2026-11-25 21:43+01", datetime(2026, 11, 25, 20, 43, tzinfo=UTC)),
        ("  2026-11-25T21:43:00Z\n", datetime(2026, 11, 25, 21, 43, tzinfo=UTC)),
    ],
)
def test_parse_target_time_with_an_offset(text: str, expected: datetime) -> None:
    parsed = parse_target_time(text, timezone="Asia/Tokyo")  # an explicit offset wins
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-04 13:32:36 UTC",
        "2026-12-04 13:32:36UTC",
        "2026-12-04 13:32:36 utc",
        "2026-12-04 13:32:36 GMT",
        "2026-12-04 13:32:36 Etc/UTC",
        "2026-12-04 13:32:36Z",
        "2026-12-04T13:32:36Z",
        "2026-12-04 13:32:36+00",
        "2026-12-04 13:32:36+00:00",
        "2026-12-04 13:32:36 +0000",
        "2026-12-04 14:32:36 Europe/Paris",
        "2026-12-04 14:32:36+01",
    ],
)
def test_parse_target_time_takes_every_spelling_of_utc_and_named_zones(text: str) -> None:
    """What ``date -u``, PostgreSQL and people write all name the same instant; the
    zone in the text wins over --timezone as an offset does."""
    assert parse_target_time(text, timezone="Asia/Tokyo") == datetime(
        2026, 12, 4, 13, 32, 36, tzinfo=UTC
    )


def test_parse_target_time_refuses_an_unknown_zone_name() -> None:
    with pytest.raises(InputError, match="unknown time zone 'Mars/Olympus'"):
        parse_target_time("2026-12-04 13:32:36 Mars/Olympus", timezone=None)
    with pytest.raises(InputError, match="does not exist in Europe/Paris"):
        parse_target_time("2026-03-29 02:30:00 Europe/Paris", timezone=None)


def test_parse_target_time_in_a_named_zone() -> None:
    paris = parse_target_time("2026-07-14 12:00:00", timezone="Europe/Paris")
    assert paris == datetime(2026, 7, 14, 10, 0, tzinfo=UTC)
    winter = parse_target_time("2026-01-14T12:00:00", timezone="Europe/Paris")
    assert winter == datetime(2026, 1, 14, 11, 0, tzinfo=UTC)
    assert parse_target_time("2026-01-14 12:00:00", timezone="UTC") == datetime(
        2026, 1, 14, 12, 0, tzinfo=UTC
    )


def test_parse_target_time_refuses_a_naive_time() -> None:
    with pytest.raises(InputError) as caught:
        parse_target_time("2026-11-25 21:43:00", timezone=None)
    assert str(caught.value) == (
        "the target time '2026-11-25 21:43:00' has no time zone; add Z or an offset like "
        "+02:00, or pass --timezone Europe/Paris"
    )


def test_parse_target_time_refuses_dst_gaps_and_folds() -> None:
    with pytest.raises(InputError, match="does not exist in Europe/Paris"):
        parse_target_time("2026-03-29 02:30:00", timezone="Europe/Paris")
    with pytest.raises(InputError, match=r"happens twice .* \+02:00 and at \+01:00"):
        parse_target_time("2026-10-25 02:30:00", timezone="Europe/Paris")
    with pytest.raises(InputError, match="unknown time zone 'Mars/Olympus'"):
        parse_target_time("2026-10-25 02:30:00", timezone="Mars/Olympus")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2026-11-25",
        "25/11/2026 21:43",
        "2026-11-25 21:43:00 CET",
        "2026-13-01 00:00:00Z",
        "2026-02-30 00:00:00Z",
        "2026-11-25 24:00:00Z",
        "2026-11-25 21:43:00.1234567Z",
        "2026-11-25 21:43:00+25:00",
        "2026-11-25 21:43:00+02:75",
        "2026-W48-3T21:43:00Z",
    ],
)
def test_parse_target_time_refuses_garbage_naming_the_forms(text: str) -> None:
    with pytest.raises(InputError, match="ISO 8601"):
        parse_target_time(text, timezone="UTC")


def test_format_pg_time() -> None:
    assert format_pg_time(datetime(2026, 11, 25, 21, 43, tzinfo=UTC)) == (
        "2026-11-25 21:43:00.000000+00"
    )
    plus_two = timezone(timedelta(hours=2))
    assert format_pg_time(datetime(2026, 1, 1, 0, 30, 0, 7, tzinfo=plus_two)) == (
        "2025-12-31 22:30:00.000007+00"
    )
    with pytest.raises(InputError):
        format_pg_time(datetime(2026, 1, 1))


@given(st.datetimes(timezones=st.just(UTC)))
def test_format_and_parse_round_trip(moment: datetime) -> None:
    assert parse_target_time(format_pg_time(moment), timezone=None) == moment


# --- archive_mode ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "tail"),
    [
        ("preserve", []),
        (
            "off",
            [
                "# archive_mode off: a copy restored beside production must not archive its "
                "new timeline into production's repository (restore --archive-mode on lets it)",
                "archive_mode = 'off'",
            ],
        ),
        (
            "on",
            ["# archive_mode on: asked for with restore --archive-mode on", "archive_mode = 'on'"],
        ),
    ],
)
def test_render_settings_writes_archive_mode_unless_preserved(
    mode: ArchiveMode, tail: list[str]
) -> None:
    target = RecoveryTarget("latest", None)
    lines = render_settings(RESTORE, target, archive_mode=mode, now=NOW).splitlines()
    assert lines == [*render_settings(RESTORE, target, now=NOW).splitlines(), *tail]


def test_render_settings_refuses_an_unknown_archive_mode() -> None:
    always = cast(ArchiveMode, "always")  # a caller that skipped the type check
    with pytest.raises(InputError, match="off, on, preserve"):
        render_settings(RESTORE, RecoveryTarget("latest", None), archive_mode=always)


def test_writing_archive_mode_disables_an_earlier_one_and_preserve_keeps_it(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "postgresql.auto.conf"
    conf.write_text("archive_mode = 'on'\n")  # ALTER SYSTEM on the backed-up cluster
    latest = RecoveryTarget("latest", None)
    write_recovery(tmp_path, render_settings(RESTORE, latest, now=NOW), standby=False)
    assert conf.read_text().splitlines()[0] == "archive_mode = 'on'"
    write_recovery(
        tmp_path, render_settings(RESTORE, latest, archive_mode="off", now=NOW), standby=False
    )
    live = [
        line for line in conf.read_text().splitlines() if line.lstrip().startswith("archive_mode")
    ]
    assert live == ["archive_mode = 'off'"]


def test_postgresql_reads_archive_mode_off_over_its_own_conf(pg_root: Path) -> None:
    """auto.conf is read after postgresql.conf: the copy's 'off' wins over production's 'on'."""
    pgdata = pg_root / "archive-mode-check"
    pgdata.mkdir(mode=0o700)
    (pgdata / "PG_VERSION").write_text("15\n")
    (pgdata / "postgresql.conf").write_text("archive_mode = on\narchive_command = 'false'\n")
    (pgdata / "postgresql.auto.conf").write_text("archive_mode = 'always'\n")
    settings = render_settings(RESTORE, RecoveryTarget("latest", None), archive_mode="off")
    write_recovery(pgdata, settings, standby=False)
    for path in [pgdata, *pgdata.iterdir()]:
        give_to_postgres(path)
    assert run_as_postgres("postgres", "-D", str(pgdata), "-C", "archive_mode") == "off\n"
