"""The encoder's output against the format documented in ``pipeline.header``.

The reader here is written from the docstring alone, with the primitives
called directly, so a change to the on-disk format cannot slip through by
changing the writer and the reader together.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

import pytest
import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from janua_backup.pipeline.crypto import Key
from tests.unit.pipeline.objects import CODECS, KEY, NAME, MiB, encode, sample

CODEC_BYTES = {"none": 0, "gzip": 1, "zstd": 2}


def reference_decode(
    stored: bytes, key: Key | None, name: str = NAME
) -> tuple[bytes, list[int], bytes]:
    """(codec stream, data payload sizes, trailer) read exactly as documented."""
    encrypted = stored[7] == 1
    assert stored[:5] == b"JANUA" and stored[5] == (2 if encrypted else 1)
    bound = struct.pack(">H", len(name.encode())) + name.encode()
    header = stored[:32] if encrypted else stored[:8]
    aead = None
    if encrypted:
        assert key is not None and header[8:16] == key.key_id
        hkdf = HKDF(hashes.SHA256(), 32, salt=header[16:32], info=b"janua-backup object v1")
        aead = AESGCM(hkdf.derive(key.secret))
    position, index, stream = len(header), 0, b""
    sizes: list[int] = []
    while True:
        (word,) = struct.unpack_from(">I", stored, position)
        final, length = bool(word >> 31), word & 0x7FFFFFFF
        payload = stored[position + 4 : position + 4 + length]
        if aead is not None:
            nonce = b"\0" * 4 + struct.pack(">Q", index)
            aad = header + struct.pack(">Q", index) + bytes([final]) + bound
            payload = aead.decrypt(nonce, payload, aad)
        if final:
            assert position + 4 + length == len(stored), "nothing may follow the final frame"
            assert hashlib.sha256(stored[:position]).digest() == payload[40:72]
            return stream, sizes, payload
        stream += payload
        sizes.append(len(payload))
        position += 4 + length
        index += 1


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
@pytest.mark.parametrize("codec", CODECS)
def test_encoder_writes_the_documented_format(codec: str, key: Key | None) -> None:
    data = sample(2 * MiB + 12345, kind="random")
    if codec == "zstd":  # text: frames of a 2 MiB window, and still more than one data frame
        data = sample(5 * MiB + 12345, kind="text") + sample(MiB, kind="random")
    stored, encoder = encode(data, codec, key)
    assert stored[6] == CODEC_BYTES[codec] and stored[7] == (key is not None)

    stream, sizes, trailer = reference_decode(stored, key)
    assert sizes[:-1] == [MiB] * (len(sizes) - 1) and 0 < sizes[-1] <= MiB
    if codec == "gzip":
        plain = zlib.decompress(stream, wbits=31)
    elif codec == "zstd":
        frames = zstd_frames(stream)
        assert len(frames) == -(-len(data) // WINDOW_LEVEL_3)  # a frame per window of plaintext
        plain = b"".join(frames)
    else:
        plain = stream
    assert plain == data
    assert trailer[:40] == struct.pack(">Q", len(data)) + hashlib.sha256(data).digest()
    assert encoder.stored.sha256 == hashlib.sha256(stored).hexdigest()


WINDOW_LEVEL_3 = 2 * MiB


def zstd_frames(stream: bytes) -> list[bytes]:
    """The plaintext of each zstd frame of a codec stream (RFC 8878: frames back to back)."""
    frames: list[bytes] = []
    while stream:
        decompressor = zstandard.ZstdDecompressor().decompressobj()
        frames.append(decompressor.decompress(stream))
        assert decompressor.eof
        stream = decompressor.unused_data
    return frames


def test_every_object_gets_a_fresh_salt() -> None:
    first, _ = encode(b"same", "gzip", KEY)
    second, _ = encode(b"same", "gzip", KEY)
    assert first[:16] == second[:16] and first[16:32] != second[16:32]
