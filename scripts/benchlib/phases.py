"""The measurements, each several rounds alternating the tools (janua, pgbackrest, barman, ...).

backup   full backup: wall time, throughput over the cluster's size, stored bytes, peak RSS
restore  the files of the newest backup into an empty directory (the command only)
push     one segment pushed by hand into a fresh repository path (sync)
drain    a backlog of N ready segments, from unpausing the archiver until
         pg_stat_archiver reports the last one (janua archive_async, pgBackRest async)
pitr     backup, N segments of WAL with commits, restore to a time near the end,
         then start PostgreSQL: time until promoted (janua prefetch, pgBackRest async get,
         barman-cloud-wal-restore --parallel)

Phases run in this order so that the backups restore measures are of the data
set exactly as loaded; WAL bursts go to a table that is truncated after each.
A tool whose full backup has no such codec (barman-cloud and zstd) sits out
backup and restore of that codec, with a note in the table.
Must not import janua_backup.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from benchlib import datasets, report
from benchlib.report import Results
from benchlib.stack import Stack, wait_quiet
from benchlib.tools import BackupRun, Tool

MIB = 1024 * 1024
PHASES = ("backup", "restore", "push", "drain", "pitr")


@dataclass(frozen=True, slots=True)
class Options:
    rounds: int
    push_repeats: int
    drain_segments: int
    pitr_segments: int


class Bench:
    """One data set on one stack: runs the chosen phases for one codec at a time."""

    def __init__(
        self,
        stack: Stack,
        tools: list[Tool],
        dataset: datasets.Dataset,
        options: Options,
        results: Results,
    ) -> None:
        self.stack = stack
        self.tools = tools
        self.dataset = dataset
        self.options = options
        self.results = results
        self.last_backup: dict[tuple[str, str], str] = {}  # (tool, codec) -> label

    # -- helpers

    def _record(self, codec: str, metric: str, tool: Tool, value: float, round_: int) -> None:
        self.results.add(self.dataset.name, codec, metric, tool.name, round_, value)
        note = tool.notes(codec, metric)
        if note:
            self.results.note(self.dataset.name, codec, metric, tool.name, note)

    def _say(self, text: str) -> None:
        print(f"  [{self.dataset.name}] {text}", flush=True)

    def _rounds(self, count: int, tools: list[Tool] | None = None) -> list[tuple[int, Tool]]:
        chosen = self.tools if tools is None else tools
        return [(r, tool) for r in range(1, count + 1) for tool in chosen]

    def _backing_up(self, codec: str, metrics: tuple[str, ...]) -> list[Tool]:
        """The tools whose full backup has codec; the others get their "n/a" note on metrics."""
        able = []
        for tool in self.tools:
            if codec in tool.backup_codecs:
                able.append(tool)
                continue
            for metric in metrics:
                note = tool.notes(codec, metric)
                if note:
                    self.results.note(self.dataset.name, codec, metric, tool.name, note)
        return able

    def _use(self, tool: Tool, codec: str, *, pausable: bool = False) -> None:
        self.stack.set_archive_command(tool.archive_command(codec), pausable=pausable)

    def _quiet(self) -> None:
        """Let the last tool's detached helpers finish before the next measurement."""
        if not wait_quiet(self.stack.tool_markers, 60):
            self._say("warning: tool processes still running after 60 s")

    def _backup(self, tool: Tool, codec: str) -> BackupRun:
        self._use(tool, codec)
        self.stack.source.sql("CHECKPOINT")  # the backup's own checkpoint then has little to do
        self._quiet()
        done = tool.backup(codec)
        self.last_backup[(tool.name, codec)] = done.label
        return done

    # -- phases

    def backup(self, codec: str) -> None:
        size_mib = self.dataset.cluster_bytes / MIB
        metrics = ("backup_s", "backup_mib_s", "backup_stored_mib", "backup_rss_tree_mib",
                   "backup_rss_proc_mib")  # fmt: skip
        tools = self._backing_up(codec, metrics)
        for r, tool in self._rounds(self.options.rounds, tools):
            done = self._backup(tool, codec)
            m = done.measured
            self._record(codec, "backup_s", tool, m.wall_s, r)
            self._record(codec, "backup_mib_s", tool, size_mib / m.wall_s, r)
            self._record(codec, "backup_stored_mib", tool, done.stored_bytes / MIB, r)
            self._record(codec, "backup_rss_tree_mib", tool, m.peak_tree_rss_bytes / MIB, r)
            self._record(codec, "backup_rss_proc_mib", tool, m.peak_process_rss_bytes / MIB, r)
            self._say(
                f"{codec} backup r{r} {tool.name}: {m.wall_s:.2f} s, "
                f"stored {done.stored_bytes / MIB:.1f} MiB, peak RSS tree "
                f"{m.peak_tree_rss_bytes / MIB:.0f} MiB ({done.label})"
            )

    def restore(self, codec: str) -> None:
        tools = self._backing_up(
            codec, ("restore_s", "restore_rss_tree_mib", "restore_rss_proc_mib")
        )
        for tool in tools:
            if (tool.name, codec) not in self.last_backup:
                self._backup(tool, codec)
        for r, tool in self._rounds(self.options.rounds, tools):
            label = self.last_backup[(tool.name, codec)]
            target = self.stack.empty_dir(f"restore-{tool.name}")
            self._quiet()
            m = tool.restore(codec, label, target)
            shutil.rmtree(target)
            self._record(codec, "restore_s", tool, m.wall_s, r)
            self._record(codec, "restore_rss_tree_mib", tool, m.peak_tree_rss_bytes / MIB, r)
            self._record(codec, "restore_rss_proc_mib", tool, m.peak_process_rss_bytes / MIB, r)
            self._say(
                f"{codec} restore r{r} {tool.name}: {m.wall_s:.2f} s, "
                f"peak RSS tree {m.peak_tree_rss_bytes / MIB:.0f} MiB"
            )

    def _segments_by_hand(self) -> tuple[Path, Path]:
        """Two full segments of this cluster, copied out by a temporary archive_command."""
        folder = self.stack.empty_dir("segments")
        self.stack.set_archive_command(f"cp %p {folder}/%f")
        burst = datasets.wal_burst(self.stack.source, self.dataset.dbname, 3)
        self.stack.wait_archived(burst.last_segment, 300)
        names = sorted(p.name for p in folder.iterdir() if len(p.name) == 24)
        full = [n for n in names if burst.first_segment <= n < burst.last_segment]
        return folder / full[0], folder / full[1]

    def push(self, codec: str) -> None:
        warmup, segment = self._segments_by_hand()
        for r, tool in self._rounds(self.options.push_repeats):
            self._quiet()
            m = tool.push_by_hand(codec, warmup, segment, f"{int(time.time())}-{r}")
            self._record(codec, "push_s", tool, m.wall_s, r)
            self._say(f"{codec} push r{r} {tool.name}: {m.wall_s:.3f} s")

    def drain(self, codec: str) -> None:
        for r, tool in self._rounds(self.options.rounds):
            self._use(tool, codec)
            self.stack.switch_and_wait()  # nothing else left in the queue
            self._quiet()
            self.stack.pause_archiving()
            self._use(tool, codec, pausable=True)
            burst = datasets.wal_burst(
                self.stack.source, self.dataset.dbname, self.options.drain_segments
            )
            ready = self.stack.ready_segments()
            self.stack.resume_archiving()
            seconds = self.stack.wait_archived(burst.last_segment)
            self._use(tool, codec)
            self._record(codec, "drain_s", tool, seconds, r)
            self._record(codec, "drain_seg_per_s", tool, ready / seconds, r)
            self._say(
                f"{codec} drain r{r} {tool.name}: {ready} ready segments in {seconds:.2f} s"
                f" = {ready / seconds:.2f} segments/s"
            )
            self._quiet()

    def pitr(self, codec: str) -> None:
        source = self.stack.source
        source.sql("CREATE TABLE IF NOT EXISTS pitr_marker (tag text PRIMARY KEY)")
        for r, tool in self._rounds(self.options.rounds):
            done = self._backup(tool, codec)
            burst = datasets.wal_burst(source, self.dataset.dbname, self.options.pitr_segments)
            tag = f"{tool.name}-{codec}-{r}-{int(time.time())}"
            target = _commit(self.stack, f"{tag}-target")
            _commit(self.stack, f"{tag}-after")
            last = self.stack.switch_and_wait()
            self._quiet()
            tool.clean_spool(codec)
            pgdata = self.stack.empty_dir(f"pitr-{tool.name}")
            restored = tool.restore(codec, done.label, pgdata, target_time=target)
            seconds, cluster = self.stack.time_recovery(pgdata)
            tags = {row[0] for row in cluster.sql("SELECT tag FROM pitr_marker")}
            if f"{tag}-target" not in tags or f"{tag}-after" in tags:
                raise RuntimeError(f"{tool.name} PITR to {target} came back with {sorted(tags)}")
            self.stack.drop_cluster(cluster)
            segments = datasets.segment_distance(burst.first_segment, last) + 1
            self._record(codec, "pitr_s", tool, seconds, r)
            self._record(codec, "pitr_restore_s", tool, restored.wall_s, r)
            self._say(
                f"{codec} pitr r{r} {tool.name}: replay of ~{segments} segments in "
                f"{seconds:.2f} s (restore {restored.wall_s:.2f} s)"
            )
            self._quiet()

    def run(self, codec: str, phases: list[str]) -> None:
        for tool in self.tools:
            tool.prepare(codec)
        for phase in PHASES:
            if phase in phases:
                getattr(self, phase)(codec)


def _commit(stack: Stack, tag: str) -> datetime:
    """Insert one row in its own transaction; its commit time."""
    with stack.source.connect() as conn:
        conn.execute("INSERT INTO pitr_marker VALUES (%s)", (tag,))
        row = conn.execute(
            "SELECT pg_xact_commit_timestamp(xmin) FROM pitr_marker WHERE tag = %s", (tag,)
        ).fetchone()
    assert row is not None
    moment: datetime = row[0]
    return moment


__all__ = ["PHASES", "Bench", "Options", "report"]
