"""janua-backup and pgBackRest, driven through their command lines with the same settings.

Same S3 server over https verified against the same CA, same codec and level
(gzip 6, or zstd 3 = pgBackRest's zst default), same parallelism (janua
[backup] jobs and restore --jobs = pgBackRest process-max), same look-ahead
for recovery (janua prefetch_segments 8 = pgBackRest archive-get-queue-max
128 MiB). Each tool has its own bucket and, per codec, its own repository in
it. Every command runs as the postgres OS user, as archive_command and
restore_command do. The third tool, barman-cloud, is in barman.py; Tool is
what the phases drive. Must not import janua_backup (it reads the installed
package's source only to tell which features exist).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from localstack import HOST, PgCluster, SeaweedServer, write_private

from benchlib.procmon import Measured, chown_tree, run

SEGMENT_BYTES = 16 * 1024 * 1024
CODECS = ("gzip", "zstd")
LEVELS = {"gzip": 6, "zstd": 3}
PGBACKREST_CODECS = {"gzip": "gz", "zstd": "zst"}
STANZA = "bench"


@dataclass(frozen=True, slots=True)
class Site:
    """What both tools are pointed at: one cluster, one S3 server, one work directory."""

    home: Path  # readable by postgres: configs, spools, logs
    s3: SeaweedServer
    cluster: PgCluster
    process_max: int

    @property
    def s3_port(self) -> int:
        return int(self.s3.endpoint_url.rsplit(":", 1)[1])


@dataclass(frozen=True, slots=True)
class BackupRun:
    measured: Measured
    label: str
    stored_bytes: int


def _pg_time(moment: datetime) -> str:
    return moment.isoformat(sep=" ")


def bucket_bytes(s3: SeaweedServer, bucket: str, prefix: str) -> int:
    client = s3.client()
    try:
        total = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            total += sum(obj["Size"] for obj in page.get("Contents", []))
        return total
    finally:
        client.close()


class Janua:
    name = "janua"
    bucket = "bench-janua"
    backup_codecs: tuple[str, ...] = CODECS

    def __init__(self, site: Site) -> None:
        self.site = site
        self.exe = Path(sys.executable).parent / "janua-backup"
        self.dir = site.home / "janua"
        self.dir.mkdir(exist_ok=True)
        help_text = run([str(self.exe), "backup", "--help"], sample=False).check().stdout
        self.full_flag = ["--type", "full"] if "--type" in help_text else []
        self.features = _janua_features()

    def _config(self, codec: str, *, sync: bool = False) -> Path:
        return self.dir / (f"{codec}-sync.toml" if sync else f"{codec}.toml")

    def prepare(self, codec: str) -> None:
        site = self.site
        for sync in (False, True):
            text = f"""[repository]
url = "s3://{self.bucket}/{codec}"

[s3]
endpoint = "{site.s3.endpoint_url}"
region = "{site.s3.region}"
access_key_id = "{site.s3.access_key_id}"
secret_access_key = "{site.s3.secret_access_key}"
path_style = true
verify_tls = true
ca_bundle = "{site.s3.ca_file}"

[compression]
codec = "{codec}"
level = {LEVELS[codec]}

[postgres]
pgdata = "{site.cluster.pgdata}"
dsn = "{site.cluster.dsn}"

[backup]
jobs = {site.process_max}

[wal]
archive_async = {"false" if sync else "true"}
async_jobs = {site.process_max}
prefetch_segments = 8
"""
            path = self._config(codec, sync=sync)
            write_private(path, text)
        chown_tree(self.dir)

    def archive_command(self, codec: str) -> str:
        """What ``janua-backup archive-command`` prints (its shell hand-over with async
        pushes), as a user sets it; a plain ``wal-push %p`` for versions without it."""
        plain = f"{self.exe} --config {self._config(codec)} wal-push %p"
        if not self.features["archive_command"]:
            return plain
        printed = run([str(self.exe), "--config", str(self._config(codec)), "archive-command"],
                      sample=False).check().stdout.strip()  # fmt: skip
        value = printed.removeprefix("archive_command = ")
        return value[1:-1].replace("''", "'").replace("\\\\", "\\")

    def backup(self, codec: str) -> BackupRun:
        argv = [str(self.exe), "--config", str(self._config(codec)), "backup", "--json"]
        measured = run([*argv, *self.full_flag]).check()
        label = json.loads(measured.stdout)["backup_id"]
        stored = bucket_bytes(self.site.s3, self.bucket, f"{codec}/backups/{label}/")
        return BackupRun(measured, label, stored)

    def restore(
        self, codec: str, label: str, pgdata: Path, target_time: datetime | None = None
    ) -> Measured:
        argv = [str(self.exe), "--config", str(self._config(codec)), "restore"]
        argv += [
            "--pgdata",
            str(pgdata),
            "--backup-id",
            label,
            "--jobs",
            str(self.site.process_max),
        ]
        if target_time is None:
            argv += ["--target", "immediate"]
        else:
            argv += ["--target-time", target_time.isoformat()]
        return run(argv).check()

    def push_by_hand(self, codec: str, warmup: Path, segment: Path, slot: str) -> Measured:
        """Time one `wal-push` of segment into a fresh repository path (warmed up by one push)."""
        argv = [str(self.exe), "--config", str(self._config(codec, sync=True))]
        argv += ["--repo", f"s3://{self.bucket}/push/{codec}/{slot}", "wal-push"]
        run([*argv, str(warmup)], sample=False).check()
        return run([*argv, str(segment)]).check()

    def clean_spool(self, codec: str) -> None:
        """Nothing to do: janua's spool lives in the data directory (pg_wal/.janua-spool)."""

    def notes(self, codec: str, metric: str) -> str:
        """Why a number does not show janua-backup at its best, if it does not."""
        if metric.startswith("drain") and not self.features["archive_async"]:
            return "feature absent: [wal] archive_async (pushed one segment per archive_command)"
        if metric == "pitr_s" and not self.features["prefetch"]:
            return "feature absent: [wal] prefetch_segments (one segment per restore_command)"
        return ""


def _janua_features() -> dict[str, bool]:
    """Which features the installed janua-backup has, from its source text (not imported)."""
    spec = importlib.util.find_spec("janua_backup")
    roots = list(spec.submodule_search_locations or []) if spec else []
    sources = [
        p.read_text(errors="replace")
        for root in roots
        for p in Path(root).rglob("*.py")
        if p.name != "config.py"
    ]

    def uses(setting: str) -> bool:
        return any(setting in text for text in sources)

    return {
        "archive_async": uses("archive_async"),
        "prefetch": uses("prefetch_segments"),
        "archive_command": uses('"archive-command"'),
    }


class PgBackRest:
    name = "pgbackrest"
    bucket = "bench-pgbackrest"
    backup_codecs: tuple[str, ...] = CODECS

    def __init__(self, site: Site) -> None:
        self.site = site
        self.exe = shutil.which("pgbackrest") or "pgbackrest"
        self.dir = site.home / "pgbackrest"
        self.dir.mkdir(exist_ok=True)
        self.version = run([self.exe, "version"], sample=False).check().stdout.strip()

    def _config(self, codec: str) -> Path:
        return self.dir / f"{codec}.conf"

    def _spool(self, codec: str) -> Path:
        return self.dir / codec / "spool"

    def _base(self, codec: str) -> list[str]:
        return [self.exe, f"--config={self._config(codec)}", f"--stanza={STANZA}"]

    def prepare(self, codec: str) -> None:
        site = self.site
        work = self.dir / codec
        for sub in ("spool", "log", "lock"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        cluster = site.cluster
        text = f"""[global]
repo1-type=s3
repo1-path=/{codec}
repo1-s3-bucket={self.bucket}
repo1-s3-endpoint={HOST}
repo1-storage-port={site.s3_port}
repo1-s3-region={site.s3.region}
repo1-s3-key={site.s3.access_key_id}
repo1-s3-key-secret={site.s3.secret_access_key}
repo1-s3-uri-style=path
repo1-storage-ca-file={site.s3.ca_file}
repo1-retention-full=9999999
compress-type={PGBACKREST_CODECS[codec]}
compress-level={LEVELS[codec]}
process-max={site.process_max}
start-fast=y
archive-async=y
archive-get-queue-max={8 * SEGMENT_BYTES}
spool-path={work / "spool"}
log-path={work / "log"}
lock-path={work / "lock"}
log-level-console=info
log-level-file=info

[{STANZA}]
pg1-path={cluster.pgdata}
pg1-port={cluster.port}
pg1-socket-path={cluster.socket_dir}
pg1-user=postgres
"""
        write_private(self._config(codec), text)
        chown_tree(self.dir)
        run([*self._base(codec), "stanza-create"], sample=False).check()

    def archive_command(self, codec: str) -> str:
        return f"{' '.join(self._base(codec))} archive-push %p"

    def backup(self, codec: str) -> BackupRun:
        measured = run([*self._base(codec), "backup", "--type=full"]).check()
        info = run([*self._base(codec), "info", "--output=json"], sample=False).check()
        label = json.loads(info.stdout)[0]["backup"][-1]["label"]
        prefix = f"{codec}/backup/{STANZA}/{label}/"
        return BackupRun(measured, label, bucket_bytes(self.site.s3, self.bucket, prefix))

    def restore(
        self, codec: str, label: str, pgdata: Path, target_time: datetime | None = None
    ) -> Measured:
        argv = [*self._base(codec), f"--pg1-path={pgdata}", f"--set={label}"]
        if target_time is None:
            argv += ["--type=immediate"]
        else:
            argv += ["--type=time", f"--target={_pg_time(target_time)}"]
        return run([*argv, "--target-action=promote", "restore"]).check()

    def push_by_hand(self, codec: str, warmup: Path, segment: Path, slot: str) -> Measured:
        """Time one sync `archive-push` into a fresh repository path (stanza-create, warm-up)."""
        argv = [*self._base(codec), f"--repo1-path=/push/{codec}/{slot}"]
        run([*argv, "stanza-create"], sample=False).check()
        push = [*argv, "--no-archive-async", "archive-push"]
        run([*push, str(warmup)], sample=False).check()
        return run([*push, str(segment)]).check()

    def clean_spool(self, codec: str) -> None:
        """Empty the archive-get queue so that a round never finds segments of an earlier one."""
        incoming = self._spool(codec) / "archive" / STANZA / "in"
        if incoming.exists():
            shutil.rmtree(incoming)

    def notes(self, codec: str, metric: str) -> str:
        return ""


class Tool(Protocol):
    """What the phases drive: Janua, PgBackRest and barman.Barman."""

    name: str
    bucket: str
    backup_codecs: tuple[str, ...]  # codecs its full backup can use; others are "n/a"

    def prepare(self, codec: str) -> None: ...

    def archive_command(self, codec: str) -> str: ...

    def backup(self, codec: str) -> BackupRun: ...

    def restore(
        self, codec: str, label: str, pgdata: Path, target_time: datetime | None = None
    ) -> Measured: ...

    def push_by_hand(self, codec: str, warmup: Path, segment: Path, slot: str) -> Measured: ...

    def clean_spool(self, codec: str) -> None: ...

    def notes(self, codec: str, metric: str) -> str: ...
