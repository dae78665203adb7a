"""Run a tool's command and measure it: wall time and the peak memory of its process tree.

Memory: every 50 ms the whole /proc is read (this kernel has no
/proc/<pid>/task/<tid>/children), the descendants of the command are found
by parent pid, and their resident set sizes are summed; the peak of that sum
is the tree's peak, and the peak of any single process is kept too. A
process that lives less than 50 ms between two samples can be missed, and a
process that detaches (double fork, e.g. pgBackRest's async archiver) leaves
the tree. Must not import janua_backup.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from localstack import POSTGRES_USER, running_as_root

POLL_S = 0.05
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
POSTGRES_HOME = "/var/lib/postgresql"


class CommandFailed(RuntimeError):
    """A measured command exited non-zero: the benchmark of that step is void."""


@dataclass(frozen=True, slots=True)
class Measured:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    peak_tree_rss_bytes: int  # max over samples of the sum over the tree
    peak_process_rss_bytes: int  # max over samples and processes

    def check(self) -> Measured:
        if self.returncode != 0:
            tail = "\n".join((self.stdout + self.stderr).strip().splitlines()[-15:])
            raise CommandFailed(f"{' '.join(self.argv[:4])} ... exited {self.returncode}:\n{tail}")
        return self


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, resident pages) for every process we can read."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), int(fields[21]))
    return table


def tree_rss(root: int) -> tuple[int, int]:
    """(sum, max) resident bytes over root and its descendants, now."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total = biggest = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            rss = table[pid][1] * PAGE_BYTES
            total += rss
            biggest = max(biggest, rss)
        todo.extend(children.get(pid, ()))
    return total, biggest


class _Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_tree = 0
        self.peak_process = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            total, biggest = tree_rss(self.pid)
            self.peak_tree = max(self.peak_tree, total)
            self.peak_process = max(self.peak_process, biggest)
            self.done.wait(POLL_S)


def run(
    argv: Sequence[str],
    *,
    as_postgres: bool = True,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 3600,
    sample: bool = True,
) -> Measured:
    """Run argv (as the postgres OS user when we are root) and measure it.

    The command is started with Popen's user/group switch rather than runuser,
    so no wrapper process sits in the tree that is measured.
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "JANUA_"))}
    switch: dict[str, object] = {}
    if as_postgres and running_as_root():
        switch = {"user": POSTGRES_USER, "group": POSTGRES_USER, "extra_groups": []}
        full_env["HOME"] = POSTGRES_HOME
        full_env["USER"] = full_env["LOGNAME"] = POSTGRES_USER
    full_env.update(env or {})
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            cwd="/", env=full_env, **switch,  # type: ignore[call-overload]
        )  # fmt: skip
        sampler = _Sampler(proc.pid)
        if sample:
            sampler.start()
        try:
            returncode = proc.wait(timeout_s)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            sampler.done.set()
        wall_s = time.monotonic() - started
        if sample:
            sampler.join()
        out.seek(0)
        err.seek(0)
        return Measured(
            tuple(argv), returncode, out.read().decode(errors="replace"),
            err.read().decode(errors="replace"), wall_s, sampler.peak_tree,
            sampler.peak_process,
        )  # fmt: skip


def chown_tree(path: Path) -> None:
    """Hand a directory tree to postgres (configs, spool, logs the tools write)."""
    if running_as_root():
        for p in [path, *path.rglob("*")]:
            os.chown(p, *_postgres_ids())


def _postgres_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(POSTGRES_USER)
    return entry.pw_uid, entry.pw_gid
