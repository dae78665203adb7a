"""zstd codec streams of several zstd frames (writers since 2026-11-26): objects written
before still decode, new ones decode, and the writer ends a frame every window."""

from __future__ import annotations

import hashlib

import pytest
import zstandard

from janua_backup.errors import IntegrityError
from janua_backup.pipeline.compress import new_compressor
from janua_backup.pipeline.crypto import Key
from janua_backup.pipeline.digest import Digest
from janua_backup.pipeline.frames import FrameWriter
from janua_backup.pipeline.header import ObjectHeader, read_header
from janua_backup.pipeline.stream import EncodeSpec, decode, encode_bytes
from tests.unit.pipeline.objects import KEY, NAME, MiB, sample

# Written by janua-backup before zstd streams had several frames (git 563e861), from
# DATA; the encrypted one with KEY. Repositories hold such objects: they must decode.
DATA = b"".join(b"row %d: janua-backup object format 1, " % i for i in range(300))
OLD_ZSTD = bytes.fromhex(
    "4a414e55410102000000015b28b52ffd0058950a00d6d533199037c506d0fab0b11cc16ae8ff4d5cd9bd534a"
    "17fbf47f8e01360029002900ffffffb76ddbb6dbb66d5b9224499e15cd5d1a098884014043711824100486c2"
    "307028200c844581e128041c8b83e360088891804804b66dbb6ddbb6254992a48888888808efeeeeeeeecccc"
    "ccccccaaaaaaaaaa888888888866666666661e2449a9542a954aa552a9f4eeeeeeeececcccccccacaaaaaaaa"
    "8a888888886866666666e6ffffffb71d77777777776666666666555555555544444444443333333333ffffff"
    "bf6ddbb6ddb66ddb922403812ba821f4ebff1bc16754ab0112f8ff5f4180827ffffeef7ffff76fffbbdf7ffd"
    "effb78e5fbbeeffb3ebefe76ef7dbdf76bffda5fbfedeffa364dfca8e656d2aaa2553dab6a56b5ac2a59d5b1"
    "aa62558755ed600d000210100000000000000000ba3fca8fd247f151f6283d2a8fc2a3933bda4e67e7793ecf"
    "73336945d3b40a800000480000000000002d46308bdefac429561a8ca8d14b4e57d39550b2ace09e19486923"
    "d285b4b7a3cdd141086d25f9285cf653dfe6f6d9fc806f9a96b6e97e9b31ab8b7278d31795b7e8"
)

OLD_ZSTD_ENCRYPTED = bytes.fromhex(
    "4a414e554101020153cb7ba9c9d97b191ef1d69e97e9abf1793a4383dd15fed30000016be920fd796c7c2ffd"
    "400deb3fa2f47edadc7cf3978fd98824ed2a3233175bf39949f9e5634fb0476d5fca30d6d75455cf84894ffa"
    "2f60ec3807867a645d87cdfdc8bc97c03c8f452189c2706944d44067cbd3abcd3060a583d1214fb2be9d7661"
    "9d78072e9d59c3afa6020c5524c996dfd3cf2ae5f34ad80b51419a89d4853a0bb4f94917d874957b5c752449"
    "a7a2e8c136d63191aa2b2e21014ff254542887fa72331667ec92c9731a4053437327180576836a9b510ce8ce"
    "a4bb9e5a97bf9c2c97c4262047f9ce2e1403e568403e1d1e2512f1f616a6a577beb810b082b7caf488a53061"
    "6b1d7f88cc58c7cd754d1a0cd6552ac590adabfd9b79194b9dfaa91503d1055e7a93f460f40c8135e633f584"
    "9ad5657b7eb2307cce27cf7c135b6978e5f6e1cfaf5c3421462ae111a416a99a0396d325d86739f58aacd4a8"
    "4a5482b1bfad9d930c0ffb7924f840d427a4ac1186f5ec39636f4f9c4c0a0cd893f3fd259d0a135b4b295b7a"
    "7516be80000058e4810b064a1d54955c123b67112907243b985f4d5b4c6819d2aa7c5932e94fed7845021fd1"
    "cf67f1bb51c7cee50b5d33e2f4495db816d61e3e9e844010d2affef32818bcb8be303cac4230ad8bea37cee2"
    "3562436b2f03d2"
)

OLD_GZIP = bytes.fromhex(
    "4a414e5541010100000003011f8b08000000000000038dd9414edc401445d1ad780144f27bb6abececa64130"
    "00258d5a20b69f25e4ccffe89655aea3ffb8ff2cebefe5fdf6f7fbf6ebf9f6f2f1fdb9dc9fdf5f5fbe96b7fb"
    "e3cfed6bc9d3f2b8ff2c91a1cad02643bb0c1d32346468cad0294317c5b4e4d43c143d543d943dd43d143e54"
    "3e943ed4bed4bef6bd53fb52fb52fb52fb52fb52fb52fb52fb8dda6fd47eb3cb86da6fd47ea3f61bb5dfa8fd"
    "46ed376abf53fb9ddaefd47eb79b9edaefd47ea7f63bb5dfa9fd4eed0f6a7f50fb83da1fd4feb0df2cb53fa8"
    "fd41ed0f6a7f50fb41ed07b51fd47e50fb41ed87bd71a8fda0f683da0f6a3fa9fda4f693da4f6a3fa9fda4f6"
    "d31e98d47e52fb49ed4f6a7f52fb93da9fd4fea4f627b53fa9fd69af7b6a7f52fb8bda5fd4fea2f617b5bfa8"
    "fd45ed2f6a7f51fbcb6885b6325cada6abd578b59aaf5603d66ac25a8d58ab196b3564ad760a4a5c3b05442e"
    "2a17998bce45e8a27491ba66dd187663da8d7137e6dd187863e28d913766de187a63ea8db137e6de187c63f2"
    "8dd13766df187e63fa8df137e6df188063028e113866e01882630a8e3138e6e0188463128e513866e1188663"
    "1a8e7138e6e1188863228e913866e2188a632a8eb138e6e2188c63328ed13866e3188e633a8ef138e6e31890"
    "63428e113966e41892634a8e3139e6e4189463528e513966e51896635a8e7139e6e5189863628e913966e618"
    "9a636a8eb139e6e6189c63728ed13966e79a9d6b76aed9b966e79a9d6b76aed9b966e79a9d6b76aed9b966e7"
    "9a9d6b76aed9b966e79a9d6b76aed9b9b827c645b16e8aed1470578ccb62dc16e3ba18f7c5b830363bd7ec5c"
    "b373cdce353bd7ec5cb373cdce353bd7ec5cb373cdce353bd7ec5cb373cdce353bd7ec5cb373cdce353bd7ec"
    "5cb373cdce353bd7ec5cb373cdce353bd7ec5cb373cdce353bd7ec5cb373cdce353bd7ec5cb373cdce353bd7"
    "ec5cb373cdce353bd7ec5cb373cdce353bd7ec5cb373cdce353bd7ec5cb373cdce353bd7ec5cb373cdce353b"
    "d7ec5cb373cdce353bd7ec5cb373cdce353bd7ecdcffdbf91f3b91b0e0462d0000800000480000000000002d"
    "46308bdefac429561a8ca8d14b4e57d39550b2ace09e19486923d285b4b7a3cdd159ed839545d5764e6861b1"
    "073837552265d32ac2096d0ef54a5a567a2389a040"
)


@pytest.mark.parametrize(
    ("stored", "key"),
    [(OLD_ZSTD, None), (OLD_ZSTD_ENCRYPTED, KEY), (OLD_GZIP, None)],
    ids=["zstd", "zstd-encrypted", "gzip"],
)
def test_objects_written_before_still_decode(stored: bytes, key: Key | None) -> None:
    assert read_header(stored).version == 1
    expect = Digest(len(DATA), hashlib.sha256(DATA).hexdigest())
    assert b"".join(decode([stored], key, bind=NAME, expect_plain=expect)) == DATA


def frame_sizes(stream: bytes) -> list[int]:
    """Plaintext bytes of each zstd frame in a stream of frames back to back."""
    sizes = []
    while stream:
        decompressor = zstandard.ZstdDecompressor().decompressobj()
        sizes.append(len(decompressor.decompress(stream)))
        stream = decompressor.unused_data
    return sizes


@pytest.mark.parametrize(("level", "window"), [(3, 2 * MiB), (1, 512 * 1024), (19, 8 * MiB)])
def test_the_writer_ends_a_zstd_frame_every_window(level: int, window: int) -> None:
    data = sample(2 * window + 12345, kind="text")
    compressor = new_compressor("zstd", level)
    pieces = [data[i : i + 100_000] for i in range(0, len(data), 100_000)]
    stream = b"".join([*(compressor.compress(p) for p in pieces), compressor.flush()])
    assert frame_sizes(stream) == [window, window, 12345]


@pytest.mark.parametrize("size", [0, 1, 2 * MiB, 4 * MiB, 5 * MiB + 3])
@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
def test_objects_of_several_zstd_frames_round_trip(size: int, key: Key | None) -> None:
    # Frame ends falling on the reader's 1 MiB output boundaries included.
    data = sample(size, kind="text")
    stored, plain, stored_digest = encode_bytes(data, EncodeSpec(codec="zstd", key=key), bind=NAME)
    out = b"".join(
        decode([stored], key, bind=NAME, expect_stored=stored_digest, expect_plain=plain)
    )
    assert out == data


def test_any_zstd_frames_back_to_back_decode_and_garbage_after_them_does_not() -> None:
    first, second = sample(3000, seed=1), sample(5000, seed=2)
    stream = zstandard.ZstdCompressor().compress(first) + zstandard.ZstdCompressor().compress(
        second
    )
    assert b"".join(decode([object_of(stream, first + second)], None, bind=NAME)) == first + second
    with pytest.raises(IntegrityError):
        b"".join(decode([object_of(stream + b"junk", first + second)], None, bind=NAME))


def object_of(stream: bytes, plain: bytes) -> bytes:
    """An unencrypted zstd object holding ``stream``, with a trailer for ``plain``."""
    writer = FrameWriter(ObjectHeader(codec="zstd"), None)
    parts = [writer.start(), *writer.write(stream)]
    parts += writer.close(len(plain), hashlib.sha256(plain).digest())
    return b"".join(parts)
