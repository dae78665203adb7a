"""Turns: every node fires at the same times, and knows whether the turn is its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from janua_backup.daemon.turns import last_fire, skip_reason, trigger

UTC_ZONE = ZoneInfo("UTC")
AT = datetime(2026, 12, 4, 17, 0, 30, 500000, tzinfo=UTC)


def test_intervals_fire_at_the_same_times_whenever_a_daemon_started() -> None:
    # Two daemons started 7 s apart must agree on every fire time (their turns).
    first = trigger("@every 20s", UTC_ZONE)
    second = trigger("@every 20s", UTC_ZONE)
    started_a, started_b = AT, AT + timedelta(seconds=7)
    next_a = first.get_next_fire_time(None, started_a)
    next_b = second.get_next_fire_time(None, started_b)
    assert next_a == next_b == datetime(2026, 12, 4, 17, 0, 40, tzinfo=UTC)


def test_last_fire_is_the_newest_fire_time_until_now() -> None:
    every = trigger("@every 20s", UTC_ZONE)
    assert last_fire(every, AT) == datetime(2026, 12, 4, 17, 0, 20, tzinfo=UTC)
    exact = datetime(2026, 12, 4, 17, 0, 40, tzinfo=UTC)
    assert last_fire(every, exact) == exact  # a job runs at its fire time: its own turn
    nightly = trigger("0 2 * * *", UTC_ZONE)
    assert last_fire(nightly, AT) == datetime(2026, 12, 4, 2, 0, tzinfo=UTC)
    # A backup that waited hours for its turn (a long drill) still knows when it fell due.
    assert last_fire(nightly, datetime(2026, 12, 5, 1, 59, tzinfo=UTC)) == datetime(
        2026, 12, 4, 2, 0, tzinfo=UTC
    )
    monthly = trigger("0 3 1 * *", ZoneInfo("Europe/Paris"))
    assert last_fire(monthly, AT) == datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    minutely = trigger("* * * * *", UTC_ZONE)
    assert last_fire(minutely, AT) == datetime(2026, 12, 4, 17, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("backup_from", "role", "eligible"),
    [
        ("primary", "primary", True),
        ("primary", "standby", False),
        ("standby", "standby", True),
        ("standby", "primary", False),
        ("any", "primary", True),
        ("any", "standby", True),
    ],
)
def test_eligibility_is_the_policy_against_the_role_now(
    backup_from: str, role: str, eligible: bool
) -> None:
    why = skip_reason(backup_from, role)
    assert (why is None) == eligible
    if why is not None:
        assert why == (
            f"this node is a {role} and the policy's backup.from is '{backup_from}': "
            f"the {backup_from} takes the backup"
        )


def test_retention_runs_where_backups_run() -> None:
    assert skip_reason("standby", "standby", "applies the retention") is None
    assert skip_reason("primary", "standby", "applies the retention") == (
        "this node is a standby and the policy's backup.from is 'primary': "
        "the primary applies the retention"
    )
