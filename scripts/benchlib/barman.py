"""barman-cloud, the third tool: Barman's cloud commands with the same S3, data and parallelism.

barman-cloud is the baseline the issue wants janua-backup 3x faster than. It
lives in its own virtual environment ($BARMAN_VENV, default /opt/barman-venv,
made by scripts/bench), never in janua-backup's. Each command runs through a
small entry script written into this run's barman/ directory: it sets the S3
credentials, region and CA bundle in the environment (boto3 reads them there;
PostgreSQL's archive_command and restore_command have no environment of
their own) and calls the same main() as the installed console script. So a
barman process is one Python process whose command line names this run's
directory, which is how stack.py tells it apart from anyone else's.

What barman-cloud 3.19 cannot do the way the others do, and what is done:
- barman-cloud-backup has no zstd (gzip, bzip2, snappy, lz4) and no level:
  its gzip is Python's tarfile stream, level 9. Backup and restore with zstd
  are "n/a"; the zstd PITR restores a gzip base backup and replays zstd WAL.
- barman-cloud-wal-archive has no asynchronous mode: the drain is one
  process per segment, as PostgreSQL calls archive_command.
- barman-cloud-restore has no parallelism and writes no recovery settings:
  the PITR writes restore_command, the target and recovery.signal itself.
Must not import janua_backup or barman (it runs in the other venv).
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path

from benchlib.procmon import Measured, chown_tree, run
from benchlib.tools import LEVELS, STANZA, BackupRun, Site, _pg_time, bucket_bytes

DEFAULT_VENV = Path("/opt/barman-venv")
PREFETCH_SEGMENTS = 8  # = janua prefetch_segments = pgBackRest archive-get-queue-max
ENTRY_POINTS = {
    "barman-cloud-backup": "barman.clients.cloud_backup",
    "barman-cloud-backup-list": "barman.clients.cloud_backup_list",
    "barman-cloud-restore": "barman.clients.cloud_restore",
    "barman-cloud-wal-archive": "barman.clients.cloud_walarchive",
    "barman-cloud-wal-restore": "barman.clients.cloud_walrestore",
}
WAL_CODEC_FLAGS = {"gzip": "--gzip", "zstd": "--zstd"}
BACKUP_CODEC = "gzip"  # barman-cloud-backup's only codec of the two


def venv() -> Path:
    return Path(os.environ.get("BARMAN_VENV") or DEFAULT_VENV)


def installed() -> bool:
    return all((venv() / "bin" / name).exists() for name in ENTRY_POINTS)


def _quote(value: str) -> str:
    """A value for postgresql.auto.conf: single quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


class Barman:
    name = "barman"
    bucket = "bench-barman"
    backup_codecs: tuple[str, ...] = (BACKUP_CODEC,)

    def __init__(self, site: Site) -> None:
        self.site = site
        self.dir = site.home / "barman"
        self.bin = self.dir / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        self._write_entry_points()
        out = run([self._exe("barman-cloud-backup"), "--version"], sample=False).check()
        self.version = (out.stdout + out.stderr).strip()

    # -- setup

    def _write_entry_points(self) -> None:
        s3 = self.site.s3
        env = {
            "AWS_ACCESS_KEY_ID": s3.access_key_id,
            "AWS_SECRET_ACCESS_KEY": s3.secret_access_key,
            "AWS_DEFAULT_REGION": s3.region,
            "AWS_CA_BUNDLE": str(s3.ca_file),
            "AWS_EC2_METADATA_DISABLED": "true",
            # no profile files of the postgres user's home: everything is above
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
        python = venv() / "bin" / "python"
        for name, module in ENTRY_POINTS.items():
            script = self.bin / name
            script.write_text(
                f"#!{python}\n"
                f"# {name} with this benchmark run's S3 settings (scripts/benchlib/barman.py)\n"
                "import os\nimport sys\n\n"
                f"os.environ.update({env!r})\n"
                f"from {module} import main\n\n"
                f"sys.argv[0] = {name!r}\n"
                "sys.exit(main())\n"
            )
            script.chmod(0o700)
        chown_tree(self.dir)

    def _exe(self, name: str) -> str:
        return str(self.bin / name)

    def _s3(self) -> list[str]:
        return ["--endpoint-url", self.site.s3.endpoint_url, "--addressing-style", "path"]

    def _url(self, codec: str) -> str:
        return f"s3://{self.bucket}/{codec}"

    def _spool(self, codec: str) -> Path:
        return self.dir / codec / "wal-restore-spool"

    def _wal_archive(self, codec: str, url: str) -> list[str]:
        compress = [WAL_CODEC_FLAGS[codec], "--compression-level", str(LEVELS[codec])]
        return [self._exe("barman-cloud-wal-archive"), *self._s3(), *compress, url, STANZA]

    def prepare(self, codec: str) -> None:
        (self.dir / codec).mkdir(exist_ok=True)
        chown_tree(self.dir)

    def archive_command(self, codec: str) -> str:
        return " ".join([*self._wal_archive(codec, self._url(codec)), "%p"])

    def restore_command(self, codec: str) -> str:
        argv = [self._exe("barman-cloud-wal-restore"), *self._s3()]
        argv += ["--parallel", str(PREFETCH_SEGMENTS), "--spool-dir", str(self._spool(codec))]
        return " ".join([*argv, self._url(codec), STANZA, "%f", "%p"])

    # -- measured commands

    def backup(self, codec: str) -> BackupRun:
        """A full backup, gzip whatever the codec (barman-cloud-backup has no zstd)."""
        cluster = self.site.cluster
        argv = [self._exe("barman-cloud-backup"), *self._s3(), "--gzip"]
        argv += ["--immediate-checkpoint", "--jobs", str(self.site.process_max)]
        argv += ["--host", str(cluster.socket_dir), "--port", str(cluster.port)]
        argv += ["--user", "postgres", self._url(codec), STANZA]
        measured = run(argv).check()
        listing = run(
            [self._exe("barman-cloud-backup-list"), *self._s3(), "--format", "json",
             self._url(codec), STANZA], sample=False,
        ).check()  # fmt: skip
        backups = json.loads(listing.stdout)["backups_list"]
        label = sorted(b["backup_id"] for b in backups)[-1]
        prefix = f"{codec}/{STANZA}/base/{label}/"
        return BackupRun(measured, label, bucket_bytes(self.site.s3, self.bucket, prefix))

    def restore(
        self, codec: str, label: str, pgdata: Path, target_time: datetime | None = None
    ) -> Measured:
        """barman-cloud-restore of the files (timed); for a PITR, then the recovery settings."""
        argv = [self._exe("barman-cloud-restore"), *self._s3(), self._url(codec), STANZA]
        measured = run([*argv, label, str(pgdata)]).check()
        if target_time is not None:
            settings = {
                "restore_command": self.restore_command(codec),
                "recovery_target_time": _pg_time(target_time),
                "recovery_target_action": "promote",
            }
            lines = "".join(f"{k} = {_quote(v)}\n" for k, v in settings.items())
            with (pgdata / "postgresql.auto.conf").open("a") as conf:
                conf.write(f"# scripts/bench: barman-cloud PITR\n{lines}")
            (pgdata / "recovery.signal").touch()
            chown_tree(pgdata)
        return measured

    def push_by_hand(self, codec: str, warmup: Path, segment: Path, slot: str) -> Measured:
        """Time one barman-cloud-wal-archive into a fresh path (warmed up by one push)."""
        argv = self._wal_archive(codec, f"s3://{self.bucket}/push/{codec}/{slot}")
        run([*argv, str(warmup)], sample=False).check()
        return run([*argv, str(segment)]).check()

    def clean_spool(self, codec: str) -> None:
        """Empty wal-restore's spool so that a round never finds segments of an earlier one."""
        shutil.rmtree(self._spool(codec), ignore_errors=True)

    def notes(self, codec: str, metric: str) -> str:
        """What barman-cloud 3.19 does differently from the others, where it shows."""
        if metric.startswith(("backup", "restore")) and codec not in self.backup_codecs:
            return f"n/a: barman-cloud-backup has no {codec} (gzip, bzip2, snappy, lz4 only)"
        if metric in ("backup_s", "backup_stored_mib"):
            return "barman-cloud-backup: gzip level 9 (Python's tarfile stream; no level option)"
        if metric == "restore_s":
            return "barman-cloud-restore: one process, no parallel option"
        if metric.startswith("drain"):
            return "barman-cloud-wal-archive: no async mode, one segment per archive_command"
        if metric.startswith("pitr") and codec not in self.backup_codecs:
            return f"barman: base backup {BACKUP_CODEC} (no {codec} in barman-cloud-backup)"
        return ""
