"""Objects through the pipeline: every stored object is encoded on the way in
and verified (size, SHA-256, authentication) on the way out.

``Repo`` is the handle commands pass around: a storage driver plus the encode
spec (codec, level, key). It knows nothing of PostgreSQL.

Every object is written and read under its key relative to the repository
root, and an encrypted object binds that key (format version 2, see
``pipeline.header``): an object moved or copied under another key is refused.

A passphrase's key depends on the salt in the repository's marker, so it is
derived when a command reads or creates the marker (``marker.check_key``,
``marker.ensure``), or else on the first encrypted object read or written
(the marker is read then); once per process either way.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from janua_backup.errors import FormatError, IntegrityError
from janua_backup.pipeline.crypto import Kdf, Key, Passphrase
from janua_backup.pipeline.header import ObjectHeader
from janua_backup.pipeline.stream import Chunk, Digest, Encoder, EncodeSpec, decode
from janua_backup.repository.reread import rereading
from janua_backup.storage.base import Storage


@dataclass(frozen=True, slots=True)
class PutResult:
    plain: Digest
    stored: Digest


@dataclass(frozen=True, slots=True)
class Repo:
    storage: Storage
    spec: EncodeSpec

    @property
    def encrypted(self) -> bool:
        """Whether a key is configured; derives nothing."""
        return self.spec.key is not None

    @property
    def key(self) -> Key | None:
        """The master key; a passphrase's is derived here if no marker check did it yet."""
        key = self.spec.key
        if isinstance(key, Passphrase):
            return key.key or self._resolve(key)
        return key

    def derive_key(self, kdf: Kdf | None) -> Key | None:
        """The key under the marker's KDF record ``kdf`` (None: the legacy derivation);
        a key file's key is what it is."""
        key = self.spec.key
        return key.derive(kdf) if isinstance(key, Passphrase) else key

    def _resolve(self, passphrase: Passphrase) -> Key:
        from janua_backup.repository import layout, marker

        found: list[marker.Marker] = []

        def read_kdf() -> Kdf | None:
            existing = marker.read(self)
            if existing is None:
                raise FormatError(
                    f"{self.describe()} has no marker ({layout.MARKER_KEY}), which holds the "
                    "salt of the passphrase's key; the first backup or wal-push of a WAL "
                    "segment creates it"
                )
            found.append(existing)
            return existing.kdf

        key = passphrase.resolve(read_kdf)
        if found:
            marker.check_key(self, found[0])  # a wrong passphrase: both key ids named
        return key

    def describe(self) -> str:
        return self.storage.describe()

    def put(
        self,
        key: str,
        chunks: Iterable[Chunk],
        *,
        if_absent: bool = False,
        spec: EncodeSpec | None = None,
        read_ahead_bytes: int = 0,
        before_store: Callable[[], None] | None = None,
    ) -> PutResult:
        """Encode ``chunks`` into the object ``key``.

        With ``read_ahead_bytes`` reading and compressing ``chunks`` run in
        threads of their own, up to that many codec bytes ahead of the upload
        (``Encoder``), so compressing and sending overlap; errors of either
        side are raised here. ``before_store`` runs once that encoding has
        started and before any byte is sent: checks that need the network then
        overlap the compression, and one that raises stores nothing. With a
        passphrase whose key is not derived yet it runs before the encoding
        instead: the key depends on the marker it checks.
        """
        spec = spec or self.spec
        if isinstance(spec.key, Passphrase) and spec.key.key is None:
            if before_store is not None:
                before_store()
                before_store = None
            if spec.key.key is None:
                self._resolve(spec.key)
        encoder = Encoder(spec, bind=key, read_ahead_bytes=read_ahead_bytes)
        stored = encoder.encode(chunks)
        try:
            if before_store is None:
                self.storage.put(key, stored, if_absent=if_absent)
            else:
                header = next(stored)  # starts the read-ahead threads
                before_store()
                self.storage.put(key, itertools.chain([header], stored), if_absent=if_absent)
        finally:
            stored.close()  # a failed upload stops the encoder's threads here
        return PutResult(plain=encoder.plain, stored=encoder.stored)

    def get(
        self, key: str, *, expect_stored: Digest | None = None, expect_plain: Digest | None = None
    ) -> Iterator[bytes]:
        """Plaintext chunks; raises ObjectNotFound before the first chunk if absent.

        Consume it to the end before trusting the data: verification of the
        trailer (and of ``expect_*``) completes only with the last chunk.
        """
        stored = self.storage.get(key)
        try:
            master = self.key  # after the get: a missing object costs no derivation
        except BaseException:
            close = getattr(stored, "close", None)
            if close is not None:
                close()
            raise
        return decode(
            stored,
            master,
            bind=key,
            expect_stored=expect_stored,
            expect_plain=expect_plain,
            on_header=self._refuse_plaintext,
        )

    def _refuse_plaintext(self, header: ObjectHeader) -> None:
        """With a key configured, an unencrypted object can only be a forgery: anyone
        with write access to the bucket could plant one."""
        if self.spec.key is not None and not header.encrypted:
            raise IntegrityError(
                "an object in the encrypted repository is not encrypted; "
                "it was not written by janua-backup with this key"
            )

    def put_bytes(
        self, key: str, data: bytes, *, if_absent: bool = False, spec: EncodeSpec | None = None
    ) -> PutResult:
        return self.put(key, [data], if_absent=if_absent, spec=spec)

    def get_bytes(self, key: str) -> bytes:
        """A small object's whole plaintext (a manifest, a history file). Held in memory
        anyway, so a read that died mid-body or failed its checks is simply read again
        (``reread``); only what every read shows is raised."""
        return rereading(lambda: b"".join(self.get(key)), what=f"{self.describe()}/{key}")
