from __future__ import annotations

import pytest

from janua_backup.errors import FormatError
from janua_backup.pg.version import ServerVersion, parse_version_output


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("postgres (PostgreSQL) 15.18\n", ServerVersion(15, 18)),
        ("postgres (PostgreSQL) 18.6", ServerVersion(18, 6)),
        ("postgres (PostgreSQL) 18beta3", ServerVersion(18, None, "beta3")),
        ("postgres (PostgreSQL) 18rc1", ServerVersion(18, None, "rc1")),
        ("postgres (PostgreSQL) 19devel", ServerVersion(19, None, "devel")),
        ("postgres (PostgreSQL) 17.4 (Homebrew)", ServerVersion(17, 4)),
        ("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", ServerVersion(15, 18)),
        ("postgres (PostgreSQL) 16.4 (Ubuntu 16.4-1.pgdg22.04+1)", ServerVersion(16, 4)),
        ("pg_amcheck (PostgreSQL) 14.23", ServerVersion(14, 23)),
        ("/usr/lib/postgresql/13/bin/postgres (PostgreSQL) 13.2", ServerVersion(13, 2)),
        ("postgres (PostgreSQL) 9.6.24", ServerVersion(9, 6)),
        ("PostgreSQL 16.2", ServerVersion(16, 2)),
    ],
)
def test_version_strings_of_releases_pre_releases_and_packagers(
    output: str, expected: ServerVersion
) -> None:
    assert parse_version_output(output) == expected


def test_a_pre_release_is_no_release_and_prints_as_postgresql_does() -> None:
    beta = parse_version_output("postgres (PostgreSQL) 18beta3")
    assert (beta.is_release, str(beta)) == (False, "18beta3")
    assert str(parse_version_output("postgres (PostgreSQL) 17.4 (Homebrew)")) == "17.4"


@pytest.mark.parametrize(
    "output", ["", "\n", "postgres (PostgreSQL) unknown", "Segmentation fault", "postgres 18x"]
)
def test_no_version_is_a_format_error(output: str) -> None:
    with pytest.raises(FormatError, match="no PostgreSQL version"):
        parse_version_output(output)
