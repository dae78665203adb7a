"""The object header of ``pipeline.header``."""

from __future__ import annotations

import pytest

from janua_backup.errors import FormatError, IntegrityError
from janua_backup.pipeline.header import (
    FIXED_HEADER_BYTES,
    HEADER_MAX_BYTES,
    MAGIC,
    ObjectHeader,
    read_header,
)

ENCRYPTED = ObjectHeader(codec="zstd", cipher="aes-256-gcm", key_id=b"K" * 8, salt=b"S" * 16)
BOUND = ObjectHeader(codec="gzip", cipher="aes-256-gcm", key_id=b"K" * 8, salt=b"S" * 16, version=2)


@pytest.mark.parametrize(
    ("header", "stored"),
    [
        (ObjectHeader(codec="none"), b"JANUA\x01\x00\x00"),
        (ObjectHeader(codec="gzip"), b"JANUA\x01\x01\x00"),
        (ObjectHeader(codec="zstd"), b"JANUA\x01\x02\x00"),
        (ENCRYPTED, b"JANUA\x01\x02\x01" + b"K" * 8 + b"S" * 16),
        (BOUND, b"JANUA\x02\x01\x01" + b"K" * 8 + b"S" * 16),
    ],
)
def test_layout(header: ObjectHeader, stored: bytes) -> None:
    assert header.to_bytes() == stored
    assert header.size_bytes == len(stored)
    assert read_header(stored + b"anything after") == header
    assert header.bound == (header.version == 2)


def test_fixed_sizes() -> None:
    assert (FIXED_HEADER_BYTES, HEADER_MAX_BYTES) == (8, 32)
    assert ENCRYPTED.encrypted and not ObjectHeader(codec="gzip").encrypted


@pytest.mark.parametrize("prefix", [b"", b"J", b"JANU", b"JANUA", b"JANUA\x01\x01"])
def test_truncated_header_is_an_integrity_error(prefix: bytes) -> None:
    with pytest.raises(IntegrityError, match="truncated"):
        read_header(prefix)


def test_truncated_encrypted_header() -> None:
    with pytest.raises(IntegrityError, match="truncated"):
        read_header(ENCRYPTED.to_bytes()[:-1])


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        (b"JANUB\x01\x01\x00", "not a janua-backup object"),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "not a janua-backup object"),
        (b"JX", "not a janua-backup object"),
        (MAGIC + b"\x03\x01\x01", "version 3 is not supported"),
        (MAGIC + b"\x02\x01\x00", "unencrypted object of format version 2"),
        (MAGIC + b"\x01\x03\x00", "unknown codec 3"),
        (MAGIC + b"\x01\x01\x02", "cipher 2"),
    ],
)
def test_foreign_or_newer_headers_are_format_errors(stored: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        read_header(stored)


@pytest.mark.parametrize(
    "fields",
    [
        {"codec": "lz4"},
        {"codec": "gzip", "cipher": "rot13"},
        {"codec": "gzip", "cipher": "aes-256-gcm"},
        {"codec": "gzip", "cipher": "aes-256-gcm", "key_id": b"k" * 8, "salt": b"s"},
        {"codec": "gzip", "key_id": b"k" * 8},
        {"codec": "gzip", "version": 2},
        {"codec": "gzip", "version": 3},
    ],
)
def test_inconsistent_headers_cannot_be_built(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ObjectHeader(**fields)  # type: ignore[arg-type]
