"""What a pip, pipx or uv user gets: the wheel carries the licence and the policy files,
the installed program finds them, and the version is written once."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from click.testing import CliRunner

import janua_backup
from janua_backup.cli import cli
from janua_backup.cli.policies import POLICY_FILES

ROOT = Path(__file__).resolve().parents[2]
POLICIES = sorted(p.name for p in (ROOT / "policies").iterdir() if p.is_file())


def test_the_wheel_holds_the_licence_and_every_policy_file(tmp_path: Path) -> None:
    source = tmp_path / "src"
    # A copy: setuptools leaves build/ and *.egg-info behind in the tree it builds.
    skip = shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".*_cache")
    shutil.copytree(ROOT, source, ignore=skip)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), "."],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("janua_backup-*.whl")
    assert wheel.name.startswith(f"janua_backup-{janua_backup.__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    assert f"janua_backup-{janua_backup.__version__}.dist-info/licenses/LICENSE" in names
    for name in POLICIES:
        assert f"janua_backup/policies/{name}" in names, name
    metadata = zipfile.ZipFile(wheel).read(
        f"janua_backup-{janua_backup.__version__}.dist-info/METADATA"
    ).decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Author: janua-backup developers" in metadata


def test_the_licence_is_the_apache_2_text() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_the_installed_program_points_at_its_policy_files() -> None:
    # scripts/test installs the work tree non-editable: this is the wheel's copy.
    program = Path(sys.executable).parent / "janua-backup"
    done = subprocess.run([program, "policies", "--path"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    directory = Path(done.stdout.strip())
    assert sorted(p.name for p in directory.iterdir() if p.is_file()) == POLICIES
    for name in POLICIES:
        assert (directory / name).read_bytes() == (ROOT / "policies" / name).read_bytes(), name
    listed = subprocess.run([program, "policies"], capture_output=True, text=True, check=True)
    assert listed.stdout.splitlines() == [str(directory / name) for name in POLICIES]


def test_policies_lists_each_file_the_readme_promises() -> None:
    done = CliRunner().invoke(cli, ["policies"], catch_exceptions=False)
    assert done.exit_code == 0
    listed = {Path(line).name for line in done.output.splitlines()}
    assert set(POLICY_FILES) <= listed


def test_version_is_written_once() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'"{janua_backup.__version__}"' not in pyproject
    done = CliRunner().invoke(cli, ["--version"], catch_exceptions=False)
    assert done.output == f"janua-backup, version {janua_backup.__version__}\n"
