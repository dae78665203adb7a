"""scripts/janua-extract, the way out without janua-backup, against repositories janua writes.

Repositories are written by janua's own code (posix storage, the real pipeline, real
bundles, parts and an incremental's references); the script runs in a subprocess
with ``python -I`` in an interpreter where ``janua_backup`` cannot be imported: the
system Python (no zstandard there: zstd goes through the ``zstd`` command) and the
venv's Python behind an import guard (zstd through the zstandard module). Extracted
files must be byte-identical to the data backed up; damage and hostile manifests
must stop it with one sentence and exit 128, nothing written.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import secrets
import shutil
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from janua_backup.pg.wal import Lsn
from janua_backup.pipeline.crypto import Key, Passphrase, key_from_passphrase
from janua_backup.pipeline.stream import EncodeSpec
from janua_backup.repository import catalog, layout, marker, transfer, wal_archive
from janua_backup.repository.manifest import FileEntry, Manifest, required_format, to_json
from janua_backup.repository.objects import Repo
from janua_backup.repository.transfer import SourceFile
from janua_backup.storage.posix import PosixStorage
from tests.unit.repository.helpers import manifest as base_manifest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "janua-extract"
SYSTEM_PYTHON = Path("/usr/bin/python3")
MIB = 1024 * 1024
PART = 256 * 1024
SEG = MIB
SYSID = 7300000000000000042
PASSPHRASE = "correct horse battery staple"
IDS = ("20261125T120000Z", "20261125T130000Z")
GUARD = """\
import runpy, sys
class _NoJanua:
    def find_spec(self, name, path=None, target=None):
        if name == "janua_backup" or name.startswith("janua_backup."):
            raise ImportError("janua_backup is not importable here")
sys.meta_path.insert(0, _NoJanua())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


# --------------------------------------------------------------------------- interpreters


def _system_python_usable() -> bool:
    if not SYSTEM_PYTHON.exists():
        return False
    probe = "import cryptography, importlib.util as u; assert u.find_spec('janua_backup') is None"
    done = subprocess.run([str(SYSTEM_PYTHON), "-I", "-c", probe], capture_output=True, check=False)
    return done.returncode == 0


def interpreter(kind: str, directory: Path) -> list[str]:
    """argv prefix that runs the script where janua_backup cannot be imported: the
    system Python (zstd via the zstd command) or this venv's behind an import guard
    (zstd via the zstandard module)."""
    if kind == "system":
        if not _system_python_usable():
            pytest.skip("no /usr/bin/python3 with cryptography and without janua_backup")
        return [str(SYSTEM_PYTHON), "-I", str(SCRIPT)]
    guard = directory / "guard.py"
    guard.write_text(GUARD)
    return [sys.executable, "-I", str(guard), str(SCRIPT)]


@pytest.fixture
def runner(tmp_path: Path) -> list[str]:
    return interpreter("system" if _system_python_usable() else "guarded", tmp_path)


def extract(
    runner: list[str], root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cwd = root.parent / "cwd"
    cwd.mkdir(exist_ok=True)
    return subprocess.run(
        [*runner, str(root), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})},
        timeout=120,
        check=False,
    )


def refused(done: subprocess.CompletedProcess[str], *needles: str, code: int = 128) -> str:
    assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("janua-extract: error: "), done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_the_script_imports_nothing_of_janua() -> None:
    allowed = {"cryptography", "zstandard", "compression", "__future__"}
    tree = ast.parse(SCRIPT.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for name in names:
            top = name.split(".")[0]
            assert top in allowed or top in sys.stdlib_module_names, name
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env python3\n")


def test_the_system_interpreter_cannot_import_janua() -> None:
    if not SYSTEM_PYTHON.exists():
        pytest.skip("no /usr/bin/python3")
    done = subprocess.run(
        [str(SYSTEM_PYTHON), "-I", "-c", "import janua_backup"], capture_output=True, check=False
    )
    assert done.returncode != 0 and b"ModuleNotFoundError" in done.stderr


# --------------------------------------------------------------------------- repositories


class Source:
    """A data directory as a backup sees it: entries (files, dirs, one tablespace link)."""

    def __init__(self, base: Path) -> None:
        self.data = base / "data"
        self.space = base / "space"  # the tablespace location
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, int] = {}
        self.dirs = {
            "base": 0o700,
            "base/1": 0o700,
            "global": 0o700,
            "pg_wal": 0o700,
            "pg_tblspc": 0o700,
            "pg_tblspc/16400/PG_15_202209061": 0o700,
            "pg_tblspc/16400/PG_15_202209061/1": 0o750,
        }

    def put(self, path: str, data: bytes, mode: int = 0o600) -> None:
        self.files[path] = data
        self.modes[path] = mode

    def real(self, path: str) -> Path:
        if path.startswith("pg_tblspc/16400/"):
            return self.space / path[len("pg_tblspc/16400/") :]
        return self.data / path

    def write(self) -> None:
        for path, data in self.files.items():
            self.real(path).parent.mkdir(parents=True, exist_ok=True)
            self.real(path).write_bytes(data)
            os.chmod(self.real(path), self.modes[path])

    def entries(self) -> tuple[list[SourceFile], list[FileEntry]]:
        files = []
        for path in sorted(self.files):
            st = self.real(path).stat()
            entry = FileEntry(
                path=path, kind="file", mode=self.modes[path],
                mtime_ns=st.st_mtime_ns, uid=st.st_uid, gid=st.st_gid,
                size_bytes=st.st_size,
            )  # fmt: skip
            files.append(SourceFile(entry, self.real(path)))
        others = [
            FileEntry(path=p, kind="dir", mode=m, mtime_ns=10**18, uid=0, gid=0)
            for p, m in self.dirs.items()
        ]
        others.append(
            FileEntry(
                path="pg_tblspc/16400",
                kind="symlink",
                mode=0o777,
                mtime_ns=0,
                uid=0,
                gid=0,
                link_target=str(self.space),
            )
        )
        return files, others


def pseudo_random(seed: int, size: int) -> bytes:
    out, counter = bytearray(), 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def back_up(repo: Repo, backup_id: str, source: Source, parent: Manifest | None) -> Manifest:
    """What commands.backup does with the files, without PostgreSQL (real objects)."""
    source.write()
    files, others = source.entries()
    reuse = transfer.Reuse(files, [], [])
    if parent is not None:
        reuse = transfer.reuse_unchanged(repo, parent, files, jobs=2)
    stored, objects = transfer.upload(
        repo, backup_id, reuse.upload, jobs=2,
        bundle_limit=64 * 1024, bundle_size=256 * 1024, part_size=PART,
    )  # fmt: skip
    m = replace(
        base_manifest(backup_id),
        backup_type="incr" if parent else "full",
        depends_on=parent.backup_id if parent else None,
        system_identifier=SYSID,
        wal_segment_size=SEG,
        start_lsn=Lsn(2 * SEG + 0x28),
        stop_lsn=Lsn(3 * SEG + 0x100),
        encrypted=repo.key is not None,
        backup_label=f"START WAL LOCATION: 0/200028\nLABEL: {backup_id}\n",
        tablespace_map=f"16400 {source.space}\n",
        files=tuple(sorted([*stored, *reuse.referenced, *others], key=lambda f: f.path)),
        objects=(*objects, *reuse.objects),
    )
    m = replace(m, format_version=required_format(m))
    catalog.commit(repo, m)
    return m


def segment(timeline: int, number: int, fill: int) -> tuple[str, bytes]:
    header = struct.pack("<HHIQI4xQII", 0xD110, 0x0002, timeline, number * SEG, 0, SYSID, SEG, 8192)
    name = f"{timeline:08X}{number // 4096:08X}{number % 4096:08X}"
    return name, header + bytes([fill]) * (SEG - len(header))


class Built:
    def __init__(self, root: Path, repo: Repo, source: Source, states: list[dict[str, bytes]]):
        self.root, self.repo, self.source, self.states = root, repo, source, states
        self.manifests: list[Manifest] = []
        self.wal: dict[str, bytes] = {}


def build(tmp: Path, codec: str, secret: str) -> tuple[Built, list[str]]:
    """A full backup and an incremental, two segments and a history file; returns the
    repository and the key options the script needs."""
    root = tmp / "repo"
    root.mkdir()
    key: Key | Passphrase | None = None
    options: list[str] = []
    if secret == "key-file":
        key_path = tmp / "repo.key"
        raw = secrets.token_bytes(32)
        key_path.write_text(raw.hex() + "\n")
        key, options = Key(raw), ["--key-file", str(key_path)]
    elif secret == "passphrase":  # a new repository: the marker's kdf record, key id v2
        key, options = Passphrase(PASSPHRASE), ["--passphrase-env", "REPO_PASS"]
    elif secret == "legacy-passphrase":  # an old repository's fixed salt, key id v1
        key, options = key_from_passphrase(PASSPHRASE), ["--passphrase-env", "REPO_PASS"]
    repo = Repo(PosixStorage(root), EncodeSpec(codec=codec, key=key))
    made = marker.ensure(repo, system_identifier=SYSID, wal_segment_size=SEG, pg_major=15)
    assert (made.kdf is not None) == (secret == "passphrase")
    source = Source(tmp)
    source.put("PG_VERSION", b"15\n")
    source.put("postgresql.conf", b"# settings\n", 0o640)
    source.put("base/1/1259", pseudo_random(1, 200_000))  # an object of its own
    source.put("base/1/2608", pseudo_random(2, 40_000))  # bundled
    source.put("base/1/2609", pseudo_random(3, 30_000))  # bundled
    source.put("base/1/empty", b"")
    source.put("base/1/16384", pseudo_random(4, 2 * PART + 12345))  # three parts
    source.put("base/1/16390", pseudo_random(5, 3 * PART))  # three full parts, unchanged
    source.put("pg_tblspc/16400/PG_15_202209061/1/20000", pseudo_random(6, 70_000))
    source.put("global/pg_control", pseudo_random(7, 8192))
    built = Built(root, repo, source, [])
    built.states.append(dict(source.files))
    built.manifests.append(back_up(repo, IDS[0], source, None))
    source.put("base/1/16384", pseudo_random(8, 2 * PART + 999))
    source.put("base/1/2609", pseudo_random(9, 31_000))
    source.put("base/1/3000", b"new file\n")
    built.states.append(dict(source.files))
    built.manifests.append(back_up(repo, IDS[1], source, built.manifests[0]))
    assert built.manifests[1].references == {IDS[0]}
    for number, fill in ((2, 0xAA), (3, 0xBB)):
        name, data = segment(1, number, fill)
        (tmp / name).write_bytes(data)
        wal_archive.push(repo, name, tmp / name)
        built.wal[name] = data
    (tmp / "00000002.history").write_bytes(b"1\t0/3000000\tno recovery target specified\n")
    wal_archive.push(repo, "00000002.history", tmp / "00000002.history")
    built.wal["00000002.history"] = (tmp / "00000002.history").read_bytes()
    return built, options


ENV = {"REPO_PASS": PASSPHRASE}


def assert_extracted(dest: Path, space: Path, source: Source, state: dict[str, bytes]) -> None:
    for path, data in state.items():
        where = (
            space / path[len("pg_tblspc/16400/") :]
            if path.startswith("pg_tblspc/16400/")
            else dest / path
        )
        assert where.read_bytes() == data, path
        assert where.stat().st_mode & 0o777 == source.modes[path], path
    written = {
        str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() and not p.is_symlink()
    } | {"pg_tblspc/16400/" + str(p.relative_to(space)) for p in space.rglob("*") if p.is_file()}
    assert written == set(state) | {"backup_label", "tablespace_map"}
    for path, mode in source.dirs.items():
        where = (
            space / path[len("pg_tblspc/16400/") :]
            if path.startswith("pg_tblspc/16400/")
            else dest / path
        )
        assert where.is_dir() and not where.is_symlink() and where.stat().st_mode & 0o777 == mode
    assert os.readlink(dest / "pg_tblspc/16400") == str(space)
    assert (dest / "tablespace_map").read_text() == f"16400 {space}\n"
    assert dest.stat().st_mode & 0o777 == 0o700
    assert not (dest / "recovery.signal").exists()


MATRIX = [
    (codec, secret, "system")
    for codec in ("none", "gzip", "zstd")
    for secret in ("plain", "key-file", "passphrase")
] + [
    ("gzip", "legacy-passphrase", "system"),
    ("zstd", "plain", "guarded"),
    ("zstd", "passphrase", "guarded"),
    ("gzip", "key-file", "guarded"),
]


@pytest.mark.parametrize(("codec", "secret", "python"), MATRIX)
def test_backups_and_wal_come_out_byte_identical(
    tmp_path: Path, codec: str, secret: str, python: str
) -> None:
    runner = interpreter(python, tmp_path)
    built, options = build(tmp_path, codec, secret)
    listed = extract(runner, built.root, *options, "list", env=ENV)
    assert listed.returncode == 0, listed.stderr
    assert IDS[0] in listed.stdout and f"parent {IDS[0]}" in listed.stdout
    assert "000000010000000000000002 .. 000000010000000000000003" in listed.stdout

    for index, backup_id in enumerate(IDS):
        dest, space = tmp_path / f"dest{index}", tmp_path / f"spaces{index}"
        done = extract(
            runner, built.root, *options, "backup", backup_id, str(dest),
            "--tablespace-dir", str(space), env=ENV,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "restore_command" in done.stdout and "wal %f %p" in done.stdout
        assert_extracted(dest, space / "16400", built.source, built.states[index])
        label = built.manifests[index].backup_label
        assert (dest / "backup_label").read_text() == label

    for name, data in built.wal.items():
        assert (built.root / "wal" / name).read_bytes()[5] == (1 if secret == "plain" else 2)
        out = tmp_path / "pg_wal-RECOVERYXLOG"
        done = extract(runner, built.root, *options, "wal", name, str(out), env=ENV)
        assert done.returncode == 0, done.stderr
        assert out.read_bytes() == data
    absent = extract(
        runner, built.root, *options, "wal", "000000010000000000000009", str(out), env=ENV
    )
    refused(absent, "not in the repository", code=1)


@pytest.fixture
def plain(tmp_path: Path) -> Built:
    built, _ = build(tmp_path, "gzip", "plain")
    return built


def test_a_tampered_object_stops_the_extraction_and_leaves_nothing(
    tmp_path: Path, runner: list[str], plain: Built
) -> None:
    parts = plain.manifests[0].files
    big = next(f for f in parts if f.path == "base/1/1259")
    path = plain.root / layout.data_key(IDS[0], big.object or "")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    dest.mkdir()
    done = extract(
        runner, plain.root, "backup", IDS[0], str(dest), "--tablespace-dir", str(tmp_path / "ts")
    )
    refused(done, "damaged")
    assert list(dest.iterdir()) == [] and list((tmp_path / "ts").iterdir()) == []


def test_a_segment_stored_under_another_name_is_refused(
    tmp_path: Path, runner: list[str], plain: Built
) -> None:
    wal = plain.root / "wal"
    shutil.copyfile(wal / "000000010000000000000003", wal / "000000010000000000000002")
    out = tmp_path / "RECOVERYXLOG"
    done = extract(runner, plain.root, "wal", "000000010000000000000002", str(out))
    refused(done, "wrong name")
    assert not out.exists()


def test_encrypted_objects_refuse_a_wrong_key_and_a_planted_plain_object(
    tmp_path: Path, runner: list[str]
) -> None:
    built, options = build(tmp_path, "zstd", "key-file")
    other = tmp_path / "other.key"
    other.write_text(secrets.token_hex(32))
    out = tmp_path / "RECOVERYXLOG"
    done = extract(
        runner, built.root, "--key-file", str(other), "wal", "000000010000000000000002", str(out)
    )
    refused(done, "another key")
    plain_repo = Repo(PosixStorage(built.root), EncodeSpec(codec="gzip", key=None))
    name, data = segment(1, 5, 0xCC)
    (tmp_path / name).write_bytes(data)
    wal_archive.push(plain_repo, name, tmp_path / name)
    done = extract(runner, built.root, *options, "wal", name, str(out))
    refused(done, "not encrypted")
    done = extract(runner, built.root, "wal", "000000010000000000000002", str(out))
    refused(done, "--key-file")


# --------------------------------------------------------------------------- hostile manifests


def _hostile(built: Built, **changes: object) -> None:
    """Replaces backup IDS[1]'s manifest with one changed as given (JSON level)."""
    raw = json.loads(to_json(built.manifests[1]))
    for name, value in changes.items():
        raw[name] = value(raw[name]) if callable(value) else value
    key = layout.manifest_key(IDS[1])
    (built.root / key).unlink()
    built.repo.put_bytes(key, json.dumps(raw).encode())


def _with_entry(**entry: object):  # type: ignore[no-untyped-def]
    base = {"kind": "dir", "mode": 0o700, "mtime_ns": 0, "uid": 0, "gid": 0}
    return lambda files: [*files, {**base, **entry}]


def _rename(old: str, new: str):  # type: ignore[no-untyped-def]
    return lambda files: [{**f, "path": new} if f["path"] == old else f for f in files]


HOSTILE = {
    "dot-dot file": {"files": _rename("PG_VERSION", "../../escaped")},
    "dot-dot inside": {"files": _rename("PG_VERSION", "base/../../escaped")},
    "absolute file": {"files": _rename("PG_VERSION", "/tmp/escaped")},
    "dir outside": {"files": _with_entry(path="../outside")},
    "symlink elsewhere": {"files": _with_entry(path="base/evil", kind="symlink", link_target="/")},
    "relative tablespace link": {
        "files": lambda files: [
            {**f, "link_target": "../../outside"} if f["kind"] == "symlink" else f for f in files
        ]
    },
    "file under a file": {"files": _rename("base/1/2608", "PG_VERSION/2608")},
    "tablespace without a link": {"files": _rename("base/1/2608", "pg_tblspc/16401/2608")},
    "backup_label planted": {"files": _rename("PG_VERSION", "backup_label")},
    "copied from another backup": {"backup_id": IDS[0]},
    "map disagrees": {"tablespace_map": "16400 /somewhere/else\n"},
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_manifests_are_refused_before_anything_is_written(
    tmp_path: Path, runner: list[str], plain: Built, case: str
) -> None:
    _hostile(plain, **HOSTILE[case])
    sibling = tmp_path / "sibling"
    sibling.mkdir()
    (sibling / "keep").write_text("keep")
    dest = sibling / "a" / "b" / "dest"
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    done = extract(
        runner, plain.root, "backup", IDS[1], str(dest), "--tablespace-dir", str(sibling / "ts")
    )
    refused(done)
    assert sorted(str(p) for p in tmp_path.rglob("*") if "/cwd" not in str(p)) == [
        p for p in before if "/cwd" not in p
    ]


def test_tablespaces_need_an_explicit_place(
    tmp_path: Path, runner: list[str], plain: Built
) -> None:
    done = extract(runner, plain.root, "backup", IDS[0], str(tmp_path / "dest"))
    refused(done, "--tablespace-dir")
    assert not (tmp_path / "dest").exists()


def test_a_non_empty_destination_is_refused(
    tmp_path: Path, runner: list[str], plain: Built
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "old").write_text("x")
    done = extract(
        runner, plain.root, "backup", IDS[0], str(dest), "--tablespace-dir", str(tmp_path / "t")
    )
    refused(done, "not empty")
    assert [p.name for p in dest.iterdir()] == ["old"]


# --------------------------------------------------------------------------- format v2, kdf


def v2_object(master: bytes, key_id: bytes, key: str, plaintext: bytes) -> bytes:
    """An encrypted object of format version 2 (docs/format.md), codec none, written
    here from the specification: every frame's AAD ends with the object's key."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    salt = secrets.token_bytes(16)
    header = b"JANUA" + bytes((2, 0, 1)) + key_id + salt
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"janua-backup object v1")
    aead = AESGCM(hkdf.derive(master))
    name = key.encode()
    out = [header]

    def frame(index: int, payload: bytes, final: bool) -> bytes:
        position = struct.pack(">Q", index)
        aad = header + position + bytes((final,)) + struct.pack(">H", len(name)) + name
        sealed = aead.encrypt(b"\0\0\0\0" + position, payload, aad)
        return struct.pack(">I", len(sealed) | (1 << 31 if final else 0)) + sealed

    pieces = [plaintext[i : i + MIB] for i in range(0, len(plaintext), MIB)]
    out += [frame(i, piece, False) for i, piece in enumerate(pieces)]
    body = hashlib.sha256(b"".join(out)).digest()
    trailer = struct.pack(">Q32s32s", len(plaintext), hashlib.sha256(plaintext).digest(), body)
    out.append(frame(len(pieces), trailer, True))
    return b"".join(out)


def test_format_v2_objects_with_the_markers_kdf_record(tmp_path: Path, runner: list[str]) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    salt = secrets.token_bytes(16)
    master = hashlib.scrypt(
        PASSPHRASE.encode(), salt=salt, n=131072, r=8, p=1, maxmem=256 * MIB, dklen=32
    )
    plain = Repo(PosixStorage(root), EncodeSpec(codec="none", key=None))
    key_id = Key(master, id_salt=salt).key_id
    record = {
        "format_version": 1, "system_identifier": SYSID, "pg_major": 15,
        "wal_segment_size": SEG, "key_id": key_id.hex(), "created": "now",
        "kdf": {"name": "scrypt", "salt": salt.hex(), "n": 131072, "r": 8, "p": 1},
    }  # fmt: skip
    plain.put_bytes(layout.MARKER_KEY, json.dumps(record).encode())

    def store(key: str, data: bytes) -> bytes:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        stored = v2_object(master, key_id, key, data)
        (root / key).write_bytes(stored)
        return stored

    name, wal = segment(1, 4, 0x44)
    store(f"wal/{name}", wal)
    bundle = b"15\n" + pseudo_random(11, 5000)
    stored = store(f"backups/{IDS[0]}/data/000001", bundle)
    files = [
        {"path": "PG_VERSION", "kind": "file", "mode": 0o600, "mtime_ns": 5, "uid": 0,
         "gid": 0, "size_bytes": 3, "sha256": hashlib.sha256(b"15\n").hexdigest(),
         "object": "data/000001", "offset": 0},
        {"path": "base", "kind": "dir", "mode": 0o700, "mtime_ns": 5, "uid": 0, "gid": 0},
        {"path": "base/big", "kind": "file", "mode": 0o600, "mtime_ns": 5, "uid": 0,
         "gid": 0, "size_bytes": 5000, "sha256": hashlib.sha256(bundle[3:]).hexdigest(),
         "object": "data/000001", "offset": 3},
    ]  # fmt: skip
    objects = [
        {"name": "data/000001", "plain_size_bytes": len(bundle),
         "plain_sha256": hashlib.sha256(bundle).hexdigest(),
         "stored_size_bytes": len(stored), "stored_sha256": hashlib.sha256(stored).hexdigest()},
    ]  # fmt: skip
    raw = json.loads(to_json(base_manifest(IDS[0])))
    raw.update(files=files, objects=objects, encrypted=True)
    store(layout.manifest_key(IDS[0]), json.dumps(raw).encode())

    options = ["--passphrase-env", "REPO_PASS"]
    out = tmp_path / "RECOVERYXLOG"
    done = extract(runner, root, *options, "wal", name, str(out), env=ENV)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == wal
    dest = tmp_path / "dest"
    done = extract(runner, root, *options, "backup", IDS[0], str(dest), env=ENV)
    assert done.returncode == 0, done.stderr
    assert (dest / "PG_VERSION").read_bytes() == b"15\n"
    assert (dest / "base/big").read_bytes() == bundle[3:]

    # Version 2 binds the key: the same object under another name fails authentication,
    # although its header and trailer are intact.
    other, _ = segment(1, 5, 0)
    shutil.copyfile(root / "wal" / name, root / "wal" / other)
    refused(extract(runner, root, *options, "wal", other, str(out), env=ENV), "another name")
    wrong = extract(runner, root, *options, "wal", name, str(out), env={"REPO_PASS": "guess"})
    refused(wrong, "another key")


def test_tablespaces_as_recorded_go_where_they_were_and_only_into_an_empty_place(
    tmp_path: Path, runner: list[str], plain: Built
) -> None:
    dest = tmp_path / "dest"
    args = ["backup", IDS[1], str(dest), "--tablespaces-as-recorded"]
    refused(extract(runner, plain.root, *args), "not empty")
    assert not dest.exists()
    shutil.move(plain.source.space, tmp_path / "space.old")
    done = extract(runner, plain.root, *args)
    assert done.returncode == 0, done.stderr
    assert os.readlink(dest / "pg_tblspc/16400") == str(plain.source.space)
    moved = tmp_path / "space.old/PG_15_202209061/1/20000"
    assert (plain.source.space / "PG_15_202209061/1/20000").read_bytes() == moved.read_bytes()
    assert (dest / "tablespace_map").read_text() == f"16400 {plain.source.space}\n"


def test_an_incremental_whose_parent_lost_an_object_is_refused(
    tmp_path: Path, runner: list[str], plain: Built
) -> None:
    referenced = [o for o in plain.manifests[1].objects if o.backup_id == IDS[0]]
    (plain.root / layout.data_key(IDS[0], referenced[0].name)).unlink()
    dest = tmp_path / "dest"
    done = extract(runner, plain.root, "backup", IDS[1], str(dest), "--tablespace-dir", "ts")
    refused(done, "missing", f"backups/{IDS[0]}/")
    assert not dest.exists()


def test_format_v1_objects_of_an_old_passphrase_repository(
    tmp_path: Path, runner: list[str]
) -> None:
    """Made by janua-backup before format 2 and the kdf record (d885d3e): fixed salt,
    key id v1, version-1 objects without the name in their AAD."""
    root = tmp_path / "repo"
    shutil.copytree(Path(__file__).parent / "repository/data/passphrase-v1", root)
    assert b"kdf" not in (root / "repository.json").read_bytes()
    assert (root / "wal/00000002.history").read_bytes()[5] == 1  # format version 1
    expected = Repo(PosixStorage(root), EncodeSpec(key=Passphrase(PASSPHRASE)))
    out = tmp_path / "history"
    done = extract(
        runner, root, "--passphrase-env", "REPO_PASS", "wal", "00000002.history", str(out), env=ENV
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == expected.get_bytes("wal/00000002.history")
