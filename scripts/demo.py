"""The demo behind scripts/demo: archive, back up, change, restore to a point in time, verify.

It drives janua-backup through its CLI exactly as an operator would, against a
real PostgreSQL and a real S3 server started here, and shows that the restore
brings back exactly the rows committed before the target time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from localstack import (
    PgCluster,
    SeaweedServer,
    archiving_settings,
    chown_to_postgres,
    free_port,
    make_postgres_dir,
    write_private,
)

EXE = Path(sys.executable).parent / "janua-backup"


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def janua(config: Path, *args: str) -> str:
    print(f"$ janua-backup {' '.join(args)}", flush=True)
    done = subprocess.run(
        [str(EXE), "--config", str(config), *args], text=True, capture_output=True, check=False
    )
    sys.stdout.write(done.stdout)
    sys.stdout.write(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"demo: janua-backup {args[0]} failed with exit {done.returncode}")
    return done.stdout


def wait_archived(cluster: PgCluster) -> None:
    (name,) = cluster.sql("SELECT pg_walfile_name(pg_switch_wal())")[0]
    for _ in range(300):
        (last,) = cluster.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")[0]
        if last and last[:24] >= name:
            return
        time.sleep(0.2)
    raise SystemExit(f"demo: {name} was not archived")


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="janua-demo-", dir="/tmp"))
    base.chmod(0o755)
    clusters: list[PgCluster] = []
    try:
        step("starting a local S3 server (SeaweedFS) and a scratch PostgreSQL 15")
        s3 = SeaweedServer(base / "s3")
        s3.start()
        s3.create_bucket("janua-demo")
        config = base / "janua.toml"
        cluster_home = make_postgres_dir(base / "pg", 0o755)
        write_private(
            config,
            '[repository]\nurl = "s3://janua-demo/main"\n\n'
            f'[s3]\nendpoint = "{s3.endpoint_url}"\nregion = "{s3.region}"\n'
            f'access_key_id = "{s3.access_key_id}"\n'
            f'secret_access_key = "{s3.secret_access_key}"\n\n'
            '[compression]\ncodec = "gzip"\n\n'
            f'[postgres]\npgdata = "{cluster_home / "data"}"\n',
        )
        chown_to_postgres(config)
        primary = PgCluster.initdb(
            cluster_home / "data",
            port=free_port(),
            socket_dir=base / "sock",
            settings=archiving_settings(f"{EXE} --config {config} wal-push %p"),
        )
        clusters.append(primary)
        primary.start()
        with config.open("a") as handle:
            handle.write(f'dsn = "{primary.dsn}"\n')

        step("creating a table and taking a base backup")
        primary.sql("CREATE TABLE orders (id int PRIMARY KEY, item text)")
        for i in range(1, 4):
            primary.sql("INSERT INTO orders (id, item) VALUES (%s, %s)", (i, f"order {i}"))
        janua(config, "backup")

        step("more changes, one transaction each; then the incident: a bad DELETE")
        for i in range(4, 9):
            primary.sql("INSERT INTO orders (id, item) VALUES (%s, %s)", (i, f"order {i}"))
            time.sleep(0.05)
        (good_until,) = primary.sql(
            "SELECT pg_xact_commit_timestamp(xmin) FROM orders WHERE id = %s", (8,)
        )[0]
        time.sleep(0.2)
        primary.sql("DELETE FROM orders")
        wait_archived(primary)
        target = (good_until.astimezone(UTC)).isoformat().replace("+00:00", "Z")
        print(f"last good commit at {target}; the DELETE came after it")
        janua(config, "list")

        step(f"restoring to {target} into a new data directory")
        restored_dir = make_postgres_dir(base / "restored", 0o700)
        janua(config, "restore", "--pgdata", str(restored_dir), "--target-time", target)
        restored = PgCluster(restored_dir, port=free_port(), socket_dir=base / "sock2")
        clusters.append(restored)
        restored.configure({"archive_mode": "off"})
        restored.start()
        for _ in range(600):
            if not restored.sql("SELECT pg_is_in_recovery()")[0][0]:
                break
            time.sleep(0.2)

        step("comparing rows")
        before = [r[0] for r in restored.sql("SELECT id FROM orders ORDER BY id")]
        now = primary.sql("SELECT count(*) FROM orders")[0][0]
        print(f"primary after the DELETE: {now} rows")
        print(f"restored to {target}: rows {before}")
        if before != list(range(1, 9)):
            print("demo: FAILED: the restore did not bring back orders 1-8", file=sys.stderr)
            return 1
        print("the point-in-time restore brought back exactly the 8 orders committed before it")

        step("proving it again, unattended: a restore drill and a repository check")
        policy = base / "policy.toml"
        policy.write_text(
            '[verify]\ntimeout_s = 300\n\n[[verify.checks]]\nname = "orders before the DELETE"\n'
            'database = "postgres"\nquery = "SELECT count(*) FROM orders"\nmin = 8\n'
        )
        janua(config, "verify", "--policy", str(policy), "--target-time", target, "--amcheck")
        janua(config, "verify", "--repository-only")
        janua(config, "list")
        print("\nOK: backup, point-in-time restore and verification all passed.")
        return 0
    finally:
        for cluster in reversed(clusters):
            try:
                cluster.stop("immediate")
            except Exception as exc:
                print(f"demo: could not stop {cluster}: {exc}", file=sys.stderr)
        if "s3" in locals():
            s3.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
