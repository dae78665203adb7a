"""The record reader's pure edges; real segments are read in tests/integration/test_wal_records.py
(PostgreSQL writes them, pg_waldump is the oracle)."""

from __future__ import annotations

from janua_backup.pg import walrecords


def test_bytes_that_are_not_wal_hold_no_records() -> None:
    assert walrecords.last_xact([]) is None
    assert walrecords.last_xact([bytes(16 * 1024 * 1024)]) is None  # a zero-filled segment
    assert walrecords.last_xact([b"not a wal segment" * 1000]) is None
