"""The data the tools back up: pgbench tables, or a mix that compresses like real tables.

pgbench's tables are mostly blank-padded and compress about 10x with gzip,
which flatters every tool; real tables compress 3-4x. The mixed data set has
integers, timestamps, numbers, words from a vocabulary, JSON documents with a
random token, and three indexes, and comes out at about 3.5x with gzip -6
(measured on a sample of its files and printed). The same row generator
produces the WAL bursts of the archiving and PITR measurements, so the WAL
compresses like the data.

Rows are generated in SQL into a temporary pool (about 20 MiB; word lookups
are slow), then copied out of it with fresh integers, timestamps, amounts and
JSON tokens: about 40 MiB/s on two cores instead of 6. Repeats of a note are
20 MiB apart, far beyond the window of gzip (32 KiB) or zstd -3 (a few MiB).
Must not import janua_backup.
"""

from __future__ import annotations

import gzip
import random
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from localstack import PgCluster, as_postgres

if TYPE_CHECKING:
    import psycopg

MIB = 1024 * 1024
SAMPLE_BYTES = 48 * MIB  # compressed with gzip -6 to report the ratio
_POOL_ROWS = 40_000  # about 20 MiB
_ROW_BYTES = 700  # a row of the mixed table with its share of the indexes, roughly

# Parameters: words, cities, statuses (text[]) and rows. One row ~ 500 bytes.
_POOL_SQL = """
INSERT INTO pg_temp.pool (status, note, doc)
SELECT (%(statuses)s::text[])[1 + (random() * 5)::int],
       array_to_string(ARRAY(SELECT (%(words)s::text[])[1 + (random() * 1999)::int]
                             FROM generate_series(1, 18 + g %% 23)), ' '),
       jsonb_build_object(
           'sku', 'SKU-' || lpad(((random() * 60000)::int)::text, 6, '0'),
           'qty', 1 + (random() * 9)::int,
           'gift', random() < 0.1,
           'city', (%(cities)s::text[])[1 + (random() * 199)::int],
           'zip', lpad(((random() * 99999)::int)::text, 5, '0'),
           'tags', ARRAY(SELECT (%(words)s::text[])[1 + (random() * 1999)::int]
                         FROM generate_series(1, 1 + g %% 4)))
FROM generate_series(1, %(rows)s) AS g
"""
# Copies the pool into {table} with fresh values where real rows differ most.
_COPY_SQL = """
INSERT INTO {table} (customer_id, created_at, status, amount, note, doc)
SELECT (random() * 200000)::int,
       timestamptz '2024-01-01 00:00:00+00' + random() * interval '700 days',
       status, round((random() * 2000)::numeric, 2), note,
       doc || jsonb_build_object('ref', substr(md5(random()::text), 1, 12))
FROM pg_temp.pool LIMIT %(rows)s
"""
_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS {name} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id int NOT NULL,
    created_at timestamptz NOT NULL,
    status text NOT NULL,
    amount numeric(12, 2),
    note text,
    doc jsonb
)
"""
_STATUSES = ["new", "paid", "packed", "shipped", "delivered", "returned"]


@dataclass(frozen=True, slots=True)
class Dataset:
    name: str  # "pgbench" or "mixed"
    dbname: str
    size_bytes: int  # pg_database_size of the data's database after loading
    cluster_bytes: int  # sum of pg_database_size over all databases (what is backed up)
    gzip_ratio: float  # raw / gzip -6 bytes of a sample of the data's relation files
    load_s: float


@dataclass(frozen=True, slots=True)
class Burst:
    first_segment: str
    last_segment: str  # the segment pg_switch_wal() closed: the last one to archive
    segments: int
    wal_bytes: int


def _vocabulary(seed: int, count: int, syllables: tuple[int, int]) -> list[str]:
    rng = random.Random(seed)
    onsets = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v"]
    onsets += ["w", "z", "br", "ch", "cl", "dr", "fr", "gr", "pl", "pr", "sh", "st", "th", "tr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ie", "oo", "ou"]
    codas = ["", "", "", "n", "r", "s", "t", "l", "nd", "st", "ck"]
    words: set[str] = set()
    while len(words) < count:
        n = rng.randint(*syllables)
        stem = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(n))
        words.add(stem + rng.choice(codas))
    return sorted(words)


WORDS = _vocabulary(1, 2000, (1, 4))
CITIES = [w.capitalize() for w in _vocabulary(2, 200, (2, 3))]


def _create_table(conn: psycopg.Connection[Any], table: str, *, indexes: bool) -> None:
    conn.execute(_TABLE_SQL.format(name=table))
    if indexes:
        conn.execute(f"CREATE INDEX ON {table} (customer_id, created_at)")
        conn.execute(f"CREATE INDEX ON {table} (status, amount)")


def _make_pool(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "CREATE TEMP TABLE pool (status text, note text, doc jsonb) ON COMMIT PRESERVE ROWS"
    )
    conn.execute(
        _POOL_SQL, {"words": WORDS, "cities": CITIES, "statuses": _STATUSES, "rows": _POOL_ROWS}
    )


def load_mixed(cluster: PgCluster, dbname: str, size_mib: int) -> None:
    """A new database dbname with the mixed table filled to about size_mib."""
    cluster.sql(f"CREATE DATABASE {dbname}")
    target = size_mib * MIB
    with cluster.connect(dbname) as conn:
        _create_table(conn, "orders", indexes=True)
        _make_pool(conn)
        size_sql = "SELECT pg_database_size(current_database()) - pg_total_relation_size('pool')"
        size = start = int(conn.execute(size_sql).fetchone()[0])  # type: ignore[index]
        rows = 0
        while size < target:
            # the last batch only as many rows as are missing, at the size a row took so far
            per_row = (size - start) / rows if rows else _ROW_BYTES
            batch = max(1000, min(_POOL_ROWS, int((target - size) / per_row)))
            conn.execute(_COPY_SQL.format(table="orders"), {"rows": batch})
            rows += batch
            size = int(conn.execute(size_sql).fetchone()[0])  # type: ignore[index]
        conn.execute("DROP TABLE pool")
        conn.execute("VACUUM ANALYZE orders")


def load_pgbench(cluster: PgCluster, dbname: str, scale: int) -> None:
    """pgbench -i -s scale into a new database (pgbench's own tables and indexes)."""
    cluster.sql(f"CREATE DATABASE {dbname}")
    argv = as_postgres(
        [str(cluster.bindir / "pgbench"), "-i", "-q", "-s", str(scale), "-h",
         str(cluster.socket_dir), "-p", str(cluster.port), "-U", "postgres", dbname]
    )  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, cwd="/", check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench -i failed: {done.stderr.strip()}")


def wal_burst(cluster: PgCluster, dbname: str, segments: int) -> Burst:
    """At least `segments` full WAL segments of mixed rows, one commit per ~20 MiB.

    The rows go to a table with only its primary key, truncated afterwards, so the
    data set's size does not grow from one round to the next. Ends with
    pg_switch_wal(): the returned last segment is complete and ready to archive.
    """
    with cluster.connect(dbname) as conn:
        _create_table(conn, "wal_burst", indexes=False)
        _make_pool(conn)
        start_lsn, first = conn.execute(
            "SELECT pg_current_wal_lsn(), pg_walfile_name(pg_current_wal_lsn())"
        ).fetchone()  # type: ignore[misc]
        while True:
            conn.execute(_COPY_SQL.format(table="wal_burst"), {"rows": _POOL_ROWS})
            (current,) = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()  # type: ignore[misc]
            if segment_distance(first, current) + 1 >= segments:
                break
        conn.execute("TRUNCATE wal_burst")
        conn.execute("DROP TABLE pool")
        last, wal_bytes = conn.execute(
            "SELECT pg_walfile_name(pg_switch_wal()), pg_current_wal_lsn() - %s::pg_lsn",
            (start_lsn,),
        ).fetchone()  # type: ignore[misc]
    return Burst(first, last, segment_distance(first, last) + 1, int(wal_bytes))


def segment_distance(first: str, last: str) -> int:
    """Segments from first to last on one timeline (16 MiB segments: 256 per log id)."""

    def number(name: str) -> int:
        return int(name[8:16], 16) * 256 + int(name[16:24], 16)

    return number(last) - number(first)


def database_size(cluster: PgCluster, dbname: str) -> int:
    return int(cluster.sql("SELECT pg_database_size(%s)", (dbname,))[0][0])


def cluster_size(cluster: PgCluster) -> int:
    return int(cluster.sql("SELECT sum(pg_database_size(oid)) FROM pg_database")[0][0])


def gzip_ratio(cluster: PgCluster, dbname: str, sample_bytes: int = SAMPLE_BYTES) -> float:
    """raw / gzip -6 size over up to sample_bytes of the database's relation files.

    Each relation (largest first) contributes an equal slice, so tables and
    indexes both count; CHECKPOINT first so that the files hold the data.
    """
    cluster.sql("CHECKPOINT")
    with cluster.connect(dbname) as conn:
        rels = conn.execute(
            "SELECT pg_relation_filepath(c.oid) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i', 't')"
            " AND pg_relation_size(c.oid) > 0 ORDER BY pg_relation_size(c.oid) DESC"
        ).fetchall()
    if not rels:
        return 0.0
    slice_bytes = max(MIB, sample_bytes // len(rels))
    raw = packed = 0
    for (relpath,) in rels:
        with (cluster.pgdata / relpath).open("rb") as handle:
            data = handle.read(slice_bytes)
        raw += len(data)
        packed += len(gzip.compress(data, compresslevel=6))
        if raw >= sample_bytes:
            break
    return raw / packed if packed else 0.0
