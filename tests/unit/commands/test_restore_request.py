"""restore's and verify's flags become one checked request before anything is opened."""

from __future__ import annotations

from typing import Any

import pytest

from janua_backup.commands.restore_request import build_request
from janua_backup.errors import InputError

NO_TARGET: dict[str, Any] = {
    "pgdata": "/tmp/x",
    "target_time": None,
    "timezone": None,
    "target_lsn": None,
    "target_xid": None,
    "target_name": None,
    "immediate": False,
    "exclusive": False,
    "action": "promote",
    "timeline": None,
    "backup_id": None,
    "standby": False,
}


@pytest.mark.parametrize(
    ("option", "given"),
    [
        ("--target-time", {"target_time": ""}),
        ("--target-lsn", {"target_lsn": ""}),
        ("--target-xid", {"target_xid": ""}),
        ("--target-name", {"target_name": ""}),
        ("--target-name", {"target_name": "  "}),
        ("--timezone", {"target_time": "2024-05-01 12:00", "timezone": ""}),
    ],
)
def test_an_empty_target_value_is_bad_input_not_the_end_of_the_archive(
    option: str, given: dict[str, str]
) -> None:
    # --target-time "$UNSET" used to restore to the end of the archive, silently.
    with pytest.raises(InputError) as caught:
        build_request(**{**NO_TARGET, **given})
    assert caught.value.exit_code == 4
    assert caught.value.message == f"{option} is empty; give a value or leave the option out"


def test_no_target_at_all_is_still_the_end_of_the_archive() -> None:
    assert build_request(**NO_TARGET).target.kind == "latest"


@pytest.mark.parametrize(
    ("given", "complaint"),
    [
        ({"target_xid": "\u0661\u0662\u0663"}, "must be a transaction id"),  # Arabic-Indic digits
        ({"target_xid": "18446744073709551616"}, "must be a transaction id"),  # 2**64
        ({"target_name": "n" * 64}, "longer than 63 bytes"),
    ],
)
def test_a_target_postgresql_would_refuse_at_start_up_is_refused_now(
    given: dict[str, str], complaint: str
) -> None:
    with pytest.raises(InputError, match=complaint):
        build_request(**{**NO_TARGET, **given})


def test_the_largest_targets_postgresql_takes_are_taken() -> None:
    assert build_request(**{**NO_TARGET, "target_xid": str((1 << 64) - 1)}).target.kind == "xid"
    assert build_request(**{**NO_TARGET, "target_name": "n" * 63}).target.kind == "name"


@pytest.mark.parametrize(
    ("given", "wanted"),
    [
        ({}, None),  # decided by where restore writes (restore.archive_choice)
        ({"archive_mode": "on"}, "on"),
        ({"archive": True}, "preserve"),
        ({"archive": True, "archive_mode": "preserve"}, "preserve"),
    ],
)
def test_archive_mode_flags(given: dict[str, Any], wanted: str | None) -> None:
    assert build_request(**{**NO_TARGET, **given}).archive_mode == wanted


@pytest.mark.parametrize(
    ("given", "complaint"),
    [
        ({"archive_mode": "always"}, "--archive-mode 'always' must be off, on or preserve"),
        ({"archive": True, "archive_mode": "on"}, "--archive means --archive-mode preserve"),
    ],
)
def test_archive_mode_refusals(given: dict[str, Any], complaint: str) -> None:
    with pytest.raises(InputError, match=complaint) as caught:
        build_request(**{**NO_TARGET, **given})
    assert caught.value.exit_code == 4
