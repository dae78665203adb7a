"""Samples in, medians and ratios out: the printed table and the JSON file.

The ratio is always janua / pgBackRest of the medians; the target column says
which way is better and what the issue asks for. When barman-cloud was
measured, the table gains its medians, the ratio janua / barman-cloud and that
ratio's target (the issue's "3x better than barman-cloud"); without it, the
table is the two-tool one. Must not import janua_backup.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

JANUA, PGBACKREST, BARMAN = "janua", "pgbackrest", "barman"
THREE_TIMES = "ratio <= 0.333"  # janua/barman: 3x better than barman-cloud


@dataclass(frozen=True, slots=True)
class Metric:
    title: str
    unit: str
    target: str = ""  # "ratio <= 0.8", "ratio >= 1.2", "janua <= 100"
    barman_target: str = ""  # on the ratio janua / barman-cloud

    def verdict(self, janua: float | None, ratio: float | None) -> str:
        return _verdict(self.target, janua, ratio)

    def barman_verdict(self, ratio: float | None) -> str:
        return _verdict(self.barman_target, None, ratio)


def _verdict(target: str, janua: float | None, ratio: float | None) -> str:
    if not target:
        return ""
    subject, op, limit_text = target.split()
    value = ratio if subject == "ratio" else janua
    if value is None:
        return "n/a"
    limit = float(limit_text)
    met = value <= limit if op == "<=" else value >= limit
    return "met" if met else "MISSED"


METRICS: dict[str, Metric] = {
    "backup_s": Metric("full backup, wall time", "s", "ratio <= 0.8", THREE_TIMES),
    "backup_mib_s": Metric("full backup, throughput", "MiB/s"),
    "backup_stored_mib": Metric("full backup, stored", "MiB"),
    "backup_rss_tree_mib": Metric("full backup, peak RSS of the tree", "MiB"),
    "backup_rss_proc_mib": Metric("full backup, peak RSS of one process", "MiB", "janua <= 100"),
    "restore_s": Metric("full restore (files), wall time", "s", "ratio <= 1.0"),
    "restore_rss_tree_mib": Metric("full restore, peak RSS of the tree", "MiB"),
    "restore_rss_proc_mib": Metric("full restore, peak RSS of one process", "MiB", "janua <= 100"),
    "push_s": Metric("one wal-push by hand", "s", "ratio <= 1.0", THREE_TIMES),
    "drain_s": Metric("backlog drain, time", "s"),
    "drain_seg_per_s": Metric("backlog drain, rate", "seg/s", "ratio >= 1.2", "ratio >= 3.0"),
    "pitr_s": Metric("PITR: start to promoted", "s", "ratio <= 1.0", THREE_TIMES),
    "pitr_restore_s": Metric("PITR: restore before it", "s"),
}


@dataclass(frozen=True, slots=True)
class Sample:
    dataset: str
    codec: str
    metric: str
    tool: str
    round: int
    value: float


@dataclass
class Results:
    samples: list[Sample] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # "dataset/codec/metric/tool" -> note
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)

    def add(self, dataset: str, codec: str, metric: str, tool: str, rnd: int, value: float) -> None:
        self.samples.append(Sample(dataset, codec, metric, tool, rnd, value))

    def note(self, dataset: str, codec: str, metric: str, tool: str, text: str) -> None:
        self.notes[f"{dataset}/{codec}/{metric}/{tool}"] = text

    def median(self, dataset: str, codec: str, metric: str, tool: str) -> float | None:
        values = [
            s.value
            for s in self.samples
            if (s.dataset, s.codec, s.metric, s.tool) == (dataset, codec, metric, tool)
        ]
        return statistics.median(values) if values else None

    def rounds(self, dataset: str, codec: str, metric: str) -> int:
        """Samples per tool behind a median (the most of any tool)."""
        counts: dict[str, int] = {}
        for s in self.samples:
            if (s.dataset, s.codec, s.metric) == (dataset, codec, metric):
                counts[s.tool] = counts.get(s.tool, 0) + 1
        return max(counts.values(), default=0)

    def rows(self) -> list[dict[str, Any]]:
        """One row per (dataset, codec, metric): medians, ratios, targets, verdicts, notes."""
        order = list(dict.fromkeys((s.dataset, s.codec) for s in self.samples))
        keys = sorted(
            {(s.dataset, s.codec, s.metric) for s in self.samples},
            key=lambda k: (
                order.index(k[:2]),
                list(METRICS).index(k[2]) if k[2] in METRICS else len(METRICS),
            ),
        )
        rows = []
        for dataset, codec, metric in keys:
            janua = self.median(dataset, codec, metric, JANUA)
            other = self.median(dataset, codec, metric, PGBACKREST)
            ratio = janua / other if janua is not None and other else None
            barman = self.median(dataset, codec, metric, BARMAN)
            ratio_barman = janua / barman if janua is not None and barman else None
            spec = METRICS.get(metric, Metric(metric, ""))
            notes = [
                text
                for tool in (JANUA, PGBACKREST, BARMAN)
                if (text := self.notes.get(f"{dataset}/{codec}/{metric}/{tool}"))
            ]
            rows.append(
                {
                    "dataset": dataset, "codec": codec, "metric": metric,
                    "title": spec.title, "unit": spec.unit,
                    "janua": janua, "pgbackrest": other, "ratio": ratio,
                    "rounds": self.rounds(dataset, codec, metric),
                    "target": spec.target, "verdict": spec.verdict(janua, ratio),
                    "barman": barman, "ratio_barman": ratio_barman,
                    "target_barman": spec.barman_target,
                    "verdict_barman": spec.barman_verdict(ratio_barman),
                    "notes": notes,
                }
            )  # fmt: skip
        return rows

    def table(self) -> str:
        """The two-tool table; with barman-cloud's columns when it was measured.

        Note marks [n] go to the last column, the notes themselves below the table.
        """
        header: tuple[str, ...] = (
            "data set", "codec", "measure", "unit", "janua", "pgBackRest", "ratio", "target",
        )  # fmt: skip
        with_barman = any(s.tool == BARMAN for s in self.samples)
        if with_barman:
            header = (*header[:6], "barman", *header[6:], "janua/barman", "target vs barman")
        lines = [header]
        notes: list[str] = []
        for row in self.rows():
            target = f"{row['target']} {row['verdict']}".strip()
            cells = [
                row["dataset"], row["codec"], row["title"], row["unit"], _num(row["janua"]),
                _num(row["pgbackrest"]), _num(row["ratio"], ratio=True), target,
            ]  # fmt: skip
            if with_barman:
                cells.insert(6, _num(row["barman"]))
                cells.append(_num(row["ratio_barman"], ratio=True))
                cells.append(f"{row['target_barman']} {row['verdict_barman']}".strip())
            for text in row["notes"]:
                if text not in notes:
                    notes.append(text)
                cells[-1] += f" [{notes.index(text) + 1}]"
            lines.append(tuple(cells))
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
               for line in lines]  # fmt: skip
        out.insert(1, "  ".join("-" * w for w in widths))
        out += [f"[{i}] {text}" for i, text in enumerate(notes, 1)]
        return "\n".join(out)

    def write_json(self, path: Path) -> None:
        data = {
            "setup": self.setup,
            "datasets": self.datasets,
            "results": self.rows(),
            "samples": [asdict(s) for s in self.samples],
        }
        path.write_text(json.dumps(data, indent=2) + "\n")


def _num(value: float | None, *, ratio: bool = False) -> str:
    if value is None:
        return "-"
    if ratio:
        return f"{value:.2f}x"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"
