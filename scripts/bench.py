#!/usr/bin/env python3
"""janua-backup against pgBackRest and barman-cloud on the same data, S3 server and codec.

For each data set (pgbench tables; a mix of text, JSON and indexes that
compresses 3-4x like real tables) it starts one S3 server (SeaweedFS over
https) and one PostgreSQL cluster, gives each tool its own bucket, and
measures full backup, restore, one wal-push by hand, the drain of a backlog
of ready segments and PITR replay, in rounds that alternate the tools. It
prints the medians and the ratios janua/pgBackRest (and janua/barman-cloud
when barman-cloud is measured); docs/benchmarks.md says what each number
means. Not part of the test suite: scripts/bench runs it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import barman, datasets
from benchlib.phases import PHASES, Bench, Options
from benchlib.procmon import CommandFailed, run
from benchlib.report import Results
from benchlib.stack import Closing, Stack
from benchlib.tls import write_tls_files
from benchlib.tools import CODECS, Janua, PgBackRest, Site, Tool
from localstack import StackError

DATASETS = ("pgbench", "mixed")
TOOLS = ("janua", "pgbackrest", "barman")


def _csv(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        wrong = [t for t in items if t not in choices]
        if wrong or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}")
        return items

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__.splitlines()[0] if __doc__ else None
    )
    p.add_argument("--scale", type=int, default=50, help="pgbench scale (default 50, ~780 MiB)")
    p.add_argument("--mixed-mib", type=int, default=790, help="mixed data set size (default 790)")
    p.add_argument("--datasets", type=_csv(DATASETS), default=list(DATASETS), help="pgbench,mixed")
    p.add_argument("--rounds", type=int, default=3, help="rounds per measure and tool (default 3)")
    p.add_argument("--push-repeats", type=int, default=0,
                   help="wal-push by hand per tool (default: max(rounds, 5))")  # fmt: skip
    p.add_argument("--tools", type=_csv(TOOLS), default=None,
                   help="janua,pgbackrest,barman (default: those installed)")  # fmt: skip
    p.add_argument("--codecs", type=_csv(CODECS), default=list(CODECS), help="gzip,zstd")
    p.add_argument("--only", type=_csv(PHASES), default=list(PHASES), help=",".join(PHASES))
    p.add_argument("--drain-segments", type=int, default=65, help="backlog size (default 65)")
    p.add_argument("--pitr-segments", type=int, default=68, help="WAL to replay (default 68)")
    p.add_argument("--process-max", type=int, default=2,
                   help="janua jobs = pgBackRest process-max = barman -J (default 2)")  # fmt: skip
    p.add_argument("--workdir", type=Path, help="default: a new directory under /tmp")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--json", type=Path, help="also write the results to this file")
    args = p.parse_args(argv)
    if args.tools is None:  # barman-cloud only where scripts/bench could install it
        args.tools = [t for t in TOOLS if t != "barman" or barman.installed()]
    return args


def _tools(names: list[str], site: Site) -> list[Tool]:
    tools: list[Tool] = []
    for name in names:
        if name == "janua":
            tools.append(Janua(site))
        elif name == "barman":
            if barman.installed():
                tools.append(barman.Barman(site))
            else:
                print(f"bench: barman-cloud is not in {barman.venv()} (scripts/bench "
                      "installs it): measuring without it", file=sys.stderr)  # fmt: skip
        elif shutil.which("pgbackrest"):
            tools.append(PgBackRest(site))
        else:
            print("bench: pgbackrest is not installed (apt-get install pgbackrest): "
                  "measuring without it", file=sys.stderr)  # fmt: skip
    return tools


def _load(stack: Stack, name: str, args: argparse.Namespace) -> datasets.Dataset:
    cluster = stack.source
    started = time.monotonic()
    if name == "pgbench":
        datasets.load_pgbench(cluster, "bench", args.scale)
    else:
        datasets.load_mixed(cluster, "bench", args.mixed_mib)
    cluster.sql("CHECKPOINT")
    load_s = time.monotonic() - started
    return datasets.Dataset(
        name=name, dbname="bench",
        size_bytes=datasets.database_size(cluster, "bench"),
        cluster_bytes=datasets.cluster_size(cluster),
        gzip_ratio=datasets.gzip_ratio(cluster, "bench"), load_s=load_s,
    )  # fmt: skip


def bench_dataset(name: str, args: argparse.Namespace, base: Path, results: Results) -> None:
    tls = write_tls_files(base / "tls")
    stack = Stack(base / name, tls)
    with Closing(stack):
        buckets = ["bench-janua", "bench-pgbackrest"]
        if "barman" in args.tools:
            buckets.append(barman.Barman.bucket)
        cluster = stack.start(buckets)
        print(f"[{name}] S3 at {stack.s3.endpoint_url}, PostgreSQL on port {cluster.port}")
        dataset = _load(stack, name, args)
        mib = 1024 * 1024
        print(
            f"[{name}] loaded in {dataset.load_s:.0f} s: database {dataset.size_bytes / mib:.0f}"
            f" MiB, cluster {dataset.cluster_bytes / mib:.0f} MiB, gzip -6 ratio of a sample"
            f" {dataset.gzip_ratio:.2f}x",
            flush=True,
        )
        results.datasets[name] = {
            "database_mib": round(dataset.size_bytes / mib, 1),
            "cluster_mib": round(dataset.cluster_bytes / mib, 1),
            "gzip6_ratio_sample": round(dataset.gzip_ratio, 2),
            "scale": args.scale if name == "pgbench" else None,
        }
        site = Site(stack.home, stack.s3, cluster, args.process_max)
        tools = _tools(args.tools, site)
        for tool in tools:
            if isinstance(tool, Janua):
                results.setup["janua_features"] = tool.features
            elif isinstance(tool, PgBackRest):
                results.setup["pgbackrest_version"] = tool.version
            elif isinstance(tool, barman.Barman):
                results.setup["barman_cloud_version"] = tool.version
        options = Options(
            rounds=args.rounds, push_repeats=args.push_repeats or max(args.rounds, 5),
            drain_segments=args.drain_segments, pitr_segments=args.pitr_segments,
        )  # fmt: skip
        bench = Bench(stack, tools, dataset, options, results)
        for codec in args.codecs:
            bench.run(codec, args.only)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C and kill both end in the finally blocks that stop the servers; started
    # with `&` by a script, we would otherwise inherit SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    base = args.workdir or Path(tempfile.mkdtemp(prefix="janua-bench-", dir="/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)  # the postgres user reaches configs, CA and data below it
    results = Results()
    janua_version = run([str(Path(sys.executable).parent / "janua-backup"), "--version"],
                        sample=False).stdout.strip()  # fmt: skip
    results.setup.update(
        {
            "janua_version": janua_version, "cores": _cores(), "host": platform.node(),
            "rounds": args.rounds, "process_max": args.process_max,
            "drain_segments": args.drain_segments, "pitr_segments": args.pitr_segments,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )  # fmt: skip
    print(f"bench: work directory {base}", flush=True)
    status = 0
    try:
        for name in args.datasets:
            bench_dataset(name, args, base, results)
    except KeyboardInterrupt:
        print("\nbench: interrupted; servers stopped", file=sys.stderr)
        status = 130
    except (CommandFailed, StackError, RuntimeError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        status = 1
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"bench: kept {base}", file=sys.stderr)
    if results.samples:
        print("\n" + results.table())
    if args.json:
        results.write_json(args.json)
        print(f"bench: results written to {args.json}")
    return status


def _cores() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    raise SystemExit(main())
