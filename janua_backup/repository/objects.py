"""Objects through the pipeline: every stored object is encoded on the way in
and verified (size, SHA-256, authentication) on the way out.

``Repo`` is the handle commands pass around: a storage driver plus the encode
spec (codec, level, key). It knows nothing of PostgreSQL.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from janua_backup.errors import IntegrityError
from janua_backup.pipeline.crypto import Key
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
    def key(self) -> Key | None:
        return self.spec.key

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
        overlap the compression, and one that raises stores nothing.
        """
        encoder = Encoder(spec or self.spec, read_ahead_bytes=read_ahead_bytes)
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
        return decode(
            stored,
            self.spec.key,
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
