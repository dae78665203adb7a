"""Encryption keys and the per-frame AES-256-GCM cipher of the object format.

Owns where a master key comes from (a key file or a passphrase), its public key
id, and how each object derives its own key and seals its frames; the byte
layout itself is documented in ``header``. Must not import storage, repository
or PostgreSQL code. ``cryptography`` is imported only when an object is
actually encrypted, so an unencrypted ``wal-push`` does not pay for it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import secrets
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from janua_backup.errors import ConfigError, DecryptionError, IntegrityError
from janua_backup.pipeline.header import KEY_ID_BYTES, ObjectHeader

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "KEY_BYTES",
    "FrameCipher",
    "Key",
    "cipher_for",
    "generate_key_file",
    "key_from_file",
    "key_from_passphrase",
]

KEY_BYTES = 32
_KEY_ID_INFO = b"janua-backup key id v1"
_OBJECT_KEY_INFO = b"janua-backup object v1"
_PASSPHRASE_SALT = b"janua-backup passphrase v1"
_HEX_KEY = re.compile(rb"[0-9a-fA-F]{64}")
_ACCEPTED_FORMS = "32 raw bytes, 64 hex characters or the base64 of 32 bytes"


@dataclass(frozen=True, slots=True, repr=False)
class Key:
    """A 32-byte master key and its public id.

    The id is derived, never stored apart from the secret, so the two cannot
    disagree; it goes into every encrypted object's header to tell a wrong key
    from damaged data. ``repr`` shows the id only, never the secret.
    """

    secret: bytes
    key_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise ConfigError(f"an encryption key must be {KEY_BYTES} bytes")
        digest = hmac.new(self.secret, _KEY_ID_INFO, hashlib.sha256).digest()
        object.__setattr__(self, "key_id", digest[:KEY_ID_BYTES])

    def __repr__(self) -> str:
        return f"Key(key_id={self.key_id.hex()})"


def key_from_file(path: Path) -> Key:
    """Read a master key file: 32 raw bytes, 64 hex characters or base64 of 32 bytes.

    A file of exactly 32 bytes is taken raw, before any stripping, because raw
    key bytes may well look like whitespace; text forms may carry whitespace
    and a trailing newline.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the encryption key file {path}: {exc.strerror or exc}"
        ) from exc
    secret = _parse_key(data)
    if secret is None:
        raise ConfigError(
            f"the encryption key file {path} holds no usable key: it must contain "
            f"{_ACCEPTED_FORMS} (e.g. made with: openssl rand -hex 32 > {path})"
        )
    return Key(secret)


def _parse_key(data: bytes) -> bytes | None:
    if len(data) == KEY_BYTES:
        return data
    text = data.strip()
    if _HEX_KEY.fullmatch(text):
        return bytes.fromhex(text.decode("ascii"))
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) == KEY_BYTES else None


def key_from_passphrase(passphrase: str) -> Key:
    """Derive the master key from a passphrase with scrypt (n=2**15, r=8, p=1).

    The salt is fixed so every process derives the same key from the same
    passphrase; the passphrase is used exactly as given (no stripping).
    """
    if not passphrase:
        raise ConfigError("the encryption passphrase is empty; set a passphrase or a key_file")
    return _derive_passphrase_key(passphrase)


# scrypt costs ~0.1 s and 32 MiB by design; wal-push runs once per segment and
# may encode several objects, so one derivation per process is enough.
@functools.lru_cache(maxsize=4)
def _derive_passphrase_key(passphrase: str) -> Key:
    # 128 * r * n = 32 MiB of work memory: just over OpenSSL's default cap, hence maxmem.
    secret = hashlib.scrypt(
        passphrase.encode("utf-8"),
        salt=_PASSPHRASE_SALT,
        n=2**15,
        r=8,
        p=1,
        maxmem=64 << 20,
        dklen=KEY_BYTES,
    )
    return Key(secret)


def generate_key_file(path: Path) -> Key:
    """Write a new random key as 64 hex characters to a new file of mode 0600.

    Refuses to overwrite: replacing a key file makes every object encrypted
    with the old key unreadable.
    """
    secret = secrets.token_bytes(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError(f"the key file {path} already exists; refusing to overwrite it") from exc
    except OSError as exc:
        raise ConfigError(f"cannot create the key file {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(secret.hex() + "\n")
            file.flush()
            os.fsync(file.fileno())
    except OSError as exc:
        raise ConfigError(f"cannot write the key file {path}: {exc.strerror or exc}") from exc
    return Key(secret)


class FrameCipher:
    """Seals and opens the frames of one object with its own derived key.

    The nonce is the frame index: safe because HKDF with the object's random
    salt gives every object a fresh key. The AAD (header, index, final flag)
    is what makes truncation, reordering and transplanting frames detectable.
    """

    __slots__ = ("_aead", "_header")

    def __init__(self, key: Key, header: ObjectHeader) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        hkdf = HKDF(
            algorithm=hashes.SHA256(), length=KEY_BYTES, salt=header.salt, info=_OBJECT_KEY_INFO
        )
        self._aead: AESGCM = AESGCM(hkdf.derive(key.secret))
        self._header = header.to_bytes()

    def seal(self, index: int, final: bool, payload: bytes | bytearray) -> bytes:
        nonce, aad = self._nonce_and_aad(index, final)
        return self._aead.encrypt(nonce, payload, aad)

    def open(self, index: int, final: bool, payload: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        nonce, aad = self._nonce_and_aad(index, final)
        try:
            return self._aead.decrypt(nonce, payload, aad)
        except InvalidTag as exc:
            what = "final frame" if final else f"frame {index}"
            raise IntegrityError(
                f"the object's {what} failed authentication: the object was modified, "
                "truncated or put together from other objects"
            ) from exc

    def _nonce_and_aad(self, index: int, final: bool) -> tuple[bytes, bytes]:
        position = struct.pack(">Q", index)
        return b"\0\0\0\0" + position, self._header + position + (b"\1" if final else b"\0")


def cipher_for(header: ObjectHeader, key: Key | None) -> FrameCipher | None:
    """The cipher to read an object with, or None for an unencrypted object.

    An unencrypted object read with a key is accepted (objects written before
    encryption was turned on); callers that must refuse it check the header.
    """
    if not header.encrypted:
        return None
    key_id = (header.key_id or b"").hex()
    if key is None:
        raise DecryptionError(
            f"the repository object is encrypted (key id {key_id}) but encryption is "
            "configured off; set encryption.key_file or the passphrase"
        )
    if header.key_id != key.key_id:
        raise DecryptionError(
            f"this object was encrypted with a different key (key id {key_id}, the "
            f"configured key is {key.key_id.hex()}); check encryption.key_file / the passphrase"
        )
    return FrameCipher(key, header)
