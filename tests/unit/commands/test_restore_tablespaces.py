"""Relocating tablespaces (restore drills): the links and tablespace_map move together."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from janua_backup.commands import restore
from janua_backup.repository.manifest import FileEntry, Manifest
from tests.unit.repository.helpers import manifest


def with_tablespace() -> Manifest:
    link = FileEntry(
        path="pg_tblspc/16390",
        kind="symlink",
        mode=0o777,
        mtime_ns=1,
        uid=101,
        gid=104,
        link_target="/srv/fast/ts1",
    )
    m = manifest()
    return replace(m, files=(*m.files, link), tablespace_map="16390 /srv/fast/ts1\n")


def test_locations_stay_without_relocation() -> None:
    m = with_tablespace()
    assert restore._tablespace_locations(m, None) == {"pg_tblspc/16390": "/srv/fast/ts1"}
    assert restore._tablespace_map(m, None) == "16390 /srv/fast/ts1\n"


def test_relocation_moves_links_and_map_by_oid(tmp_path: Path) -> None:
    m = with_tablespace()
    assert restore._tablespace_locations(m, tmp_path) == {
        "pg_tblspc/16390": str(tmp_path / "16390")
    }
    assert restore._tablespace_map(m, tmp_path) == f"16390 {tmp_path / '16390'}\n"
