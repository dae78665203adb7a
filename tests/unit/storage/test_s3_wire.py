"""The standard-library S3 client: when it may be used, and that it signs as AWS specifies.

Its requests against a real server are checked by the storage contract suite
(``tests/integration/storage/test_s3.py`` runs every test with both clients);
that it imports no boto3 is checked with the driver's own import test.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from janua_backup.storage.s3_wire import Credentials, WireClient, _error_details, usable

ENDPOINT = "http://127.0.0.1:9000"


def test_static_credentials_from_the_settings_win() -> None:
    env = {"AWS_ACCESS_KEY_ID": "env-id", "AWS_SECRET_ACCESS_KEY": "env-secret"}
    creds = usable(ENDPOINT, "id", "secret", "token", True, env)
    assert creds == Credentials("id", "secret", "token")


def test_credentials_from_the_environment_as_botocore_reads_them_first() -> None:
    env = {"AWS_ACCESS_KEY_ID": "env-id", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t"}
    assert usable(ENDPOINT, None, None, None, True, env) == Credentials("env-id", "s", "t")


@pytest.mark.parametrize(
    ("endpoint", "path_style", "env"),
    [
        (None, True, {}),  # AWS itself: boto3's endpoint rules
        (ENDPOINT, False, {}),  # virtual-host addressing
        ("ftp://host", True, {}),
        (ENDPOINT, True, {"HTTPS_PROXY": "http://proxy:3128"}),
        (ENDPOINT, True, {"http_proxy": "http://proxy:3128"}),
    ],
)
def test_anything_else_is_left_to_boto3(
    endpoint: str | None, path_style: bool, env: dict[str, str]
) -> None:
    assert usable(endpoint, "id", "secret", None, path_style, env) is None


def test_no_static_credentials_is_left_to_botocores_chain() -> None:
    # Profiles, instance roles, web identity, SSO: botocore knows them, we do not.
    assert usable(ENDPOINT, None, None, None, True, {"AWS_PROFILE": "prod"}) is None


def test_signature_matches_the_aws_documentation_example() -> None:
    # "Signature Calculations for the Authorization Header", example GET Object:
    # virtual-host bucket examplebucket, object test.txt, a Range header.
    creds = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    client = WireClient("https://examplebucket.s3.amazonaws.com", "us-east-1", creds, environ={})
    moment = dt.datetime(2013, 5, 24, tzinfo=dt.UTC)
    headers = client._sign("GET", "/test.txt", "", b"", {"Range": "bytes=0-9"}, now=moment)
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_body_is_signed_unsigned_over_https_and_by_its_sha256_over_http(scheme: str) -> None:
    # As botocore does with payload_signing_enabled off (s3.py): over TLS a body is
    # not hashed twice more (here and by the server) for the signature.
    creds = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    client = WireClient(f"{scheme}://127.0.0.1:9000", "us-east-1", creds, environ={})
    body = b"Welcome to Amazon S3."
    signed = client._sign("PUT", "/bucket/key", "", body, {})["X-Amz-Content-SHA256"]
    expected = "UNSIGNED-PAYLOAD" if scheme == "https" else hashlib.sha256(body).hexdigest()
    assert signed == expected
    empty = client._sign("GET", "/bucket/key", "", b"", {})["X-Amz-Content-SHA256"]
    assert empty == hashlib.sha256(b"").hexdigest()


def test_error_answers_read_like_botocores() -> None:
    body = b"<Error><Code>NoSuchBucket</Code><Message>gone</Message></Error>"
    assert _error_details(body, 404) == ("NoSuchBucket", "gone")
    assert _error_details(b"", 404)[0] == "404"  # HEAD: no body, the status is the code
    assert _error_details(b"<html>proxy error</html", 502)[0] == "502"
