"""The policy file: defaults, and one located sentence for each kind of mistake."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from textwrap import dedent

import pytest

from janua_backup import policy
from janua_backup.errors import ConfigError
from janua_backup.policy import (
    BackupPolicy,
    CheckQuery,
    Policy,
    RetentionPolicy,
    Schedule,
    VerifyPolicy,
)

DEFAULT_TOML = Path(__file__).resolve().parents[2] / "policies" / "default.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def line_of(path: Path, fragment: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(n for n, text in enumerate(lines, start=1) if fragment in text)


def failure(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        policy.load(path)
    assert caught.value.exit_code == 3
    message = str(caught.value)
    assert "\n" not in message
    return message


def assert_located(path: Path, fragment: str, *parts: str) -> str:
    """The error starts with 'FILE line N:' for the line holding ``fragment``, names parts."""
    message = failure(path)
    assert message.startswith(f"{path} line {line_of(path, fragment)}: "), message
    for part in parts:
        assert part in message, message
    return message


# --- what loads -----------------------------------------------------------------------------


def test_default_toml_holds_the_ha_guide_defaults() -> None:
    loaded = policy.load(DEFAULT_TOML)
    assert loaded == Policy(
        path=DEFAULT_TOML,
        schedule=Schedule(
            timezone="UTC",
            backup="0 2 * * *",
            verify="0 4 * * *",
            expire="30 5 * * *",
            check="0 * * * *",
            misfire_grace_s=3600,
        ),
        backup=BackupPolicy(type="full", compression="gzip", level=6),
        retention=RetentionPolicy(recovery_window_days=30.0, min_backups=2),
        verify=VerifyPolicy(
            target="latest",
            amcheck=False,
            timeout_s=1800.0,
            checks=(
                CheckQuery(
                    name="databases are listed",
                    database="postgres",
                    query="SELECT count(*) FROM pg_database",
                    min_value=1,
                ),
            ),
        ),
    )
    assert loaded.retention.window == timedelta(days=30)


def test_builtin_default_equals_default_toml_without_its_checks() -> None:
    loaded = policy.load(DEFAULT_TOML)
    expected = replace(
        loaded,
        path=None,
        verify=replace(loaded.verify, checks=()),
        backup=replace(loaded.backup, compression=None, level=None),
    )
    assert policy.default() == expected


def test_empty_file_takes_the_defaults_and_the_configured_codec(tmp_path: Path) -> None:
    loaded = policy.load(write(tmp_path, ""))
    assert loaded.schedule == policy.default().schedule
    assert loaded.retention == policy.default().retention
    assert loaded.verify == policy.default().verify
    # Left out, compression is the configuration file's: no silent override.
    assert loaded.backup == BackupPolicy(type="full", compression=None, level=None)


def test_a_full_file_is_read_value_by_value(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '''
        [schedule]
        timezone = "Europe/Paris"
        backup = "15 1 * * mon-fri"
        verify = ""           # disabled
        expire = "0 */6 * * *"
        check = "*/10 * * * *"
        misfire_grace_s = 600

        [backup]
        type = "incr"
        compression = "zstd"
        level = 19

        [retention]
        recovery_window_days = 0.5
        min_backups = 1

        [verify]
        target = "immediate"
        amcheck = true
        timeout_s = 90.5

        [[verify.checks]]
        name = "users"
        database = "janua"
        query = """
        SELECT count(*)
          FROM users
        """

        [[verify.checks]]
        name = "orders"
        database = "janua"
        query = 'SELECT count(*) FROM orders'
        min = 0
        ''',
    )
    loaded = policy.load(path)
    assert loaded.schedule == Schedule(
        timezone="Europe/Paris",
        backup="15 1 * * mon-fri",
        verify=None,
        expire="0 */6 * * *",
        check="*/10 * * * *",
        misfire_grace_s=600,
    )
    assert loaded.schedule.jobs() == (
        ("backup", "15 1 * * mon-fri"),
        ("expire", "0 */6 * * *"),
        ("check", "*/10 * * * *"),
    )
    assert str(loaded.schedule.tzinfo) == "Europe/Paris"
    assert loaded.backup == BackupPolicy(type="incr", compression="zstd", level=19)
    assert loaded.retention.window == timedelta(hours=12)
    assert loaded.verify.target == "immediate"
    assert loaded.verify.amcheck is True
    assert loaded.verify.timeout_s == 90.5
    assert [c.name for c in loaded.verify.checks] == ["users", "orders"]
    assert loaded.verify.checks[0].min_value is None
    assert "FROM users" in loaded.verify.checks[0].query
    assert loaded.verify.checks[1].min_value == 0


def test_every_job_can_be_disabled(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [schedule]
        backup = ""
        verify = ""
        expire = "  "
        check = ""
        """,
    )
    schedule = policy.load(path).schedule
    assert (schedule.backup, schedule.verify, schedule.expire, schedule.check) == (None,) * 4
    assert schedule.jobs() == ()


# --- cron expressions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("0 25 * * *", "hour must be 0-23"),
        ("61 * * * *", "minute must be 0-59"),
        ("0 2 0 * *", "day must be 1-31"),
        ("0 2 * 13 *", "month must be 1-12"),
        ("0 2 * *", "it has 4 fields; crontab has 5"),
        ("0 2 * * * *", "it has 6 fields"),
        ("x 2 * * *", "minute 'x'"),
        ("*/0 * * * *", "Increment must be higher than 0"),
        ("0 2 * * 1", "write days of the week as names (mon-sun)"),
        ("0 2 * * mon,5", "write days of the week as names"),
        ("0 2 * * mon#2", "day of week 'mon#2'"),
        ("0 2 * * funday", "day of week 'funday'"),
    ],
)
def test_a_bad_cron_expression_names_file_line_key_and_reason(
    tmp_path: Path, expr: str, reason: str
) -> None:
    path = write(
        tmp_path,
        f"""
        # nightly
        [schedule]
        timezone = "UTC"

        backup = "{expr}"
        """,
    )
    message = assert_located(path, "backup =", f"schedule.backup '{expr}'", reason)
    assert "is not a valid cron expression" in message


def test_the_briefs_example_message(tmp_path: Path) -> None:
    path = write(tmp_path, '[schedule]\nverify = "0 4 * * *"\nbackup = "0 25 * * *"\n')
    assert failure(path) == (
        f"{path} line 3: schedule.backup '0 25 * * *' is not a valid cron expression "
        "(hour must be 0-23)"
    )


def test_weekday_steps_and_name_ranges_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, '[schedule]\nbackup = "0 2 * * */2,sat-sun"\ncheck = "0 2 * * SUN"\n')
    assert policy.load(path).schedule.backup == "0 2 * * */2,sat-sun"


# --- intervals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "seconds"),
    [("@every 30s", 30), ("@every 5m", 300), ("@every 2h", 7200), ("@every  1s", 1)],
)
def test_an_interval_schedule_is_accepted(tmp_path: Path, expr: str, seconds: int) -> None:
    path = write(tmp_path, f'[schedule]\nbackup = "{expr}"\n')
    assert policy.load(path).schedule.backup == expr
    assert policy.interval_s(expr) == seconds


def test_a_cron_expression_is_not_an_interval() -> None:
    assert policy.interval_s("0 2 * * *") is None


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("@every 0s", "at least 1s"),
        ("@every 5d", "@every 30s, @every 5m, @every 2h"),
        ("@every", "write @every and a whole number with s, m or h"),
        ("@every 1.5h", "a whole number"),
        ("@daily", "write @every"),
    ],
)
def test_a_bad_interval_names_file_line_key_and_reason(
    tmp_path: Path, expr: str, reason: str
) -> None:
    path = write(tmp_path, f'[schedule]\ncheck = "{expr}"\n')
    assert_located(path, "check =", f"schedule.check '{expr}' is not a valid interval", reason)


def test_an_unknown_time_zone_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[schedule]\ntimezone = "Mars/Olympus"\n')
    assert_located(path, "timezone", "schedule.timezone 'Mars/Olympus'", "IANA")


@pytest.mark.parametrize("zone", ["", "../etc/passwd", "Europe"])
def test_malformed_time_zones_are_refused(tmp_path: Path, zone: str) -> None:
    path = write(tmp_path, f'[schedule]\ntimezone = "{zone}"\n')
    assert_located(path, "timezone", "is not a known time zone")


# --- unknown names, wrong types and values ------------------------------------------------------


def test_an_unknown_section_is_named_with_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, '[schedule]\nbackup = "0 2 * * *"\n\n[retension]\nmin_backups = 3\n')
    assert_located(
        path, "[retension]", "unknown section [retension]", "schedule, backup, retention, verify"
    )


def test_an_unknown_key_is_named_with_the_known_ones(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [retention]
        min_backups = 3
        recovery_window = 7
        """,
    )
    message = assert_located(path, "recovery_window =", "unknown key retention.recovery_window")
    assert "known in [retention]: min_backups, recovery_window_days" in message


def test_a_top_level_key_is_an_unknown_section(tmp_path: Path) -> None:
    path = write(tmp_path, "min_backups = 3\n")
    assert_located(path, "min_backups", "unknown section [min_backups]")


def test_a_section_that_is_not_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, 'schedule = "nightly"\n')
    assert_located(path, "schedule", "schedule must be a table")


def test_a_negative_window_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "[retention]\n\nrecovery_window_days = -1\n")
    assert_located(path, "recovery_window_days", "retention.recovery_window_days -1", "0 or more")


@pytest.mark.parametrize(
    ("section", "line", "key", "wanted"),
    [
        ("retention", 'min_backups = "2"', "retention.min_backups", "must be an integer, not '2'"),
        ("retention", "min_backups = 2.5", "retention.min_backups", "must be an integer"),
        ("retention", "min_backups = true", "retention.min_backups", "an integer, not true"),
        ("retention", 'recovery_window_days = "30d"', "recovery_window_days", "must be a number"),
        (
            "retention",
            "recovery_window_days = nan",
            "recovery_window_days",
            "finite number, not nan",
        ),
        (
            "retention",
            "recovery_window_days = inf",
            "recovery_window_days",
            "finite number, not inf",
        ),
        ("verify", 'amcheck = "yes"', "verify.amcheck", "must be true or false"),
        ("verify", "timeout_s = true", "verify.timeout_s", "must be a number, not true"),
        ("verify", "target = 1", "verify.target", "must be a string, not 1"),
        ("verify", 'checks = "all"', "verify.checks", "must be an array of tables"),
        ("schedule", "backup = 2", "schedule.backup", "must be a string, not 2"),
        ("schedule", "timezone = []", "schedule.timezone", "must be a string, not an array"),
        ("schedule", "misfire_grace_s = 1.5", "schedule.misfire_grace_s", "an integer"),
        ("backup", "level = '6'", "backup.level", "must be an integer"),
        ("backup", "compression = { codec = 'gzip' }", "backup.compression", "not a table"),
    ],
)
def test_a_wrong_type_names_the_key_and_the_type(
    tmp_path: Path, section: str, line: str, key: str, wanted: str
) -> None:
    path = write(tmp_path, f"[{section}]\n{line}\n")
    assert_located(path, line, key, wanted)


@pytest.mark.parametrize(
    ("section", "line", "parts"),
    [
        ("retention", "min_backups = 0", ("retention.min_backups 0", "1 or more")),
        ("retention", "recovery_window_days = 40000", ("over 100 years",)),
        ("schedule", "misfire_grace_s = 0", ("schedule.misfire_grace_s 0", "1 or more")),
        ("verify", "timeout_s = 0", ("verify.timeout_s 0", "more than 0")),
        ("verify", "timeout_s = 1e12", ("verify.timeout_s 1e+12", "at most 604800")),
        ("schedule", "misfire_grace_s = 99999999999", ("misfire_grace_s", "604800 or less")),
        ("retention", "min_backups = 99999999999", ("retention.min_backups", "10000 or less")),
        ("verify", 'target = "yesterday"', ("verify.target 'yesterday'", "latest, immediate")),
        ("verify", 'target = ""', ("verify.target ''", "latest, immediate")),
        ("backup", 'type = "differential"', ("backup.type 'differential'", "full, incr")),
        ("backup", 'compression = "lz4"', ("backup.compression 'lz4'", "none, gzip, zstd")),
        ("backup", 'compression = ""', ("backup.compression ''",)),
    ],
)
def test_an_out_of_range_value_names_the_key(
    tmp_path: Path, section: str, line: str, parts: tuple[str, ...]
) -> None:
    path = write(tmp_path, f"[{section}]\n{line}\n")
    assert_located(path, line, *parts)


@pytest.mark.parametrize(
    ("lines", "bad", "part"),
    [
        ('compression = "gzip"\nlevel = 10', "level", "backup.level 10 must be 1-9 for gzip"),
        ('compression = "zstd"\nlevel = 0', "level", "backup.level 0 must be 1-19 for zstd"),
        ('compression = "none"\nlevel = 3', "level", "compression is 'none'"),
        ("level = 3", "level", "backup.level needs backup.compression"),
    ],
)
def test_levels_belong_to_a_codec(tmp_path: Path, lines: str, bad: str, part: str) -> None:
    path = write(tmp_path, f"[backup]\n{lines}\n")
    assert_located(path, bad, part)


def test_a_codec_without_level_takes_the_codecs_default(tmp_path: Path) -> None:
    loaded = policy.load(write(tmp_path, '[backup]\ncompression = "none"\n'))
    assert loaded.backup == BackupPolicy(compression="none", level=None)


# --- check queries ------------------------------------------------------------------------------

TWO_CHECKS = """
[verify]
target = "latest"

[[verify.checks]]
name = "first"
database = "postgres"
query = \"\"\"
SELECT 1
min = 99
\"\"\"

[[verify.checks]]
name = "second"
database = "janua"
query = "SELECT count(*) FROM users"
{extra}
"""


def test_an_error_in_the_second_check_points_at_its_own_line(tmp_path: Path) -> None:
    # The first query's text holds 'min = 99': a multi-line string is not read as keys.
    path = write(tmp_path, TWO_CHECKS.format(extra='min = "1"'))
    assert_located(path, 'min = "1"', "verify.checks[1].min must be an integer, not '1'")


def test_an_unknown_key_in_a_check(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_CHECKS.format(extra="minimum = 1"))
    message = assert_located(path, "minimum = 1", "unknown key verify.checks[1].minimum")
    assert "known in [[verify.checks]]: database, min, name, query" in message


def test_a_check_without_query_points_at_its_header(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[verify.checks]]
        name = "ok"
        database = "postgres"
        query = "SELECT 1"

        [[verify.checks]]
        name = "no query"
        database = "postgres"
        """,
    )
    message = failure(path)
    assert message.startswith(f"{path} line 6: verify.checks[1] has no query"), message
    assert "name, database and query" in message


@pytest.mark.parametrize(
    ("body", "fragment", "part"),
    [
        ('name = "x"\ndatabase = "postgres"\nquery = "  "', "query", "verify.checks[0].query"),
        ('name = ""\ndatabase = "postgres"\nquery = "SELECT 1"', "name", "is empty"),
        ('name = "x"\ndatabase = 5\nquery = "SELECT 1"', "database", "must be a string, not 5"),
        ('name = "x"\ndatabase = "p"\nquery = "SELECT 1"\nmin = true', "min", "an integer"),
    ],
)
def test_bad_check_values(tmp_path: Path, body: str, fragment: str, part: str) -> None:
    path = write(tmp_path, f"[[verify.checks]]\n{body}\n")
    assert_located(path, f"{fragment} =", part)


def test_two_checks_with_one_name_are_refused(tmp_path: Path) -> None:
    check = '[[verify.checks]]\nname = "rows"\ndatabase = "janua"\nquery = "SELECT 1"\n'
    path = write(tmp_path, check + "\n" + check.replace("SELECT 1", "SELECT 2"))
    message = failure(path)
    assert message.startswith(f"{path} line 7: verify.checks[1].name 'rows'"), message


# --- the file itself ------------------------------------------------------------------------------


def test_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    assert failure(path) == f"policy file {path} does not exist"


def test_a_file_that_is_not_toml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[schedule]\nbackup = "0 2 * * *\n')
    message = failure(path)
    assert message.startswith(f"policy file {path} is not valid TOML"), message
    assert "line 2" in message


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"# caf\xe9\n")
    assert "is not UTF-8" in failure(path)


def test_a_directory_is_not_a_policy_file(tmp_path: Path) -> None:
    assert f"cannot read policy file {tmp_path}" in failure(tmp_path)


def test_quoted_and_dotted_keys_are_located(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[retention]\n"min_backups" = 1\n\n[schedule]\n"backup" = "0 99 * * *"\n'
    )
    assert_located(path, '"backup"', "hour must be 0-23")
    dotted = write(tmp_path, 'retention.min_backups = 1\nschedule.backup = "0 99 * * *"\n')
    assert_located(dotted, "schedule.backup", "hour must be 0-23")


def test_odd_quoted_keys_and_inline_tables_are_located(tmp_path: Path) -> None:
    path = write(tmp_path, '[schedule]\n\n"back[up]" = "0 2 * * *"\n')
    assert_located(path, "back[up]", "unknown key schedule.back[up]")
    inline = write(tmp_path, '\nschedule = { backup = "0 99 * * *" }\n')
    assert_located(inline, "schedule =", "schedule.backup '0 99 * * *'")


# --- backup.from: where a cluster's backups run ---------------------------------------------


@pytest.mark.parametrize("where", ["primary", "standby", "any"])
def test_backup_from_names_the_nodes_that_take_backups(tmp_path: Path, where: str) -> None:
    loaded = policy.load(write(tmp_path, f'[backup]\nfrom = "{where}"\n'))
    assert loaded.backup.from_ == where
    assert policy.load(write(tmp_path, "")).backup.from_ == "primary"  # left out: the primary


def test_a_bad_backup_from_names_the_line_and_the_choices(tmp_path: Path) -> None:
    path = write(tmp_path, '[backup]\ntype = "full"\nfrom = "replica"\n')
    assert_located(path, "from =", "backup.from 'replica'", "primary, standby, any")
    path = write(tmp_path, '[backup]\nfrom_ = "any"\n')
    assert_located(path, "from_ =", "unknown key backup.from_", "compression, from, level, type")
