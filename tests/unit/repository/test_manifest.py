from __future__ import annotations

import json
from dataclasses import replace

import pytest

from janua_backup.errors import FormatError
from janua_backup.repository.manifest import FileEntry, from_json, tablespace_map_locations, to_json
from tests.unit.repository.helpers import manifest


def test_manifest_round_trips_through_json() -> None:
    m = manifest()
    assert from_json(to_json(m)) == m
    assert m.original_size_bytes == 3 and m.stored_size_bytes == 40
    assert m.object("data/000001").plain_size_bytes == 3


def test_manifest_refuses_malformed_and_newer_formats() -> None:
    with pytest.raises(FormatError):
        from_json(b'{"backup_id": "x"}')
    raw = to_json(manifest()).replace(b'"format_version":1', b'"format_version":99')
    with pytest.raises(FormatError, match="newer"):
        from_json(raw)
    with pytest.raises(FormatError):
        manifest().object("data/999999")


def with_entries(*entries: FileEntry, tablespace_map: str = "") -> bytes:
    m = manifest()
    return to_json(replace(m, files=(*m.files, *entries), tablespace_map=tablespace_map))


def link(oid: str, target: str) -> FileEntry:
    return FileEntry(f"pg_tblspc/{oid}", "symlink", 0o777, 1, 0, 0, link_target=target)


def directory(path: str) -> FileEntry:
    return FileEntry(path, "dir", 0o700, 1, 0, 0)


@pytest.mark.parametrize(
    ("entries", "ts_map", "problem"),
    [
        ((directory("base/./1"),), "", "not a normalised relative path"),
        ((directory("base//1"),), "", "not a normalised relative path"),
        ((directory("a\x00b"),), "", "NUL"),
        ((link("16385", "ts"),), "", "not to an absolute location"),
        ((link("16385", "/srv/../etc"),), "", "not to an absolute location"),
        ((link("16385", "/"),), "", "not to an absolute location"),
        ((directory("PG_VERSION/x"),), "", "lies under the file 'PG_VERSION'"),
        ((link("1", "/srv/a"), link("2", "/srv/a/b")), "", "overlap"),
        ((link("1", "/srv/a"),), "1 ../x\n", "not an absolute location"),
        ((link("1", "/srv/a"),), "one /srv/a\n", "is not '<oid> <location>'"),
    ],
)
def test_paths_a_restore_could_not_confine_are_refused(
    entries: tuple[FileEntry, ...], ts_map: str, problem: str
) -> None:
    with pytest.raises(FormatError, match=problem) as refused:
        from_json(with_entries(*entries, tablespace_map=ts_map))
    assert refused.value.exit_code == 24


def test_what_postgresql_itself_writes_is_accepted() -> None:
    """A hand-made link with a trailing slash, an escaped newline in a map location, an
    in-place tablespace (a directory, its map line relative), the version subdirectory."""
    entries = (
        directory("pg_tblspc"),
        link("16385", "/srv/ts/"),
        directory("pg_tblspc/16385/PG_15_202209061"),
        link("16390", "/srv/odd\nname"),
        directory("pg_tblspc/16400"),
        directory("pg_tblspc/16400/PG_15_202209061"),
    )
    ts_map = "16385 /srv/ts/\n16390 /srv/odd\\\nname\n16400 pg_tblspc/16400\n"
    assert tablespace_map_locations(ts_map)["16390"] == "/srv/odd\nname"
    from_json(with_entries(*entries, tablespace_map=ts_map))


def test_the_source_of_a_backup_is_kept_where_every_format_reads_it() -> None:
    """A standby's backup stays format 1 (no new key: older readers refuse unknown keys);
    a manifest without a source was written when only primaries could be backed up."""
    standby = replace(manifest(), extra={"source": "standby"})
    raw = json.loads(to_json(standby))
    assert raw["format_version"] == 1 and raw["extra"] == {"source": "standby"}
    assert from_json(to_json(standby)).source == "standby"
    del raw["extra"]
    assert from_json(json.dumps(raw).encode()).source == "primary"
