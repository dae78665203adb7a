"""The progress line: total, %, rate and ETA on a terminal, nothing elsewhere, and a
log record written mid-way starts on a clean line."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest

from janua_backup import logs
from janua_backup.output.progress import CLEAR_LINE, ProgressMeter, duration

MiB = 1 << 20


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def log_to() -> Iterator[io.StringIO]:
    """The root logger writing through logs.py's handler into a fake terminal."""
    stream = FakeTty()
    handler = logs.StatusAwareHandler(stream)
    handler.setFormatter(logs.TextFormatter())
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    yield stream
    root.handlers[:] = saved
    root.setLevel(level)


def test_a_terminal_shows_done_total_percent_rate_and_eta() -> None:
    stream, clock = FakeTty(), Clock()
    meter = ProgressMeter(0, "backup", stream=stream, clock=clock)
    meter.expect(100 * MiB)
    clock.now += 10
    meter(25 * MiB)
    last = stream.getvalue().split(CLEAR_LINE)[-1]
    assert last == "backup: 25.0 MiB / 100.0 MiB (25%), 2.5 MiB/s, ETA 30s"
    meter.close()
    assert stream.getvalue().endswith(CLEAR_LINE)  # the result prints on a clean line


def test_nothing_is_written_off_a_terminal_or_under_quiet() -> None:
    for stream, quiet in ((io.StringIO(), False), (FakeTty(), True)):
        meter = ProgressMeter(10 * MiB, "restore", stream=stream, quiet=quiet)
        meter(5 * MiB)
        meter.close()
        assert stream.getvalue() == ""


def test_a_log_record_mid_way_starts_on_a_clean_line(log_to: io.StringIO) -> None:
    clock = Clock()
    meter = ProgressMeter(100 * MiB, "restore", stream=log_to, clock=clock)
    clock.now += 1
    meter(10 * MiB)
    logging.getLogger("janua_backup.x").info("restore done backup_id=%s", "B1")
    clock.now += 0.1  # within the redraw interval: drawn again all the same, under the record
    meter(10 * MiB)
    meter.close()
    # What a terminal shows: each piece begins at column 0 on an erased line.
    pieces = log_to.getvalue().split(CLEAR_LINE)
    assert pieces[0] == "" and pieces[-1] == ""
    assert pieces[1] == "restore: 10.0 MiB / 100.0 MiB (10%), 10.0 MiB/s, ETA 9s"
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ INFO janua_backup.x: restore done backup_id=B1\n",
        pieces[2],
    )
    assert pieces[3].startswith("restore: 20.0 MiB / 100.0 MiB (20%)")
    assert len(pieces) == 5


def test_after_close_log_records_are_left_alone(log_to: io.StringIO) -> None:
    meter = ProgressMeter(1, "backup", stream=log_to)
    meter(1)
    meter.close()
    written = log_to.getvalue()
    logging.getLogger("janua_backup.x").warning("late")
    assert log_to.getvalue()[len(written) :].endswith("WARNING janua_backup.x: late\n")
    assert CLEAR_LINE not in log_to.getvalue()[len(written) :]


def test_a_file_that_grew_never_shows_more_than_100_percent() -> None:
    stream, clock = FakeTty(), Clock()
    meter = ProgressMeter(10, "backup", stream=stream, clock=clock)
    clock.now += 1
    meter(15)
    assert stream.getvalue().endswith("(100%), 15 B/s, ETA 0s")


@pytest.mark.parametrize(("seconds", "text"), [(4.4, "4s"), (65, "1m05s"), (7620, "2h07m")])
def test_eta_reads_at_a_glance(seconds: float, text: str) -> None:
    assert duration(seconds) == text
