"""The command a person runs to start a restored cluster: the one that works on this host.

``pg_ctl`` is not on PATH on Debian and Ubuntu (it lives in
/usr/lib/postgresql/<major>/bin), and a data directory that belongs to a
Debian cluster (its configuration under /etc/postgresql/<version>/<name>/,
the data directory named there) is started with ``pg_ctlcluster VERSION NAME
start``, which reads that configuration; ``pg_ctl -D`` would start it without
it. Elsewhere the command names ``pg_ctl`` of ``[postgres] bindir``, or of the
bindir the drill would use for the backup's major, and runs it as the data
directory's owner when we are root (the postmaster refuses root).

Nothing of storage or the repository; reads only /etc/postgresql (a parameter,
so tests pass a fake one) and runs ``postgres --version`` through the drill's finder.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from janua_backup.errors import ConfigError
from janua_backup.pg.scratch import find_bindir

DEBIAN_CONF_ROOT = Path("/etc/postgresql")
# postgresql.conf's data_directory line, as postgresql-common's PgCommon reads it.
_DATA_DIRECTORY_RE = re.compile(
    r"^\s*data_directory\s*=?\s*(?:'((?:[^']|'')*)'|([^\s#]+))", re.MULTILINE
)


@dataclass(frozen=True, slots=True)
class DebianCluster:
    version: str
    name: str


def debian_cluster(pgdata: Path, conf_root: Path = DEBIAN_CONF_ROOT) -> DebianCluster | None:
    """The Debian cluster whose data directory ``pgdata`` is, as ``pg_lsclusters`` finds it:
    each /etc/postgresql/<version>/<name>/postgresql.conf's ``data_directory``, else the
    config directory's ``pgdata`` link (older postgresql-common)."""
    try:
        versions = sorted(conf_root.iterdir())
    except OSError:
        return None
    wanted = _resolved(pgdata)
    for version_dir in versions:
        try:
            names = sorted(version_dir.iterdir()) if version_dir.is_dir() else []
        except OSError:
            continue
        for conf_dir in names:
            data_dir = _data_directory(conf_dir)
            if data_dir is not None and _resolved(data_dir) == wanted:
                return DebianCluster(version_dir.name, conf_dir.name)
    return None


def _data_directory(conf_dir: Path) -> Path | None:
    try:
        text = (conf_dir / "postgresql.conf").read_text(errors="replace")
    except OSError:
        return None
    found = None
    for match in _DATA_DIRECTORY_RE.finditer(text):  # the last setting wins, as in PostgreSQL
        found = match[1].replace("''", "'") if match[1] is not None else match[2]
    if found:
        return Path(found)
    link = conf_dir / "pgdata"
    return Path(os.readlink(link)) if link.is_symlink() else None


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


def start_command(
    pgdata: Path,
    *,
    major: int | None,
    bindir: str | None,
    owner: str | None,
    as_root: bool,
    conf_root: Path = DEBIAN_CONF_ROOT,
) -> str:
    """``pg_ctlcluster VERSION NAME start`` for a Debian cluster's data directory; else
    ``[runuser -u OWNER --] BINDIR/pg_ctl -D PGDATA start``."""
    cluster = debian_cluster(pgdata, conf_root)
    if cluster is not None:  # pg_ctlcluster changes to the cluster's owner itself
        return f"pg_ctlcluster {shlex.quote(cluster.version)} {shlex.quote(cluster.name)} start"
    where = _bindir(major, bindir)
    pg_ctl = str(Path(where) / "pg_ctl") if where else "pg_ctl"
    prefix = f"runuser -u {shlex.quote(owner or 'postgres')} -- " if as_root else ""
    return f"{prefix}{shlex.quote(pg_ctl)} -D {shlex.quote(str(pgdata))} start"


def _bindir(major: int | None, configured: str | None) -> str | None:
    """``[postgres] bindir`` as given, else where the drill finds the major's programs."""
    if configured:
        return configured
    if major is None:
        return None
    try:
        return str(find_bindir(major, None))
    except ConfigError:
        return None  # not installed here: a bare pg_ctl, for the PATH to find
