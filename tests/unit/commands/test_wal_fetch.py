"""wal-fetch against a file:// repository: each segment's page header is checked against
its name before it reaches ``%p``, and an object that fails its checks is read at most
three times, not retried until the transport deadline."""

from __future__ import annotations

from pathlib import Path

import pytest

from janua_backup.commands import wal_fetch
from janua_backup.commands.common import open_repo
from janua_backup.config import CompressionSettings, RepoSettings, Settings, WalSettings
from janua_backup.errors import FormatError, IntegrityError, RepositoryMismatch
from janua_backup.pg.wal import WalSegment
from janua_backup.repository import layout, marker
from janua_backup.repository.objects import Repo
from tests.unit.pg.builders import SYSID, control_bytes, segment_header

MIB = 1024 * 1024
SEG_5 = WalSegment.from_number(1, 5, MIB)
SEG_6 = WalSegment.from_number(1, 6, MIB)


def segment_bytes(segment: WalSegment, *, tli: int | None = None, sysid: int = SYSID) -> bytes:
    """A 1 MiB segment whose first page header says what it is (``tli``: another timeline)."""
    header = segment_header(
        tli=segment.timeline if tli is None else tli,
        pageaddr=segment.start_lsn.value,
        sysid=sysid,
        seg_size=MIB,
    )
    return (header + segment.name.encode()).ljust(MIB, b"\0")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "repo").mkdir()
    return Settings(
        repository=RepoSettings(url=f"file://{tmp_path / 'repo'}"),
        compression=CompressionSettings(codec="gzip"),
        wal=WalSettings(prefetch_segments=0, fetch_retry_deadline_s=3600),
    )


@pytest.fixture
def repo(settings: Settings) -> Repo:
    repo = open_repo(settings)
    marker.ensure(repo, system_identifier=SYSID, wal_segment_size=MIB, pg_major=15)
    return repo


@pytest.fixture
def pgdata(tmp_path: Path) -> Path:
    """A data directory in archive recovery: wal-fetch checks against its pg_control."""
    data = tmp_path / "data"
    (data / "global").mkdir(parents=True)
    (data / "global" / "pg_control").write_bytes(control_bytes(seg_size=MIB))
    (data / "PG_VERSION").write_text("15\n")
    (data / "pg_wal").mkdir()
    (data / "recovery.signal").touch()
    return data


@pytest.fixture(params=["in recovery", "run by hand"])
def where(request: pytest.FixtureRequest, pgdata: Path, tmp_path: Path) -> Path:
    """Where wal-fetch runs: in the data directory (pg_control) or elsewhere (the marker)."""
    if request.param == "in recovery":
        return pgdata
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return elsewhere


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays wal-fetch waits before another attempt; more than five is a retry loop."""
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) > 5:
            raise AssertionError(f"wal-fetch is still retrying after {len(delays)} attempts")

    monkeypatch.setattr(wal_fetch.time, "sleep", sleep)
    return delays


def store(repo: Repo, name: str, data: bytes) -> None:
    repo.put_bytes(layout.wal_key(name), data)


def fetch(settings: Settings, name: str, where: Path) -> Path:
    dest = where / "RECOVERYXLOG"
    wal_fetch.run(settings, name, str(dest), pgdata=where)
    return dest


def test_the_segment_its_name_gives_is_served(
    settings: Settings, repo: Repo, where: Path, sleeps: list[float]
) -> None:
    store(repo, SEG_5.name, segment_bytes(SEG_5))
    assert fetch(settings, SEG_5.name, where).read_bytes() == segment_bytes(SEG_5)
    # Timeline 2 began inside segment 6: PostgreSQL copied timeline 1's segment 6,
    # first page header (timeline 1) included, to 000000020000000000000006.
    switch = WalSegment.from_number(2, 6, MIB)
    store(repo, switch.name, segment_bytes(switch, tli=1))
    assert fetch(settings, switch.name, where).read_bytes() == segment_bytes(switch, tli=1)
    partial = f"{SEG_6.name}.partial"
    store(repo, partial, segment_bytes(SEG_6)[:8192])
    assert fetch(settings, partial, where).read_bytes() == segment_bytes(SEG_6)[:8192]
    assert sleeps == []


def test_a_segment_stored_under_another_name_is_refused_and_nothing_is_written(
    settings: Settings,
    repo: Repo,
    where: Path,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Finding 2: swapped objects were served, and recovery promoted with rows missing."""
    store(repo, SEG_5.name, segment_bytes(SEG_6))
    store(repo, SEG_6.name, segment_bytes(SEG_5))
    for name, holds in ((SEG_5.name, SEG_6.name), (SEG_6.name, SEG_5.name)):
        with pytest.raises(FormatError, match=f"the file named {name} holds segment {holds}"):
            fetch(settings, name, where)
    assert sorted(p.name for p in where.iterdir() if "RECOVERYXLOG" in p.name) == []
    rereads = [r for r in caplog.records if "reading it again" in r.getMessage()]
    assert len(rereads) == 4  # two more reads of each, then the error
    assert len(sleeps) == 4


@pytest.mark.parametrize(
    ("data", "error", "says"),
    [
        (segment_bytes(SEG_5, sysid=SYSID + 1), RepositoryMismatch, "system identifier"),
        (segment_bytes(SEG_5, tli=2), FormatError, "on timeline 2"),
        (segment_bytes(SEG_5)[:30], FormatError, "30 bytes long"),
        (segment_bytes(SEG_5)[: MIB // 2], FormatError, "not the segment size"),
    ],
    ids=["another cluster", "a newer timeline", "shorter than a header", "half a segment"],
)
def test_a_segment_with_a_wrong_header_or_size_is_refused(
    settings: Settings,
    repo: Repo,
    where: Path,
    sleeps: list[float],
    data: bytes,
    error: type[Exception],
    says: str,
) -> None:
    store(repo, SEG_5.name, data)
    with pytest.raises(error, match=says):
        fetch(settings, SEG_5.name, where)
    assert not (where / "RECOVERYXLOG").exists()


def test_a_corrupt_object_fails_after_two_rereads_not_at_the_deadline(
    settings: Settings,
    repo: Repo,
    tmp_path: Path,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A checksum that fails three reads in a row is damage, not a blink of the network:
    wal-fetch gives up then (exit 128 in the CLI), not after fetch_retry_deadline_s."""
    store(repo, SEG_5.name, segment_bytes(SEG_5))
    stored = tmp_path / "repo" / layout.wal_key(SEG_5.name)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        fetch(settings, SEG_5.name, tmp_path)
    rereads = [r for r in caplog.records if "reading it again" in r.getMessage()]
    assert [r.getMessage().split()[2] for r in rereads] == ["attempt=1", "attempt=2"]
    assert not (tmp_path / "RECOVERYXLOG").exists()
