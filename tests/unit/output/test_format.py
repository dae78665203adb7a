"""One time format for people, RFC 3339 for machines, one size style, timestamped logs."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta, timezone

import pytest

from janua_backup import logs
from janua_backup.output.format import rfc3339, size, utc

PARIS = timezone(timedelta(hours=1))


def test_people_read_utc_to_the_second_with_z() -> None:
    moment = datetime(2026, 12, 4, 14, 32, 36, 250000, tzinfo=PARIS)
    assert utc(moment) == "2026-12-04 13:32:36Z"
    assert utc(moment, exact=True) == "2026-12-04 13:32:36.250000Z"
    assert utc(moment.replace(microsecond=0), exact=True) == "2026-12-04 13:32:36Z"
    assert utc(None) == "-"


def test_machines_read_rfc3339_with_the_fraction_only_when_there_is_one() -> None:
    assert rfc3339(datetime(2026, 12, 4, 14, 32, 36, tzinfo=PARIS)) == "2026-12-04T13:32:36Z"
    assert rfc3339(datetime(2026, 12, 4, 13, 32, 36, 5, UTC)) == "2026-12-04T13:32:36.000005Z"
    assert rfc3339(None) is None


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0 B"), (1, "1 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (3 * 2**20, "3.0 MiB")],
)
def test_one_size_style(value: int, text: str) -> None:
    assert size(value) == text
    assert "Byte" not in size(value)


def _logged(fmt: str, message: str, *args: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.TextFormatter() if fmt == "text" else logs.JsonFormatter())
    record = logging.LogRecord("janua_backup.x", logging.INFO, __file__, 1, message, args, None)
    record.created = datetime(2026, 12, 4, 13, 32, 36, tzinfo=UTC).timestamp()
    handler.emit(record)
    return stream.getvalue()


def test_text_log_lines_start_with_a_utc_timestamp_and_never_say_none() -> None:
    line = _logged("text", "restore done backup_id=%s lsn=%s bytes=%d", "B1", None, 5)
    assert (
        line
        == "2026-12-04 13:32:36Z INFO janua_backup.x: restore done backup_id=B1 lsn=- bytes=5\n"
    )


def test_json_log_lines_carry_rfc3339_and_no_python_none() -> None:
    data = json.loads(_logged("json", "wal-push name=%s host=%s", "0001", None))
    assert data["time"] == "2026-12-04T13:32:36Z"
    assert data["message"] == "wal-push name=0001 host=-"


def test_a_datetime_in_a_log_line_reads_as_every_output_writes_times() -> None:
    paris = datetime(2026, 12, 4, 14, 32, 36, 7, tzinfo=PARIS)
    line = _logged("text", "job backup was due at %s", paris)
    assert line.endswith("INFO janua_backup.x: job backup was due at 2026-12-04 13:32:36Z\n")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("janua_backup.test_format")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("missed %s", paris, extra={"missed": paris})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert json.loads(stream.getvalue())["missed"] == "2026-12-04T13:32:36.000007Z"
