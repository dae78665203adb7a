"""A daemon's backup turn on a cluster with a daemon on every node: one backup per turn.

No PostgreSQL here: these are the cases where the turn's backup is already in the
repository (another node took it), so nothing is asked of the server; the
integration test ``test_daemon_ha`` runs the rest on two real nodes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from janua_backup import locks
from janua_backup.commands import backup, backup_turn
from janua_backup.commands.common import open_repo
from janua_backup.config import RepoSettings, Settings
from janua_backup.errors import BackupError
from janua_backup.repository import catalog
from janua_backup.repository.manifest import Manifest
from tests.unit.repository.helpers import T0, manifest

DUE = T0 + timedelta(minutes=10)


def settings(tmp_path: Path) -> Settings:
    # No [postgres]: a turn that tried to back up would fail to connect, loudly.
    (tmp_path / "repo").mkdir(exist_ok=True)
    return Settings(repository=RepoSettings(url=f"file://{tmp_path}/repo"))


def committed(s: Settings, backup_id: str, minutes: int) -> Manifest:
    m = replace(manifest(backup_id, minutes=minutes), host="db2")
    catalog.commit(open_repo(s), m)
    return m


def test_a_backup_started_at_or_after_the_fire_time_is_the_turns_backup(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert backup_turn.started_since(open_repo(s), DUE) is None  # an empty repository
    committed(s, "20261125T120500Z", minutes=5)  # the previous turn's: before DUE
    assert backup_turn.started_since(open_repo(s), DUE) is None
    taken = committed(s, "20261125T121000Z", minutes=10)  # started exactly at DUE
    assert backup_turn.started_since(open_repo(s), DUE) == taken
    result = backup_turn.run(s, DUE, cancel=threading.Event())
    assert result == taken  # returned, not taken again (no PostgreSQL was needed)
    assert catalog.backup_ids(open_repo(s)) == (["20261125T120500Z", "20261125T121000Z"], [])
    assert locks.holder(open_repo(s).storage, backup.LOCK_NAME).released  # type: ignore[union-attr]


def test_the_loser_of_the_race_waits_for_the_lock_then_finds_the_winners_backup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="janua_backup.commands.backup_turn")
    s = settings(tmp_path)
    repo = open_repo(s)
    winner = locks.acquire(repo.storage, backup.LOCK_NAME, purpose="backup")
    assert winner.record.host == socket.gethostname() and winner.record.pid == os.getpid()
    results: list[object] = []
    loser = threading.Thread(
        target=lambda: results.append(
            backup_turn.run(s, DUE, cancel=threading.Event(), poll_s=0.05)
        )
    )
    loser.start()
    deadline = time.monotonic() + 30
    while not any("waits for the repository lock" in r.message for r in caplog.records):
        assert time.monotonic() < deadline, "the loser never found the lock held"
        time.sleep(0.02)
    taken = committed(s, "20261125T121001Z", minutes=10)  # the winner commits, then releases
    winner.release()
    loser.join(30)
    assert results == [taken]
    assert catalog.backup_ids(repo) == (["20261125T121001Z"], [])


def test_a_stop_while_waiting_for_the_lock_takes_nothing(tmp_path: Path) -> None:
    s = settings(tmp_path)
    repo = open_repo(s)
    cancel = threading.Event()
    cancel.set()
    refused = pytest.raises(BackupError, match="cancelled while waiting for the repository lock")
    with locks.hold(repo.storage, backup.LOCK_NAME, purpose="expire"), refused:
        backup_turn.run(s, DUE, cancel=cancel, poll_s=0.05)
    assert catalog.backup_ids(repo) == ([], [])
