"""The version a PostgreSQL program reports (``postgres --version``), parsed once.

Pure: no subprocess, no files. Packagers and pre-releases dress the number up
("18beta3", "18rc1", "17.4 (Homebrew)", "15.18 (Debian 15.18-0+deb12u1)"), and a
parser that splits on dots or takes the last word mistakes these for no version
at all; this one takes the first version-shaped word after the program's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from janua_backup.errors import FormatError

# "18", "17.4", "9.6.24", "18beta3", "18rc1", "19devel": the number, then a release label.
_VERSION = re.compile(
    r"(?<![\w.])(\d+)(?:\.(\d+))?(?:\.\d+)*((?:devel|alpha|beta|rc)\d*)?(?![\w.])"
)


@dataclass(frozen=True, slots=True)
class ServerVersion:
    """``major`` as PostgreSQL numbers it since 10 (``15``; a 9.x server reads as 9, a
    major janua-backup never supports); ``minor`` is None for a pre-release, whose
    ``label`` says which (``beta3``, ``rc1``, ``devel``)."""

    major: int
    minor: int | None = None
    label: str = ""

    @property
    def is_release(self) -> bool:
        return not self.label

    def __str__(self) -> str:
        minor = "" if self.minor is None else f".{self.minor}"
        return f"{self.major}{minor}{self.label}"


def parse_version_output(text: str) -> ServerVersion:
    """The version in a ``--version`` line (``postgres (PostgreSQL) 17.4 (Homebrew)``).

    The words up to the product name in parentheses are skipped, so a digit in a
    program's path or name is not taken for the version; vendor suffixes after the
    number are ignored. Raises FormatError when no version is there.
    """
    line = text.strip().splitlines()[0] if text.strip() else ""
    _, product, rest = line.partition("(PostgreSQL)")
    match = _VERSION.search(rest if product else line)
    if match is None:
        raise FormatError(f"no PostgreSQL version in {line[:120]!r}")
    major, minor, label = match.group(1), match.group(2), match.group(3) or ""
    return ServerVersion(int(major), int(minor) if minor is not None else None, label)
