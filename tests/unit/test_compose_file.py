"""docker-compose.test.yml: the services, ports and bucket the README and the suite rely on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.test.yml"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    result: dict[str, Any] = document["services"]
    return result


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_it_has_postgres_minio_and_the_bucket_job(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "minio", "createbucket"}


def test_postgres_is_15_with_replica_wal_and_commit_timestamps(services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    command = " ".join(postgres["command"])

    assert postgres["image"] == "postgres:15"
    assert "wal_level=replica" in command
    assert "track_commit_timestamp=on" in command
    assert "127.0.0.1:5432:5432" in postgres["ports"]


def test_minio_serves_s3_on_9000_with_root_credentials(services: dict[str, Any]) -> None:
    minio = services["minio"]
    env = _env(minio)

    assert minio["image"].startswith("minio/minio")
    assert minio["command"][:2] == ["server", "/data"]
    assert "127.0.0.1:9000:9000" in minio["ports"]
    assert len(env["MINIO_ROOT_PASSWORD"]) >= 8  # MinIO refuses to start otherwise


def test_the_bucket_is_created_once_minio_is_healthy(services: dict[str, Any]) -> None:
    job = services["createbucket"]
    script = " ".join(job["entrypoint"])
    env = _env(services["minio"])

    assert job["image"].startswith("minio/mc")
    assert job["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "healthcheck" in services["minio"]
    alias = f"mc alias set local http://minio:9000 {env['MINIO_ROOT_USER']} "
    assert alias + env["MINIO_ROOT_PASSWORD"] in script
    assert re.search(r"mc mb --ignore-existing local/janua-test\b", script)


def test_the_documented_exports_match_the_services(services: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text()
    env = _env(services["minio"])

    assert "JANUA_TEST_S3_ENDPOINT=http://127.0.0.1:9000" in text
    assert f"JANUA_TEST_S3_ACCESS_KEY={env['MINIO_ROOT_USER']}" in text
    assert f"JANUA_TEST_S3_SECRET_KEY={env['MINIO_ROOT_PASSWORD']}" in text
