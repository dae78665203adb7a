"""``verify --repo``: the repository check, without PostgreSQL.

Reads every object of every backup (or of one) and every WAL segment they
need, and walks each backup's WAL chain on every timeline. Problems found are
the result, not an exception: the CLI decides the exit code. Errors that stop
the check from running (storage unreachable, access denied, a wrong key for
the whole repository) are raised as usual.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from janua_backup.commands import common
from janua_backup.config import Settings
from janua_backup.repository import integrity, layout, marker
from janua_backup.repository.integrity import BackupCheck, Problem, ProblemKind

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RepoVerifyResult:
    repository: str
    backups: tuple[BackupCheck, ...]
    objects_checked: int
    bytes_read: int
    wal_checked: int
    problems: tuple[Problem, ...]
    duration_s: float

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def summary(self) -> str:
        """One sentence: the verdict, or the first problem and how many more there are."""
        if self.ok:
            return (
                f"repository check passed: {_count(len(self.backups), 'backup')}, "
                f"{_count(self.objects_checked, 'object')}, "
                f"{_count(self.wal_checked, 'WAL segment')}"
            )
        more = len(self.problems) - 1
        tail = f" (and {_count(more, 'more problem')})" if more else ""
        return self.problems[0].message + tail


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def run(
    settings: Settings, backup_id: str | None = None, jobs: int | None = None
) -> RepoVerifyResult:
    began = time.monotonic()
    repo = common.open_repo(settings)
    log.info("repository check begins repository=%s backup_id=%s", repo.describe(), backup_id)
    found = marker.read(repo)
    if found is None:
        problem = Problem(
            ProblemKind.EMPTY_REPOSITORY,
            f"{repo.describe()} is not a janua-backup repository (no {layout.MARKER_KEY}): "
            "nothing was ever archived or backed up there; check repository.url",
        )
        return RepoVerifyResult(repo.describe(), (), 0, 0, 0, (problem,), time.monotonic() - began)
    marker.check_key(repo, found)
    checked = integrity.check(
        repo,
        found.wal_segment_size,
        jobs=jobs or common.jobs(settings),
        backup_id=backup_id,
        system_identifier=found.system_identifier,
        pg_major=found.pg_major,
    )
    result = RepoVerifyResult(
        repository=repo.describe(),
        backups=checked.backups,
        objects_checked=checked.objects_checked,
        bytes_read=checked.bytes_read,
        wal_checked=checked.wal_checked,
        problems=checked.problems,
        duration_s=time.monotonic() - began,
    )
    log.info(
        "repository check ends ok=%s backups=%d objects=%d wal=%d problems=%d duration_s=%.1f",
        result.ok,
        len(result.backups),
        result.objects_checked,
        result.wal_checked,
        len(result.problems),
        result.duration_s,
    )
    return result
