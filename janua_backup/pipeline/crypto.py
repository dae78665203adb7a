"""Encryption keys and the per-frame AES-256-GCM cipher of the object format.

Owns where a master key comes from (a key file or a passphrase), its public key
id, and how each object derives its own key and seals its frames; the byte
layout itself is documented in ``header``. Must not import storage, repository
or PostgreSQL code. ``cryptography`` is imported only when an object is
actually encrypted, so an unencrypted ``wal-push`` does not pay for it.

Passphrases and what an attacker with read access to the bucket can do with
them. The key id sits in every encrypted object's header and in the marker,
so it is public. Repositories created before 2026-12-04 derive the master key
with scrypt (n=2**15, r=8, p=1) and ONE fixed salt for every repository, and
their key id is HMAC-SHA256(master, b"janua-backup key id v1")[:8]: the same
function everywhere, so a table of passphrase guesses computed once tests them
against every such janua repository at the cost of a lookup. They keep that
derivation, or they could no longer be read. A repository created since then
stores a random 16-byte salt in its marker (``Kdf``), uses scrypt n=2**17,
r=8, p=1 (today's guidance, ~0.3-0.5 s and 128 MiB per derivation, once per
process), and derives its key id from a separate subkey bound to that salt,
HKDF-SHA256(master, salt=repository salt, info=b"janua-backup key id v2")[:8]:
nothing can be precomputed, and each guess costs a full scrypt for this one
repository, exactly what testing it against the ciphertext costs. A
passphrase is still only as strong as its entropy; a 256-bit ``key_file``
(random bytes: ``generate_key_file``) is the strong option, as nothing can be
guessed. Key files keep the v1 key id: a key id of 256 random bits gives
nothing away.
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
import threading
from collections.abc import Callable
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
    "Kdf",
    "Key",
    "Passphrase",
    "cipher_for",
    "generate_key_file",
    "key_from_file",
    "key_from_passphrase",
]

KEY_BYTES = 32
_KEY_ID_INFO = b"janua-backup key id v1"
_SALTED_KEY_ID_INFO = b"janua-backup key id v2"
_OBJECT_KEY_INFO = b"janua-backup object v1"
_PASSPHRASE_SALT = b"janua-backup passphrase v1"
_LEGACY_N = 2**15
_NAME_BYTES_MAX = 0xFFFF
_HEX_KEY = re.compile(rb"[0-9a-fA-F]{64}")
_ACCEPTED_FORMS = "32 raw bytes, 64 hex characters or the base64 of 32 bytes"


@dataclass(frozen=True, slots=True, repr=False)
class Key:
    """A 32-byte master key and its public id.

    The id is derived, never stored apart from the secret, so the two cannot
    disagree; it goes into every encrypted object's header to tell a wrong key
    from damaged data. ``id_salt`` None: HMAC-SHA256(secret, b"janua-backup key
    id v1")[:8] (key files, and passphrases of repositories made before
    per-repository salts); else the repository's KDF salt, and the id is
    HKDF-SHA256(secret, salt=id_salt, info=b"janua-backup key id v2")[:8] (see
    the module docstring for why). ``repr`` shows the id only, never the secret.
    """

    secret: bytes
    id_salt: bytes | None = None
    key_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise ConfigError(f"an encryption key must be {KEY_BYTES} bytes")
        if self.id_salt is None:
            digest = hmac.new(self.secret, _KEY_ID_INFO, hashlib.sha256).digest()
        else:
            digest = _hkdf_sha256_block(self.secret, self.id_salt, _SALTED_KEY_ID_INFO)
        object.__setattr__(self, "key_id", digest[:KEY_ID_BYTES])

    def __repr__(self) -> str:
        return f"Key(key_id={self.key_id.hex()})"


def _hkdf_sha256_block(secret: bytes, salt: bytes, info: bytes) -> bytes:
    """The first 32 bytes of HKDF-SHA256 (RFC 5869), with hmac alone: no ``cryptography``
    import on wal-push's path for 8 bytes of key id."""
    prk = hmac.new(salt, secret, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Kdf:
    """The scrypt parameters of a repository's passphrase, as its marker records them.

    The marker is stored in plain and anyone with write access to the bucket can
    change it, so the parameters are bounded: a forged record cannot make the
    derivation cheap (a cheap key id to test guesses against) or eat the host's
    memory. A changed salt only yields another key, refused as a wrong key.
    """

    salt: bytes
    n: int = 2**17
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        n_ok = self.n & (self.n - 1) == 0 and 2**17 <= self.n <= 2**20
        if len(self.salt) != 16 or not n_ok or self.r != 8 or self.p != 1:
            raise ValueError(
                "the kdf must be scrypt with a 16-byte salt, n a power of two "
                "from 2**17 to 2**20, r 8 and p 1"
            )

    @classmethod
    def new(cls) -> Kdf:
        """Parameters for a new repository: a random salt, today's cost."""
        return cls(salt=secrets.token_bytes(16))


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


def key_from_passphrase(passphrase: str, kdf: Kdf | None = None) -> Key:
    """Derive the master key from a passphrase with scrypt.

    ``kdf`` is the repository's record; None for a repository made before there
    was one: the fixed salt b"janua-backup passphrase v1", n=2**15, r=8, p=1,
    and the v1 key id. The passphrase is used exactly as given (no stripping).
    """
    if not passphrase:
        raise ConfigError("the encryption passphrase is empty; set a passphrase or a key_file")
    return _derive_passphrase_key(passphrase, kdf)


# scrypt costs ~0.1 s and 32 MiB (legacy) or ~0.4 s and 128 MiB (today) by design;
# wal-push runs once per segment and may encode several objects, so one
# derivation per process is enough.
@functools.lru_cache(maxsize=4)
def _derive_passphrase_key(passphrase: str, kdf: Kdf | None) -> Key:
    salt, n, r, p = (
        (_PASSPHRASE_SALT, _LEGACY_N, 8, 1) if kdf is None else (kdf.salt, kdf.n, kdf.r, kdf.p)
    )
    # scrypt needs 128 * r * n bytes of work memory (32 MiB legacy, 128 MiB today),
    # over OpenSSL's default cap of 32 MiB, hence maxmem (with room for its buffers).
    secret = hashlib.scrypt(
        passphrase.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=128 * r * n + (16 << 20),
        dklen=KEY_BYTES,
    )
    return Key(secret, id_salt=None if kdf is None else kdf.salt)


class Passphrase:
    """A configured passphrase whose key is derived once the repository's KDF is known.

    The salt lives in the repository's marker, so the key cannot be derived at
    configuration time: the repository derives it (``derive``) when it reads or
    creates its marker, or on first use (``resolve``, given how to read the
    marker's record). Either happens at most once per process, under a lock:
    a restore's threads all wait for the one derivation. ``repr`` hides the text.
    """

    __slots__ = ("_key", "_lock", "_text")

    def __init__(self, text: str) -> None:
        if not text:
            raise ConfigError("the encryption passphrase is empty; set a passphrase or a key_file")
        self._text = text
        self._key: Key | None = None
        self._lock = threading.Lock()

    @property
    def key(self) -> Key | None:
        """The derived key, None until ``derive`` or ``resolve`` ran."""
        return self._key

    def derive(self, kdf: Kdf | None) -> Key:
        """The key under ``kdf`` (None: the legacy derivation), kept for later uses."""
        with self._lock:
            self._key = key_from_passphrase(self._text, kdf)
            return self._key

    def resolve(self, read_kdf: Callable[[], Kdf | None]) -> Key:
        """The key, derived under ``read_kdf()`` unless it is known already."""
        with self._lock:
            if self._key is None:
                self._key = key_from_passphrase(self._text, read_kdf())
            return self._key

    def __repr__(self) -> str:
        return "Passphrase(...)"


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
    salt gives every object a fresh key. The AAD (header, index, final flag, and
    for format version 2 the object's name) is what makes truncation,
    reordering and transplanting frames, or moving the whole object under
    another name, detectable.
    """

    __slots__ = ("_aead", "_header", "_name", "_suffix")

    def __init__(self, key: Key, header: ObjectHeader, name: str) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        hkdf = HKDF(
            algorithm=hashes.SHA256(), length=KEY_BYTES, salt=header.salt, info=_OBJECT_KEY_INFO
        )
        self._aead: AESGCM = AESGCM(hkdf.derive(key.secret))
        self._header = header.to_bytes()
        self._name = name if header.bound else None
        self._suffix = _name_suffix(name) if header.bound else b""

    def seal(self, index: int, final: bool, payload: bytes | bytearray) -> bytes:
        nonce, aad = self._nonce_and_aad(index, final)
        return self._aead.encrypt(nonce, payload, aad)

    def open(self, index: int, final: bool, payload: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        nonce, aad = self._nonce_and_aad(index, final)
        try:
            return self._aead.decrypt(nonce, payload, aad)
        except InvalidTag as exc:
            if index == 0 and self._name is not None:
                # A whole object moved under another name fails here, at its first
                # frame; a change inside the object itself may too, and is tampering.
                raise IntegrityError(
                    f"object {self._name} is not the object stored under this name (it was "
                    "written for another key); the repository was tampered with or "
                    "objects were moved"
                ) from exc
            what = "final frame" if final else f"frame {index}"
            raise IntegrityError(
                f"the object's {what} failed authentication: the object was modified, "
                "truncated or put together from other objects"
            ) from exc

    def _nonce_and_aad(self, index: int, final: bool) -> tuple[bytes, bytes]:
        position = struct.pack(">Q", index)
        flag = b"\1" if final else b"\0"
        return b"\0\0\0\0" + position, self._header + position + flag + self._suffix


def _name_suffix(name: str) -> bytes:
    """u16 length + UTF-8 name: the AAD's binding to the object's key (format version 2)."""
    encoded = name.encode("utf-8")
    if len(encoded) > _NAME_BYTES_MAX:
        raise ValueError(f"an object name of {len(encoded)} bytes cannot be bound")
    return struct.pack(">H", len(encoded)) + encoded


def cipher_for(header: ObjectHeader, key: Key | None, name: str) -> FrameCipher | None:
    """The cipher to read the object stored as ``name`` with, or None if unencrypted.

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
    return FrameCipher(key, header, name)
