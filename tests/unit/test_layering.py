"""Dependencies point one way (STYLE.md): storage, pipeline and pg never import
each other; the repository knows nothing of psycopg; only cli renders output."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "janua_backup"

FORBIDDEN = {
    "storage": (
        "janua_backup.pg",
        "janua_backup.pipeline",
        "janua_backup.repository",
        "janua_backup.commands",
    ),
    "pipeline": (
        "janua_backup.pg",
        "janua_backup.storage",
        "janua_backup.repository",
        "janua_backup.commands",
    ),
    "pg": (
        "janua_backup.storage",
        "janua_backup.pipeline",
        "janua_backup.repository",
        "janua_backup.commands",
        "boto3",
        "botocore",
    ),
    "repository": ("psycopg", "janua_backup.commands", "janua_backup.cli", "boto3"),
    "commands": ("janua_backup.cli", "janua_backup.output", "click"),
}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_dependencies_point_one_way() -> None:
    violations = []
    for package, banned in FORBIDDEN.items():
        for module in (PACKAGE / package).glob("*.py"):
            for name in imports(module):
                if name.startswith(banned):
                    violations.append(f"{package}/{module.name} imports {name}")
    assert violations == []
