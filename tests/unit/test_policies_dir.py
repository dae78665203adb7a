"""The files of policies/ an operator copies: they must load, parse and say what they claim."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from janua_backup import policy

POLICIES = Path(__file__).resolve().parents[2] / "policies"
OBJECT_ACTIONS = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}
BUCKET_ACTIONS = {"s3:ListBucket", "s3:GetBucketLocation"}


def statements() -> list[dict[str, Any]]:
    document = json.loads((POLICIES / "s3-iam-policy.json").read_text(encoding="utf-8"))
    assert document["Version"] == "2012-10-17"
    found: list[dict[str, Any]] = document["Statement"]
    return found


def as_set(value: str | list[str]) -> set[str]:
    return {value} if isinstance(value, str) else set(value)


def test_default_toml_loads_and_runs_every_job() -> None:
    loaded = policy.load(POLICIES / "default.toml")
    assert [name for name, _ in loaded.schedule.jobs()] == ["backup", "verify", "expire", "check"]
    assert loaded.verify.checks, "default.toml shows a check query that works on any cluster"
    assert loaded.retention.recovery_window_days == 30


def test_default_toml_shows_every_key_the_schema_knows() -> None:
    """The operator's reference: a key the code reads but the file never shows is a
    setting nobody finds (checks are shown as a [[verify.checks]] block)."""
    text = (POLICIES / "default.toml").read_text(encoding="utf-8")
    sections = {
        "schedule": policy.Schedule,
        "backup": policy.BackupPolicy,
        "retention": policy.RetentionPolicy,
        "verify": policy.VerifyPolicy,
    }
    for section, cls in sections.items():
        assert f"\n[{section}]\n" in text, section
        for field in fields(cls):
            key = field.name.rstrip("_")
            if key == "checks":
                assert "[[verify.checks]]" in text
                continue
            assert re.search(rf"^{key} = ", text, re.MULTILINE), f"{section}.{key}"


def test_every_setting_line_of_default_toml_is_explained() -> None:
    lines = (POLICIES / "default.toml").read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if not line or line.startswith(("#", "[")) or "#" in line:
            continue
        assert lines[number - 1].startswith("#"), f"line {number + 1} has no comment: {line}"


def test_iam_policy_grants_the_needed_actions_and_nothing_wider() -> None:
    granted: dict[str, set[str]] = {}
    for statement in statements():
        assert statement["Effect"] == "Allow"
        for action in as_set(statement["Action"]):
            assert "*" not in action, "no wildcard actions"
            granted.setdefault(action, set()).update(as_set(statement["Resource"]))
    assert set(granted) == OBJECT_ACTIONS | BUCKET_ACTIONS
    for action in OBJECT_ACTIONS:
        assert granted[action] == {"arn:aws:s3:::BUCKET/PREFIX/*"}, action
    for action in BUCKET_ACTIONS:
        assert granted[action] == {"arn:aws:s3:::BUCKET"}, action


def test_readme_explains_each_file_and_each_permission() -> None:
    readme = (POLICIES / "README.md").read_text(encoding="utf-8")
    for name in ("default.toml", "s3-iam-policy.json", *OBJECT_ACTIONS, *BUCKET_ACTIONS):
        assert f"`{name}`" in readme or f"## {name}" in readme, name
