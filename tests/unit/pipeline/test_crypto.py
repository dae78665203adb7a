"""Key sources and key ids of ``pipeline.crypto``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from pathlib import Path

import pytest

from janua_backup.errors import ConfigError
from janua_backup.pipeline.crypto import (
    Kdf,
    Key,
    Passphrase,
    generate_key_file,
    key_from_file,
    key_from_passphrase,
)

SECRET = bytes(range(200, 232))


def write(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "key"
    path.write_bytes(content)
    return path


def test_key_id_is_the_documented_hmac() -> None:
    expected = hmac.new(SECRET, b"janua-backup key id v1", hashlib.sha256).digest()[:8]
    assert Key(SECRET).key_id == expected
    assert Key(SECRET) == Key(SECRET)


def test_key_repr_never_shows_the_secret() -> None:
    text = repr(Key(SECRET))
    assert SECRET.hex() not in text and str(SECRET) not in text
    assert Key(SECRET).key_id.hex() in text


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_key_must_be_32_bytes(size: int) -> None:
    with pytest.raises(ConfigError):
        Key(bytes(size))


@pytest.mark.parametrize(
    "content",
    [
        SECRET,
        SECRET.hex().encode(),
        SECRET.hex().upper().encode() + b"\n",
        b"  " + SECRET.hex().encode() + b"\r\n",
        base64.b64encode(SECRET),
        base64.b64encode(SECRET) + b"\n",
    ],
    ids=["raw", "hex", "hex-upper-newline", "hex-spaces", "base64", "base64-newline"],
)
def test_key_file_forms(tmp_path: Path, content: bytes) -> None:
    assert key_from_file(write(tmp_path, content)) == Key(SECRET)


def test_raw_key_file_is_not_stripped(tmp_path: Path) -> None:
    # Raw key bytes that happen to be whitespace must survive as they are.
    secret = b"\n" * 4 + bytes(range(24)) + b" \t\r\n"
    assert key_from_file(write(tmp_path, secret)) == Key(secret)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n",
        SECRET[:31],
        SECRET + b"\n",
        SECRET.hex().encode()[:63],
        SECRET.hex().encode() + b"00",
        b"g" * 64,
        base64.b64encode(SECRET[:31]),
        base64.b64encode(SECRET + b"x"),
        b"correct horse battery staple",
    ],
)
def test_bad_key_files_are_config_errors(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        key_from_file(path)
    message = str(caught.value)
    assert str(path) in message and "64 hex characters" in message
    assert caught.value.exit_code == 3


def test_unreadable_key_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        key_from_file(tmp_path / "missing")
    with pytest.raises(ConfigError, match="cannot read"):
        key_from_file(tmp_path)


def test_passphrase_uses_the_documented_scrypt() -> None:
    secret = hashlib.scrypt(
        b"correct horse battery staple",
        salt=b"janua-backup passphrase v1",
        n=2**15,
        r=8,
        p=1,
        maxmem=64 << 20,
        dklen=32,
    )
    key = key_from_passphrase("correct horse battery staple")
    assert key == Key(secret)
    # Pinned: changing the derivation would make every existing repository unreadable.
    assert key.key_id.hex() == "53d06c642cda6cf4"
    assert key_from_passphrase("correct horse battery staple") is key  # derived once per process


def test_empty_passphrase_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="passphrase is empty"):
        key_from_passphrase("")
    with pytest.raises(ConfigError, match="passphrase is empty"):
        Passphrase("")


def test_a_passphrase_is_derived_once_under_its_repositorys_kdf() -> None:
    passphrase = Passphrase("correct horse battery staple")
    assert "correct" not in repr(passphrase) and passphrase.key is None
    kdf = Kdf(salt=bytes(range(16)))
    asked: list[int] = []

    def read_kdf() -> Kdf:
        asked.append(1)
        return kdf

    key = passphrase.resolve(read_kdf)
    assert passphrase.resolve(read_kdf) is key and asked == [1]
    assert key == key_from_passphrase("correct horse battery staple", kdf)
    assert key.id_salt == kdf.salt and key.key_id != Key(key.secret).key_id
    assert passphrase.derive(None) == key_from_passphrase("correct horse battery staple")


def test_generate_key_file(tmp_path: Path) -> None:
    path = tmp_path / "new.key"
    key = generate_key_file(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    content = path.read_text(encoding="ascii")
    assert len(content.strip()) == 64 and content.endswith("\n")
    assert key_from_file(path) == key
    with pytest.raises(ConfigError, match="already exists"):
        generate_key_file(path)
    assert key_from_file(path) == key
    with pytest.raises(ConfigError, match="cannot create"):
        generate_key_file(tmp_path / "missing" / "dir" / "key")
