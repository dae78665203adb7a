"""The S3 defaults an operator meets first: one retry policy, addressing, AWS profiles.

The dead endpoint is a real loopback socket that accepts and hangs up: every request
attempt is one connection, so counting connections counts attempts (never time).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from janua_backup import config
from janua_backup.commands.common import open_storage
from janua_backup.errors import ConfigError, StorageUnreachable
from janua_backup.storage.s3 import S3Location, S3Storage


class HangUp:
    """A loopback port that accepts each connection and closes it at once."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.server.settimeout(0.05)  # close() does not wake a blocked accept()
        self.connections = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.server.close()


@pytest.fixture
def hang_up() -> Iterator[HangUp]:
    server = HangUp()
    yield server
    server.close()


def location(endpoint: str | None, **more: object) -> S3Location:
    return replace(
        S3Location(
            bucket="bucket",
            prefix="p",
            endpoint_url=endpoint,
            region="us-east-1",
            access_key_id="AKIDEXAMPLE",
            secret_access_key="secret",
            retry_base_delay_s=0.05,
            retry_deadline_s=1.0,
        ),
        **more,
    )


def test_a_dead_endpoint_is_one_attempt_per_retry_round(
    hang_up: HangUp, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: botocore's 6 attempts nested inside each of janua's rounds.
    storage = S3Storage(location(f"http://127.0.0.1:{hang_up.port}"))
    with caplog.at_level(logging.WARNING), pytest.raises(StorageUnreachable):
        list(storage.list())
    storage.close()
    rounds = [r for r in caplog.records if r.getMessage().startswith("s3 retry")]
    assert rounds, "the store was retried"
    assert hang_up.connections == len(rounds) + 1


def settings(text: str, environ: dict[str, str] | None = None) -> config.Settings:
    return config.load(None, environ or {}, _overrides(text))


def _overrides(text: str) -> dict[str, dict[str, object]]:
    import tomllib

    return {k: dict(v) for k, v in tomllib.loads(text).items()}


@pytest.mark.parametrize(
    ("text", "environ", "path_style"),
    [
        ('[s3]\nendpoint = "http://127.0.0.1:8333"', {}, True),  # S3-compatible store
        ("[s3]\nregion = 'eu-west-3'", {}, False),  # AWS: virtual-hosted
        ("[s3]\nregion = 'eu-west-3'", {"AWS_ENDPOINT_URL": "http://minio:9000"}, True),
        ('[s3]\nendpoint = "http://127.0.0.1:8333"\npath_style = false', {}, False),
        ("[s3]\npath_style = true", {}, True),
    ],
)
def test_path_style_is_the_default_only_with_an_endpoint(
    text: str, environ: dict[str, str], path_style: bool
) -> None:
    loaded = settings(f'[repository]\nurl = "s3://bucket/p"\n{text}\n', environ)
    storage = open_storage(loaded)
    assert isinstance(storage, S3Storage)
    assert storage.settings.path_style is path_style


def test_aws_variables_fill_only_what_nothing_else_set() -> None:
    environ = {"AWS_ENDPOINT_URL": "http://env:1", "AWS_PROFILE": "from-env"}
    assert settings("[s3]\n", environ).s3.endpoint == "http://env:1"
    assert settings("[s3]\n", environ).s3.profile == "from-env"
    written = settings('[s3]\nendpoint = "http://file:2"\nprofile = "file"\n', environ)
    assert (written.s3.endpoint, written.s3.profile) == ("http://file:2", "file")
    specific = {**environ, "AWS_ENDPOINT_URL_S3": "http://s3-only:3"}
    assert settings("[s3]\n", specific).s3.endpoint == "http://s3-only:3"
    ours = {**environ, "JANUA_BACKUP_S3_ENDPOINT": "http://ours:4"}
    assert settings("[s3]\n", ours).s3.endpoint == "http://ours:4"


def test_path_style_from_the_environment_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match=r"s3\.path_style must be true or false"):
        settings('[s3]\npath_style = "sometimes"\n')


@pytest.fixture
def aws_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config").write_text("[profile backups]\nregion = eu-west-3\n")
    (tmp_path / "credentials").write_text(
        "[backups]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = from-profile\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("aws_files")
def test_the_profile_signs_the_requests_and_skips_the_quick_client() -> None:
    where = location(
        "http://127.0.0.1:9",
        access_key_id=None,
        secret_access_key=None,
        profile="backups",
        quick_start=True,
    )
    storage = S3Storage(where)
    client = storage._client()
    # boto3's client, not s3_wire's: only boto3 reads profiles.
    credentials = client._request_signer._credentials  # type: ignore[attr-defined]
    assert credentials.access_key == "AKIDPROFILE"
    storage.close()


@pytest.mark.usefixtures("aws_files")
def test_an_unknown_profile_is_a_config_error_naming_it() -> None:
    storage = S3Storage(location(None, profile="nope"))
    with pytest.raises(ConfigError, match=r"AWS profile 'nope'.*\[s3\] profile") as caught:
        storage._client()
    assert caught.value.exit_code == 3
