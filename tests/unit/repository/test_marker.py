"""The passphrase KDF: a random salt per repository, kept in its marker.

Before, every repository derived its key with one fixed salt, and the key id in
every header was the same function of the key everywhere: one table of guesses
tested them against every janua repository. Old repositories keep that
derivation and must keep opening.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from janua_backup.cli.app import cli
from janua_backup.commands.common import open_repo
from janua_backup.config import EncryptionSettings, RepoSettings, Settings
from janua_backup.errors import DecryptionError, FormatError, ObjectNotFound
from janua_backup.pipeline.crypto import Passphrase, key_from_passphrase
from janua_backup.pipeline.stream import EncodeSpec, decode_bytes
from janua_backup.repository import layout, marker, wal_archive
from janua_backup.repository.objects import Repo
from janua_backup.storage.memory import MemoryStorage
from janua_backup.storage.posix import PosixStorage

PASSPHRASE = "correct horse battery staple"
SEG = 16 * 1024 * 1024
OLD_REPO = Path(__file__).parent / "data" / "passphrase-v1"
"""Made with janua-backup at git d885d3e (fixed salt, n=2**15, key id v1, format 1):
``marker.ensure`` with the passphrase above, then ``put_bytes`` of
``wal/000000010000000000000003`` (b"segment three " * 64) and ``wal/00000002.history``."""


def settings(root: Path, passphrase: str = PASSPHRASE) -> Settings:
    return Settings(
        repository=RepoSettings(url=f"file://{root}"),
        encryption=EncryptionSettings(passphrase=passphrase),
    )


def created(root: Path, passphrase: str = PASSPHRASE) -> Repo:
    root.mkdir(exist_ok=True)
    repo = open_repo(settings(root, passphrase))
    marker.ensure(repo, system_identifier=42, wal_segment_size=SEG, pg_major=15)
    return repo


def stored_marker(root: Path) -> dict[str, object]:
    raw = (root / layout.MARKER_KEY).read_bytes()
    return dict(json.loads(decode_bytes(raw, None, bind=layout.MARKER_KEY)))


def passphrase_repo(storage: MemoryStorage) -> Repo:
    return Repo(storage, EncodeSpec(codec="gzip", key=Passphrase(PASSPHRASE)))


def test_two_repositories_with_one_passphrase_get_different_salts_keys_and_key_ids(
    tmp_path: Path,
) -> None:
    a, b = created(tmp_path / "a"), created(tmp_path / "b")
    key_a, key_b = a.key, b.key
    assert key_a is not None and key_b is not None
    assert key_a.secret != key_b.secret and key_a.key_id != key_b.key_id

    record = stored_marker(tmp_path / "a")["kdf"]
    assert isinstance(record, dict)
    assert {k: v for k, v in record.items() if k != "salt"} == {
        "name": "scrypt", "n": 2**17, "r": 8, "p": 1
    }  # fmt: skip
    salt = bytes.fromhex(str(record["salt"]))
    assert len(salt) == 16
    # The documented derivation: scrypt with this salt; key id from HKDF bound to it.
    secret = hashlib.scrypt(
        PASSPHRASE.encode(), salt=salt, n=2**17, r=8, p=1, maxmem=256 << 20, dklen=32
    )
    assert key_a.secret == secret
    prk = hmac.new(salt, secret, hashlib.sha256).digest()
    expected_id = hmac.new(prk, b"janua-backup key id v2\x01", hashlib.sha256).digest()[:8]
    assert key_a.key_id == expected_id
    assert stored_marker(tmp_path / "a")["key_id"] == expected_id.hex()
    # No longer the public, repository-independent function of the key.
    legacy_id = hmac.new(secret, b"janua-backup key id v1", hashlib.sha256).digest()[:8]
    assert key_a.key_id != legacy_id


def test_a_new_repository_is_read_back_by_another_process(tmp_path: Path) -> None:
    writer = created(tmp_path / "r")
    writer.put_bytes(layout.wal_key("00000002.history"), b"history")
    # A reader that never checks the marker itself (wal-fetch): the key is derived
    # from the marker on its first encrypted object.
    reader = open_repo(settings(tmp_path / "r"))
    assert reader.spec.key is not None and reader.encrypted
    assert wal_archive.read(reader, "00000002.history") == b"history"


def copy_of_old_repo(tmp_path: Path) -> Path:
    root = tmp_path / "old"
    shutil.copytree(OLD_REPO, root)
    return root


def test_an_old_repository_keeps_the_fixed_salt_derivation(tmp_path: Path) -> None:
    root = copy_of_old_repo(tmp_path)
    assert "kdf" not in stored_marker(root)
    repo = open_repo(settings(root))
    found = marker.read(repo)
    assert found is not None and found.kdf is None
    marker.check_key(repo, found)
    assert repo.key == key_from_passphrase(PASSPHRASE)  # n=2**15, the fixed salt, key id v1
    assert wal_archive.read(repo, "000000010000000000000003") == b"segment three " * 64

    # A lazy reader too, and a writer: new objects are format 2 under the same key.
    lazy = open_repo(settings(root))
    assert wal_archive.read(lazy, "00000002.history").startswith(b"1\t0/3000000")
    marker.ensure(lazy, system_identifier=7000000000000000001, wal_segment_size=SEG, pg_major=15)
    lazy.put_bytes(layout.wal_key("000000010000000000000004"), b"segment four")
    assert wal_archive.read(open_repo(settings(root)), "000000010000000000000004") == (
        b"segment four"
    )
    assert "kdf" not in stored_marker(root)  # the marker is never rewritten


@pytest.mark.parametrize("old", [False, True], ids=["new", "old"])
def test_a_wrong_passphrase_is_one_sentence_exit_21(tmp_path: Path, old: bool) -> None:
    if old:
        root = copy_of_old_repo(tmp_path)
    else:
        root = tmp_path / "r"
        created(root).put_bytes(layout.wal_key("00000002.history"), b"history")
    repo = open_repo(settings(root, "not the passphrase"))
    found = marker.read(repo)
    assert found is not None
    with pytest.raises(DecryptionError, match="wrong encryption key") as caught:
        marker.check_key(repo, found)
    assert caught.value.exit_code == 21 and found.key_id in caught.value.message
    # A reader that does not check the marker first is refused the same way.
    with pytest.raises(DecryptionError, match="wrong encryption key"):
        wal_archive.read(open_repo(settings(root, "not the passphrase")), "00000002.history")

    done = CliRunner().invoke(
        cli, ["--repo", f"file://{root}", "list"], env={"JANUA_BACKUP_PASSPHRASE": "nope"}
    )
    assert done.exit_code == 21, done.output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "wrong encryption key" in lines[0], done.stderr


class LateMarker(MemoryStorage):
    """Says the marker is absent once: this writer lost the race to create it."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = 1

    def get(self, key: str) -> Iterator[bytes]:
        if key == layout.MARKER_KEY and self.hidden:
            self.hidden -= 1
            raise ObjectNotFound(key)
        return super().get(key)


def test_the_loser_of_the_marker_race_uses_the_winners_salt() -> None:
    storage = LateMarker()
    winner = passphrase_repo(storage)
    storage.hidden = 0
    marker.ensure(winner, system_identifier=42, wal_segment_size=SEG, pg_major=15)
    storage.hidden = 1
    loser = passphrase_repo(storage)
    marker.ensure(loser, system_identifier=42, wal_segment_size=SEG, pg_major=15)
    assert loser.key == winner.key
    loser.put_bytes(layout.wal_key("00000002.history"), b"from the loser")
    assert winner.get_bytes(layout.wal_key("00000002.history")) == b"from the loser"


def test_a_first_wal_push_creates_the_marker_before_it_encrypts(tmp_path: Path) -> None:
    # wal-push overlaps its marker check with the compression; with a passphrase the
    # key depends on the marker it creates, so the check must come first.
    root = tmp_path / "r"
    root.mkdir()
    repo = open_repo(settings(root))
    segment = tmp_path / "000000010000000000000003"
    segment.write_bytes(b"wal" * 10_000)

    def check() -> None:
        marker.ensure(repo, system_identifier=42, wal_segment_size=SEG, pg_major=None)

    wal_archive.push(repo, segment.name, segment, check=check, read_ahead_bytes=SEG)
    assert "kdf" in stored_marker(root)
    assert wal_archive.read(open_repo(settings(root)), segment.name) == b"wal" * 10_000


def test_a_reader_of_a_repository_without_marker_is_told_so(tmp_path: Path) -> None:
    repo = open_repo(settings(tmp_path))
    PosixStorage(tmp_path).put(
        layout.wal_key("00000002.history"), [b"JANUA\x02\x01\x01" + bytes(24)]
    )
    with pytest.raises(FormatError, match="no marker"):
        wal_archive.read(repo, "00000002.history")


@pytest.mark.parametrize(
    "record",
    [
        {"name": "scrypt", "salt": "00" * 16, "n": 2**10, "r": 8, "p": 1},  # cheap guesses
        {"name": "scrypt", "salt": "00" * 16, "n": 2**30, "r": 8, "p": 1},  # eats the memory
        {"name": "scrypt", "salt": "00" * 16, "n": 2**17 + 1, "r": 8, "p": 1},
        {"name": "scrypt", "salt": "00" * 16, "n": 2**17, "r": 1, "p": 1},
        {"name": "scrypt", "salt": "00" * 4, "n": 2**17, "r": 8, "p": 1},
        {"name": "pbkdf2", "salt": "00" * 16, "n": 2**17, "r": 8, "p": 1},
        {"name": "scrypt", "salt": "zz" * 16, "n": 2**17, "r": 8, "p": 1},
        {"name": "scrypt", "salt": "00" * 16, "n": "131072", "r": 8, "p": 1},
        {"name": "scrypt", "salt": "00" * 16, "r": 8, "p": 1},
        "scrypt",
    ],
)
def test_a_forged_kdf_record_is_refused(record: object) -> None:
    # The marker is not authenticated: its KDF record is bounded, not trusted.
    repo = passphrase_repo(MemoryStorage())
    marker.ensure(repo, system_identifier=42, wal_segment_size=SEG, pg_major=15)
    body = json.loads(
        decode_bytes(b"".join(repo.storage.get(layout.MARKER_KEY)), None, bind=layout.MARKER_KEY)
    )
    forged = json.dumps({**body, "kdf": record}).encode()
    repo.put_bytes(layout.MARKER_KEY, forged, spec=EncodeSpec(codec="none"))
    with pytest.raises(FormatError, match="not a janua-backup marker"):
        marker.read(repo)


def test_key_file_and_unencrypted_markers_have_no_kdf_record() -> None:
    # Their marker keeps the fields it always had, so older versions still read it.
    for key in (None, key_from_passphrase("a key of its own")):
        repo = Repo(MemoryStorage(), EncodeSpec(codec="gzip", key=key))
        marker.ensure(repo, system_identifier=42, wal_segment_size=SEG, pg_major=15)
        raw = b"".join(repo.storage.get(layout.MARKER_KEY))
        assert "kdf" not in json.loads(decode_bytes(raw, None, bind=layout.MARKER_KEY))
