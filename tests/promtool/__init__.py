"""promtool, Prometheus' own checker, run on what janua-backup gives Prometheus.

Debian's ``prometheus`` package ships it as /usr/bin/promtool and ``.ci/run``
installs it, so CI always runs these checks; a machine without it skips them.
The rule unit tests (``promtool test rules``) live beside this file as YAML.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ALERTS = ROOT / "policies" / "prometheus-alerts.yml"


def available() -> bool:
    """Whether promtool can run; ``False`` only off CI (where it is required)."""
    return shutil.which("promtool") is not None or bool(os.environ.get("JANUA_REQUIRE_PROMTOOL"))


def promtool() -> str:
    """The promtool to run; skips the calling test when there is none."""
    found = shutil.which("promtool")
    if found is None and os.environ.get("JANUA_REQUIRE_PROMTOOL"):
        pytest.fail("promtool is not installed, and .ci/run requires it (JANUA_REQUIRE_PROMTOOL)")
    if found is None:
        pytest.skip("promtool is not installed (apt-get install prometheus; CI has it)")
    return found


def check_metrics(exposition: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on a scrape's text: exit 0 and no output when it conforms."""
    return subprocess.run(
        [promtool(), "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
