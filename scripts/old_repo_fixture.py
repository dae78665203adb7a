"""The driver behind scripts/make-old-repo-fixture: an old release writes a small repository.

A real PostgreSQL 15 cluster (1 MiB WAL segments, to keep the archive small)
archives into a file:// repository through the OLD janua-backup given by --exe
(passphrase encryption with the legacy fixed-salt KDF, gzip). It takes a full
backup, adds rows, takes an incremental backup, adds two more batches, and
switches WAL so every row is in the archive. The repository goes into one
tarball and the rows a restore must bring back (to the end, and to a time
between two batches before and after the incremental) into a JSON file beside
it: tests/integration/test_old_format.py restores it with the current code.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from localstack import (
    PgCluster,
    archiving_settings,
    chown_to_postgres,
    free_port,
    make_postgres_dir,
    write_private,
)

PASSPHRASE = "old-format fixture passphrase (test only)"
NAME = "old-repo-{commit}"
SMALL_SETTINGS = {
    "shared_buffers": "16MB",
    "min_wal_size": "4MB",
    "max_wal_size": "32MB",
    "max_connections": "20",
}


def janua(exe: Path, config: Path, *args: str) -> str:
    done = subprocess.run(
        [str(exe), "--config", str(config), *args],
        capture_output=True, text=True, cwd="/", check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(
            f"old-repo-fixture: janua-backup {' '.join(args)} failed with exit "
            f"{done.returncode}\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def switch_and_wait_archived(cluster: PgCluster) -> str:
    (name,) = cluster.sql("SELECT pg_walfile_name(pg_switch_wal())")[0]
    for _ in range(600):
        (last,) = cluster.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")[0]
        if last and last[:24] >= name:
            return str(name)
        time.sleep(0.2)
    raise SystemExit(f"old-repo-fixture: {name} was not archived")


def insert_rows(cluster: PgCluster, first: int, count: int) -> list[tuple[int, datetime]]:
    """One row per transaction, so that a target time can fall between two of them."""
    for i in range(first, first + count):
        cluster.sql("INSERT INTO items (id, note) VALUES (%s, %s)", (i, f"row {i}"))
        time.sleep(0.05)
    rows = cluster.sql(
        "SELECT id, pg_xact_commit_timestamp(xmin) FROM items"
        " WHERE id >= %s AND id < %s ORDER BY id",
        (first, first + count),
    )
    return [(int(r[0]), r[1]) for r in rows]


def between(before: datetime, after: datetime) -> str:
    assert before < after, (before, after)
    middle = before + (after - before) / 2
    return middle.astimezone(UTC).isoformat().replace("+00:00", "Z")


def build(exe: Path, base: Path) -> dict[str, Any]:
    repo_dir = make_postgres_dir(base / "repo", 0o700)
    home = make_postgres_dir(base / "home", 0o755)
    config = home / "janua.toml"
    pgdata = home / "data"

    def write_config(dsn: str = "") -> None:
        text = (
            f'[repository]\nurl = "file://{repo_dir}"\n\n[compression]\ncodec = "gzip"\n\n'
            f'[encryption]\npassphrase = "{PASSPHRASE}"\n\n[postgres]\npgdata = "{pgdata}"\n'
        )
        write_private(config, text + (f'dsn = "{dsn}"\n' if dsn else ""))
        chown_to_postgres(config)

    write_config()
    cluster = PgCluster.initdb(
        pgdata,
        port=free_port(),
        socket_dir=base / "sock",
        settings={**archiving_settings(f"{exe} --config {config} wal-push %p"), **SMALL_SETTINGS},
        initdb_args=["--wal-segsize=1"],
    )
    cluster.start()
    try:
        write_config(cluster.dsn)
        cluster.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
        insert_rows(cluster, 1, 5)
        full = json.loads(janua(exe, config, "backup", "--json"))
        batch_b = insert_rows(cluster, 6, 5)
        incr = json.loads(janua(exe, config, "backup", "--type", "incr", "--json"))
        batch_c = insert_rows(cluster, 11, 5)
        time.sleep(0.5)
        batch_d = insert_rows(cluster, 16, 5)
        switch_and_wait_archived(cluster)
        (version,) = cluster.sql("SHOW server_version")[0]
        (segment_size,) = cluster.sql("SHOW wal_segment_size")[0]
        rows = [[int(i), str(n)] for i, n in cluster.sql("SELECT id, note FROM items ORDER BY id")]
    finally:
        cluster.stop("fast")
    listing = json.loads(janua(exe, config, "list", "--json"))
    janua(exe, config, "verify", "--repository-only")
    assert [b["backup_id"] for b in listing["backups"]] == [full["backup_id"], incr["backup_id"]]
    assert rows == [[i, f"row {i}"] for i in range(1, 21)], rows
    return {
        "passphrase": PASSPHRASE,
        "codec": "gzip",
        "postgresql": str(version),
        "wal_segment_size": str(segment_size),
        "backups": [
            {"backup_id": full["backup_id"], "type": "full"},
            {"backup_id": incr["backup_id"], "type": "incr"},
        ],
        "rows": rows,
        "targets": [
            # rows 6-8 are in the WAL after the full backup, before the incremental
            {"time": between(batch_b[2][1], batch_b[3][1]), "backup_id": full["backup_id"],
             "ids": list(range(1, 9))},
            # rows 11-15 are in the WAL after the incremental; 16-20 came later
            {"time": between(batch_c[-1][1], batch_d[0][1]), "backup_id": incr["backup_id"],
             "ids": list(range(1, 16))},
        ],
    }  # fmt: skip


def pack(repo_dir: Path, tarball: Path) -> None:
    """The repository as it was written, modification times included: the restore window
    ends at the newest WAL object's time, so a copy dated otherwise refuses valid targets."""
    tarball.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["tar", "-C", str(repo_dir), "--sort=name", "--owner=0", "--group=0", "--numeric-owner",
         "--mode=u+rwX,go-rwx", "-cf", str(tarball.with_suffix("")), "."],
        check=True,
    )  # fmt: skip
    subprocess.run(["gzip", "-9", "-n", "-f", str(tarball.with_suffix(""))], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--exe", required=True, type=Path, help="the OLD janua-backup program")
    parser.add_argument("--commit", required=True, help="the commit it was installed from")
    parser.add_argument("--out", required=True, type=Path, help="directory for the fixture")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="janua-old-repo-", dir="/tmp"))
    base.chmod(0o755)
    try:
        expected = build(args.exe, base)
        version = subprocess.run(
            [str(args.exe), "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        name = NAME.format(commit=args.commit)
        tarball = args.out / f"{name}.tar.gz"
        pack(base / "repo", tarball)
        meta = {"made_with": f"{version} (commit {args.commit})", "tarball": tarball.name}
        fields = {**meta, **expected}  # one line per field: short, and a diff reads well
        lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in fields.items()]
        (args.out / f"{name}.json").write_text("{\n" + ",\n".join(lines) + "\n}\n")
        print(f"old-repo-fixture: wrote {tarball} ({tarball.stat().st_size} bytes)")
        return 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
