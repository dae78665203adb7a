"""Ship the top-level policies/ directory inside the package as janua_backup/policies.

Everything else is declared in pyproject.toml. policies/ stays at the top of the
repository, where operators and reviewers look for it and edit it; the build copies
it into the wheel so a pip, pipx or uv install has the alert rules, the IAM policy
and the default policy too (``janua-backup policies --path`` prints where).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SOURCE = Path(__file__).resolve().parent / "policies"


class BuildWithPolicies(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install reads the work tree's policies/ directly
        target = Path(self.build_lib) / "janua_backup" / "policies"
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(SOURCE.iterdir()):
            if path.is_file():
                shutil.copyfile(path, target / path.name)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not self.editable_mode:
            target = Path(self.build_lib) / "janua_backup" / "policies"
            outputs += [str(target / p.name) for p in sorted(SOURCE.iterdir()) if p.is_file()]
        return outputs


setup(cmdclass={"build_py": BuildWithPolicies})
