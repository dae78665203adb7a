"""Backup, wal-push, restore and verify --repo through a proxy that loses answers.

``faultproxy`` sits between janua-backup and SeaweedFS and, at a seeded rate,
resets the connection after the store served the request, answers 500 after a
successful store, or cuts a response body in half. Every run must either
succeed exactly (a backup listed, a segment stored byte for byte, a restore
with exactly the rows, a check that passes) or fail with a clear exit code;
nothing may be lost and nothing reported failed that succeeded. Each run is a
few seconds of traffic; seeds make the faults repeatable.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from janua_backup.errors import ObjectExists
from janua_backup.storage.s3 import S3Location, S3Storage
from tests.integration import janua
from tests.integration.faultproxy import FaultProxy, Request, writes
from tests.integration.janua import RepoSpec
from tests.integration.test_pitr import s3_spec
from tests.unit.storage.contract import BIG_BYTES, MIB, chunked, pattern, read

if TYPE_CHECKING:
    from tests.conftest import S3Server


def once_each(aimed: Callable[[Request], bool | str]) -> Callable[[Request], bool | str]:
    """Aim at the first attempt of every distinct request ``aimed`` picks: each write's
    answer is lost once (its retry gets through), so every create meets its own object."""
    seen: set[tuple[str, str]] = set()
    lock = threading.Lock()

    def aim(request: Request) -> bool | str:
        with lock:
            first = (request.method, request.target) not in seen
            seen.add((request.method, request.target))
        return first and aimed(request)

    return aim


LOST = ("reset", "error500")  # random faults: the driver retries the request


def cut_first_read_of(*markers: str) -> Callable[[Request], bool | str]:
    """The first GET of every object whose key holds one of ``markers`` is cut in half
    (a read that dies mid-body: re-read from the start); every request may also get a
    random lost answer. (Random cuts too would now and then cut all 3 reads of one
    object: a clear failure, as it should be, but not a repeatable test.)"""
    first = once_each(
        lambda r: r.method == "GET" and "?" not in r.target and any(m in r.target for m in markers)
    )
    return lambda request: "truncate" if first(request) else True


# -- the storage driver: a create whose answer was lost (finding 3) ----------------


@pytest.fixture(params=["boto3", "wire"])
def client(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("mode", ["reset", "error500"])
@pytest.mark.parametrize("size", [100, BIG_BYTES])
def test_a_conditional_create_whose_answer_was_lost_succeeds(
    s3_server: S3Server, s3_bucket: str, client: str, mode: str, size: int
) -> None:
    data = pattern(size, seed=size % 7)
    with FaultProxy(
        s3_server.endpoint_url, rate=1.0, seed=1, modes=[mode], aim=once_each(writes)
    ) as proxy:
        storage = S3Storage(
            S3Location(
                bucket=s3_bucket, prefix="lost", endpoint_url=proxy.url, region=s3_server.region,
                access_key_id=s3_server.access_key_id,
                secret_access_key=s3_server.secret_access_key,
                part_size_bytes=5 * MIB, retry_base_delay_s=0.05, quick_start=client == "wire",
            )
        )  # fmt: skip
        try:
            storage.put("obj", chunked(data, MIB), if_absent=True)
            assert proxy.faults[mode] >= 1
            assert read(storage, "obj") == data
            other = bytearray(data)
            other[size // 2] ^= 1
            with pytest.raises(ObjectExists):
                storage.put("obj", chunked(bytes(other), MIB), if_absent=True)
            assert read(storage, "obj") == data
        finally:
            storage.close()


# -- the commands ------------------------------------------------------------------


class Stack:
    """An archiving cluster (archiving straight to SeaweedFS) with one backup, and a
    config whose S3 endpoint is a fault proxy in front of the same server."""

    def __init__(self, factory: Any, exe: Path, spec: RepoSpec) -> None:
        self.factory, self.exe, self.spec = factory, exe, spec
        self.home = factory.empty_dir()
        self.config = self.home / "janua.toml"
        janua.write_config(self.config, spec)
        self.cluster = janua.archiving_cluster(factory, exe, self.config)
        janua.write_config(self.config, spec, pgdata=self.cluster.pgdata, dsn=self.cluster.dsn)
        self.cluster.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
        janua.insert_rows(self.cluster, 1, 5, pause_s=0)

    def through(self, proxy: FaultProxy, name: str = "proxied", url: str | None = None) -> Path:
        path = self.home / f"{name}.toml"
        s3 = dict(self.spec.s3, endpoint=proxy.url)
        spec = replace(self.spec, s3=s3, url=url or self.spec.url)
        janua.write_config(path, spec, pgdata=self.cluster.pgdata, dsn=self.cluster.dsn)
        return path

    def run(self, config: Path, *args: str, cwd: Path | None = None) -> Any:
        return janua.run(self.exe, config, *args, cwd=cwd)

    def listed(self) -> list[str]:
        listing = janua.run_json(self.exe, self.config, "list")
        return [b["backup_id"] for b in listing["backups"]]


@pytest.fixture
def stack(s3_server: S3Server, s3_bucket: str, pg_factory: Any, janua_exe: Path) -> Stack:
    return Stack(pg_factory, janua_exe, s3_spec(s3_server, s3_bucket))


@pytest.fixture
def upstream(s3_server: S3Server) -> str:
    return s3_server.endpoint_url


@pytest.mark.parametrize("seed", [1, 2])
def test_backup_whose_writes_lose_their_answers_succeeds_and_is_listed(
    stack: Stack, upstream: str, seed: int
) -> None:
    # Every write's first answer is lost: the lock record, the marker, each data
    # object and part, the manifest. Before: exit 42 ("held by pid <self>") or 15.
    with FaultProxy(upstream, rate=1.0, seed=seed, modes=("reset", "error500"),
                    aim=once_each(writes)) as proxy:  # fmt: skip
        done = stack.run(stack.through(proxy), "backup", "--json")
    janua.ok(done)
    assert proxy.faults.total() >= 4  # lock, marker, data, manifest at least
    assert stack.listed() == [json.loads(done.stdout)["backup_id"]]
    # The lock was released, not left for the next backup to wait out.
    janua.ok(stack.run(stack.config, "backup"))


def test_wal_push_through_lost_answers_stores_every_segment_exactly(
    stack: Stack, upstream: str, pg_factory: Any
) -> None:
    # A fresh repository (another prefix): the marker and every segment are created
    # through the proxy; PostgreSQL would retry a failed push, but none may fail here.
    url = stack.spec.url.replace("cluster-a", "cluster-p")
    segments = sorted((stack.cluster.pgdata / "pg_wal").glob("0000000100000000000000*"))[:3]
    with FaultProxy(upstream, rate=1.0, seed=3, modes=("reset", "error500"),
                    aim=once_each(writes)) as proxy:  # fmt: skip
        config = stack.through(proxy, "push", url)
        for segment in segments:
            janua.ok(stack.run(config, "wal-push", str(segment), cwd=stack.cluster.pgdata))
    assert proxy.faults.total() >= len(segments)
    direct = stack.home / "direct.toml"
    janua.write_config(direct, replace(stack.spec, url=url))
    out = pg_factory.empty_dir()
    for segment in segments:
        janua.ok(stack.run(direct, "wal-fetch", segment.name, str(out / segment.name), cwd=out))
        assert (out / segment.name).read_bytes() == segment.read_bytes()


@pytest.fixture
def backed_up(stack: Stack) -> Iterator[Stack]:
    janua.run_json(stack.exe, stack.config, "backup")
    janua.insert_rows(stack.cluster, 6, 10, pause_s=0)
    janua.switch_and_wait_archived(stack.cluster)
    yield stack


@pytest.mark.parametrize("seed", [11, 12])
def test_restore_through_a_faulty_network_brings_back_exactly_the_rows(
    backed_up: Stack, upstream: str, pg_factory: Any, seed: int
) -> None:
    # Before: a GET reset or cut mid-body aborted the restore and discarded it.
    stack = backed_up
    target = pg_factory.empty_dir() / "restored"
    aim = cut_first_read_of("/data/")
    with FaultProxy(upstream, rate=0.15, seed=seed, modes=LOST, aim=aim) as proxy:
        config = stack.through(proxy)
        janua.ok(stack.run(config, "restore", "--pgdata", str(target)))
        assert proxy.faults["truncate"] >= 1
        # Recovery fetches its WAL through the same faulty network (restore_command).
        restored = janua.start_restored(pg_factory, target)
        assert janua.ids(restored) == list(range(1, 16))
        restored.stop()


@pytest.mark.parametrize("seed", [21, 22])
def test_verify_repo_through_a_faulty_network_passes(
    backed_up: Stack, upstream: str, seed: int
) -> None:
    # Before: a cut body was reported as a damaged object (exit 40), or a reset
    # mid-body stopped the check (exit 10/11).
    stack = backed_up
    aim = cut_first_read_of("/data/", "/wal/", "/manifest")
    with FaultProxy(upstream, rate=0.15, seed=seed, modes=LOST, aim=aim) as proxy:
        done = stack.run(stack.through(proxy), "verify", "--repository-only")
    assert done.returncode == 0, f"{done.stderr}\nfaults: {proxy.log}"
    assert proxy.faults["truncate"] >= 3
