"""The pipeline's import boundary: nothing of storage, repository or PostgreSQL."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import janua_backup.pipeline

PACKAGE = Path(janua_backup.pipeline.__file__).parent
ALLOWED_THIRD_PARTY = {"cryptography", "zstandard", "zlib_ng"}
ALLOWED_OWN = ("janua_backup.errors", "janua_backup.pipeline")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_pipeline_imports_only_stdlib_crypto_and_codecs() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        for name in imported_modules(path):
            top = name.partition(".")[0]
            allowed = (
                top in sys.stdlib_module_names
                or top in ALLOWED_THIRD_PARTY
                or name == "__future__"
                or name.startswith(ALLOWED_OWN)
            )
            assert allowed, f"{path.name} imports {name}"


def test_heavy_libraries_load_only_when_used() -> None:
    # wal-push with gzip and no key must not pay for cryptography or zstandard.
    code = (
        "import sys\n"
        "from janua_backup.pipeline.stream import EncodeSpec, encode_bytes, decode_bytes\n"
        "stored, _, _ = encode_bytes(b'x', EncodeSpec(codec='gzip'), bind='x')\n"
        "assert decode_bytes(stored, None, bind='x') == b'x'\n"
        "print(sorted(m for m in sys.modules if m.startswith(('cryptography', 'zstandard'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=PACKAGE.parents[1],
    )
    assert result.stdout.strip() == "[]"
