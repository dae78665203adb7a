"""The self-describing object format: header, frames and trailer.

Every object janua-backup stores (data files, WAL segments, manifests) has this
layout, so a reader builds its decrypt/decompress chain from the object itself
and never from the current configuration. This module owns the header and the
constants of the format; ``frames`` writes and reads the frames, ``crypto``
the keys and the cipher, ``compress`` the codecs. It must not import anything
of storage, repository or PostgreSQL.

Object format, versions 1 and 2 (all integers big-endian)::

    header
      0   5  magic            b"JANUA"
      5   1  format version   1 unencrypted; 2 encrypted (1 for encrypted objects
                              written before 2026-12-04, read without the name binding)
      6   1  codec            0 none, 1 gzip (RFC 1952), 2 zstd (RFC 8878, see below)
      7   1  cipher           0 none, 1 AES-256-GCM
      -- only when cipher is 1:
      8   8  key id           of the master key, see ``crypto.Key``
     16  16  salt             random, new for every object
    frames, one after the other, each
      0   4  u32: bit 31 set on the FINAL frame, bits 0-30 the payload length
      4   n  payload

Data frames come first. Their payloads, concatenated, are the codec's output
(the compressed stream; the plaintext itself for codec none), cut into pieces of
``FRAME_PAYLOAD_BYTES`` (1 MiB); only the last data frame may be shorter, and
empty input with codec none has no data frame at all. Readers reject a data
frame longer than 1 MiB (plus the tag), which bounds their memory.

Exactly one FINAL frame ends the object; nothing may follow it. Its payload is
the 72-byte trailer::

      0   8  u64 plaintext size in bytes
      8  32  SHA-256 of the plaintext
     40  32  SHA-256 of every stored byte before the final frame
             (header, and each data frame with its length word)

The plaintext digest proves the decoded bytes; the stored-bytes digest makes
every byte of an unencrypted object count, even those a codec ignores (a gzip
header's mtime, padding bits), so a flipped bit never goes unnoticed.

With cipher 1 every payload, the trailer included, is AES-256-GCM ciphertext
followed by its 16-byte tag:

- object key = HKDF-SHA256(master key, salt=header salt,
  info=b"janua-backup object v1", length 32): a fresh key per object, so the
  frame index alone is a safe nonce;
- nonce = 4 zero bytes + u64 frame index (0 for the first frame after the header);
- AAD = the full header bytes + u64 frame index + 1 byte FINAL flag (1 or 0),
  and in format version 2 then + u16 length of the name + the name: the UTF-8
  key of the object relative to the repository root, as ``repository.layout``
  builds it (``wal/000000010000000000000003``, ``backups/<id>/data/000001``,
  ``backups/<id>/manifest``, ``verify/<id>/<drill>.json``, ``pins/<id>``;
  an incremental backup reading its parent's object binds the parent's key,
  the one it actually reads).

The AAD binds each frame to its object, its position and its role, so a
modified, truncated (no final frame), reordered or transplanted frame fails
authentication; version 2 binds the object to the name it is stored under
too, so an object copied or moved under another name (one WAL segment in
place of another, one backup's data object over another's) is refused
although it is a genuine object of this repository. Unencrypted objects stay
version 1: nothing authenticates them, a key in the AAD would prove nothing.

A zstd codec stream is one or more zstd frames back to back, as RFC 8878
defines zstd data (not to be confused with this format's own frames). Writers
before 2026-11-26 wrote one zstd frame per object; writers since then end a
zstd frame every window's worth of plaintext (2 MiB at level 3), which is
faster to compress (``compress._ZstdFrames`` says why). Every reader of this
format, old ones included, decodes both: it reads zstd frame after zstd frame
until the payloads end.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from janua_backup.errors import FormatError, IntegrityError

__all__ = [
    "BOUND_VERSION",
    "CIPHERS",
    "CODECS",
    "FINAL_FLAG",
    "FIXED_HEADER_BYTES",
    "FORMAT_VERSION",
    "FRAME_PAYLOAD_BYTES",
    "HEADER_MAX_BYTES",
    "KEY_ID_BYTES",
    "MAGIC",
    "SALT_BYTES",
    "TAG_BYTES",
    "TRAILER_BYTES",
    "ObjectHeader",
    "read_header",
]

MAGIC = b"JANUA"
FORMAT_VERSION = 1
"""The version of unencrypted objects (and of encrypted ones written before binding)."""
BOUND_VERSION = 2
"""The version of encrypted objects whose AAD binds the object's name."""
_VERSIONS = (FORMAT_VERSION, BOUND_VERSION)
KEY_ID_BYTES = 8
SALT_BYTES = 16
TAG_BYTES = 16
FIXED_HEADER_BYTES = len(MAGIC) + 3
HEADER_MAX_BYTES = FIXED_HEADER_BYTES + KEY_ID_BYTES + SALT_BYTES
"""Read this many bytes of an object to be sure ``read_header`` has enough."""

FRAME_PAYLOAD_BYTES = 1 << 20
FINAL_FLAG = 1 << 31
TRAILER_BYTES = 8 + 32 + 32

CODECS: dict[str, int] = {"none": 0, "gzip": 1, "zstd": 2}
CIPHERS: dict[str, int] = {"none": 0, "aes-256-gcm": 1}
_CODEC_NAMES = {number: name for name, number in CODECS.items()}
_CIPHER_NAMES = {number: name for name, number in CIPHERS.items()}


@dataclass(frozen=True, slots=True)
class ObjectHeader:
    """What an object says about itself: enough to choose how to read it.

    Callers that hold a key may still meet unencrypted objects written before
    encryption was turned on; ``encrypted`` lets them decide whether to accept.
    """

    codec: str
    cipher: str = "none"
    key_id: bytes | None = None
    salt: bytes | None = None
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        # Checked here so a header that exists can always be encoded.
        if self.codec not in CODECS or self.cipher not in CIPHERS:
            raise ValueError(f"unknown codec {self.codec!r} or cipher {self.cipher!r}")
        if self.encrypted:
            if self.key_id is None or len(self.key_id) != KEY_ID_BYTES:
                raise ValueError("an encrypted header needs an 8-byte key id")
            if self.salt is None or len(self.salt) != SALT_BYTES:
                raise ValueError("an encrypted header needs a 16-byte salt")
        elif self.key_id is not None or self.salt is not None:
            raise ValueError("an unencrypted header has no key id or salt")
        if self.version not in _VERSIONS or (self.version == BOUND_VERSION and not self.encrypted):
            raise ValueError(f"format version {self.version} does not fit this header")

    @property
    def encrypted(self) -> bool:
        return self.cipher != "none"

    @property
    def bound(self) -> bool:
        """True when the AAD binds the object's name (encrypted objects of version 2)."""
        return self.encrypted and self.version == BOUND_VERSION

    @property
    def size_bytes(self) -> int:
        return HEADER_MAX_BYTES if self.encrypted else FIXED_HEADER_BYTES

    def to_bytes(self) -> bytes:
        """The exact stored bytes; also the AAD prefix of every encrypted frame."""
        fixed = MAGIC + bytes((self.version, CODECS[self.codec], CIPHERS[self.cipher]))
        if self.key_id is None or self.salt is None:
            return fixed
        return fixed + self.key_id + self.salt


def read_header(prefix: bytes) -> ObjectHeader:
    """Parse the header at the start of ``prefix`` (any longer tail is ignored).

    ``HEADER_MAX_BYTES`` bytes always suffice. A prefix of the magic that ends
    too early is a truncated object (IntegrityError); anything else that is
    not our magic, version, codec or cipher is a FormatError.
    """
    head = bytes(prefix[:HEADER_MAX_BYTES])
    if not head.startswith(MAGIC):
        if MAGIC.startswith(head):
            raise IntegrityError(f"the object is truncated: it has only {len(head)} bytes")
        raise FormatError(
            "not a janua-backup object (bad magic); the repository holds foreign or damaged data"
        )
    if len(head) < FIXED_HEADER_BYTES:
        raise IntegrityError("the object is truncated inside its header")
    version, codec, cipher = struct.unpack_from(">BBB", head, len(MAGIC))
    if version not in _VERSIONS:
        raise FormatError(
            f"object format version {version} is not supported (this janua-backup reads "
            f"versions {FORMAT_VERSION} and {BOUND_VERSION}); upgrade janua-backup"
        )
    if codec not in _CODEC_NAMES or cipher not in _CIPHER_NAMES:
        raise FormatError(
            f"unknown codec {codec} or cipher {cipher} in the object header; "
            "it was written by a newer janua-backup or is damaged"
        )
    if _CIPHER_NAMES[cipher] == "none":
        if version != FORMAT_VERSION:
            raise FormatError(
                f"an unencrypted object of format version {version}: no janua-backup "
                "writes these; the object is damaged or forged"
            )
        return ObjectHeader(codec=_CODEC_NAMES[codec])
    if len(head) < HEADER_MAX_BYTES:
        raise IntegrityError("the object is truncated inside its header")
    key_end = FIXED_HEADER_BYTES + KEY_ID_BYTES
    return ObjectHeader(
        codec=_CODEC_NAMES[codec],
        cipher=_CIPHER_NAMES[cipher],
        key_id=head[FIXED_HEADER_BYTES:key_end],
        salt=head[key_end:HEADER_MAX_BYTES],
        version=version,
    )
