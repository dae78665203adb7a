"""A small S3 client on the standard library, for commands that live a fraction of a second.

Must not import: boto3, botocore (the point of this module), ``janua_backup.pg``,
``janua_backup.pipeline``, ``janua_backup.repository``.

Why it exists: PostgreSQL starts ``archive_command`` once per WAL segment and
``restore_command`` once per file recovery asks for, including the files the
archive does not have. Importing botocore and building its client costs about
0.17 s of CPU per process (service models parsed from JSON), more than the
requests themselves on a nearby store. pgBackRest ships its own S3 client for
the same reason. This one speaks the few calls ``S3Storage`` makes, signed with
Signature Version 4, path-style, over one keep-alive connection per thread.

It is used only where it gives the same answers as boto3 (``usable``): an
explicit endpoint (S3-compatible stores; AWS keeps boto3's endpoint and
addressing rules), static credentials from the settings or from
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (instance roles, profiles and
SSO stay with botocore's credential chain), and no proxy variable. Everything
else takes boto3. Retries, error translation and the storage contract stay in
``S3Storage``; this module raises ``WireError`` (the store answered with an
error) or ``WireUnreachable`` (no answer), and ``S3Storage`` translates both as
it does botocore's. The storage contract suite runs on both clients against a
real server (``tests/integration/storage/test_s3.py``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.client
import os
import ssl
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

__all__ = ["WireClient", "WireError", "WireUnreachable", "usable"]

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")
_UNRESERVED = "-_.~"  # with letters and digits: what SigV4 leaves unencoded


class WireError(Exception):
    """The store answered with an error status; ``code`` as botocore would name it."""

    def __init__(self, code: str, status: int, message: str) -> None:
        super().__init__(f"{code} (HTTP {status}) {message}".strip())
        self.code, self.status, self.message = code, status, message


class WireUnreachable(Exception):
    """No usable answer: refused, reset, timed out, or TLS failed (``tls``)."""

    def __init__(self, reason: str, *, tls: bool = False) -> None:
        super().__init__(reason)
        self.tls = tls


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def usable(
    endpoint_url: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    session_token: str | None,
    path_style: bool,
    environ: Mapping[str, str] = os.environ,
) -> Credentials | None:
    """The credentials to sign with, or ``None`` when boto3 must do the job."""
    if not endpoint_url or not path_style or urlsplit(endpoint_url).scheme not in ("http", "https"):
        return None
    if any(environ.get(name) or environ.get(name.upper()) for name in _PROXY_VARIABLES):
        return None
    if access_key_id and secret_access_key:
        return Credentials(access_key_id, secret_access_key, session_token)
    key_id, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
    if key_id and secret:  # botocore's first provider, before profiles and roles
        return Credentials(key_id, secret, environ.get("AWS_SESSION_TOKEN") or None)
    return None


def _ca_bundle(verify: bool | str, environ: Mapping[str, str]) -> str | None:
    """The CA file botocore would use: ours, AWS_CA_BUNDLE, or the one botocore ships."""
    if isinstance(verify, str):
        return verify
    if environ.get("AWS_CA_BUNDLE"):
        return environ["AWS_CA_BUNDLE"]
    for package, name in (("certifi", "cacert.pem"), ("botocore", "cacert.pem")):
        spec = find_spec(package)  # locates, does not import
        if spec is not None and spec.origin is not None:
            path = Path(spec.origin).parent / name
            if path.is_file():
                return str(path)
    return None  # the system's store


class _Body:
    """A streamed response body; gives the connection back once read to the end or closed."""

    def __init__(self, response: http.client.HTTPResponse, release: Any) -> None:
        self._response, self._release = response, release

    def iter_chunks(self, size: int) -> Iterator[bytes]:
        try:
            while chunk := self._response.read(size):
                yield chunk
        except (http.client.HTTPException, OSError) as exc:
            self._release(None)
            raise WireUnreachable(f"connection lost mid-body: {exc!r}") from exc
        self.close()

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            fully_read = self._response.isclosed()
            release(self._response if fully_read else None)


class WireClient:
    """The calls ``S3Storage`` makes, with boto3's names and the shapes it uses of them."""

    def __init__(
        self,
        endpoint_url: str,
        region: str | None,
        credentials: Credentials,
        *,
        verify: bool | str = True,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        url = urlsplit(endpoint_url)
        self._https = url.scheme == "https"
        self._host = url.hostname or ""
        self._port = url.port or (443 if self._https else 80)
        default_port = url.port is None or url.port == (443 if self._https else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = host if default_port else f"{host}:{self._port}"
        self._base_path = url.path.rstrip("/")
        self._region: str = (
            region or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        )
        self._credentials = credentials
        self._connect_timeout_s, self._read_timeout_s = connect_timeout_s, read_timeout_s
        self._tls: ssl.SSLContext | None = None
        if self._https:
            self._tls = ssl.create_default_context(cafile=_ca_bundle(verify, environ))
            if verify is False:
                self._tls.check_hostname = False
                self._tls.verify_mode = ssl.CERT_NONE
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    # -- the calls -----------------------------------------------------------

    def head_bucket(self, *, Bucket: str) -> dict[str, Any]:
        self._request("HEAD", Bucket, "", {})
        return {}

    def head_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        from email.utils import parsedate_to_datetime  # here: costs ~5 ms to import

        headers = self._request("HEAD", Bucket, Key, {})
        return {
            "ContentLength": int(headers.get("content-length", "0")),
            "LastModified": parsedate_to_datetime(headers["last-modified"]),
        }

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        return {"Body": self._request("GET", Bucket, Key, {}, stream=True)}

    def put_object(
        self,
        *,
        Bucket: str,
        Key: str,
        Body: bytes,
        IfNoneMatch: str | None = None,
    ) -> dict[str, Any]:
        extra = {"If-None-Match": IfNoneMatch} if IfNoneMatch else {}
        self._request("PUT", Bucket, Key, {}, body=Body, headers=extra)
        return {}

    def create_multipart_upload(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        root = self._xml(self._request("POST", Bucket, Key, {"uploads": ""}, body=b""))
        return {"UploadId": _text(root, "UploadId")}

    def upload_part(
        self,
        *,
        Bucket: str,
        Key: str,
        UploadId: str,
        PartNumber: int,
        Body: bytes,
    ) -> dict[str, Any]:
        query = {"partNumber": str(PartNumber), "uploadId": UploadId}
        headers = self._request("PUT", Bucket, Key, query, body=Body)
        return {"ETag": headers.get("etag", "")}

    def complete_multipart_upload(
        self,
        *,
        Bucket: str,
        Key: str,
        UploadId: str,
        MultipartUpload: Mapping[str, Sequence[Mapping[str, Any]]],
        IfNoneMatch: str | None = None,
    ) -> dict[str, Any]:
        parts = "".join(
            f"<Part><PartNumber>{p['PartNumber']}</PartNumber><ETag>{escape(p['ETag'])}</ETag></Part>"
            for p in MultipartUpload["Parts"]
        )
        body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
        extra = {"If-None-Match": IfNoneMatch} if IfNoneMatch else {}
        answer = self._request(
            "POST", Bucket, Key, {"uploadId": UploadId}, body=body, headers=extra
        )
        self._xml(answer)  # a 200 whose body is an <Error> is a failure (S3 does this here)
        return {}

    def abort_multipart_upload(self, *, Bucket: str, Key: str, UploadId: str) -> None:
        self._request("DELETE", Bucket, Key, {"uploadId": UploadId})

    def list_objects_v2(
        self,
        *,
        Bucket: str,
        Prefix: str,
        ContinuationToken: str | None = None,
    ) -> dict[str, Any]:
        query = {"list-type": "2", "prefix": Prefix, "encoding-type": "url"}
        if ContinuationToken:
            query["continuation-token"] = ContinuationToken
        root = self._xml(self._request("GET", Bucket, "", query))
        contents = [
            {
                "Key": _unquote(_text(item, "Key")),
                "Size": int(_text(item, "Size")),
                "LastModified": _utc(_text(item, "LastModified")),
            }
            for item in _children(root, "Contents")
        ]
        return {
            "Contents": contents,
            "IsTruncated": _text(root, "IsTruncated", "false").lower() == "true",
            "NextContinuationToken": _text(root, "NextContinuationToken", "") or None,
        }

    def delete_objects(
        self,
        *,
        Bucket: str,
        Delete: Mapping[str, Any],
    ) -> dict[str, Any]:
        keys = "".join(f"<Object><Key>{escape(o['Key'])}</Key></Object>" for o in Delete["Objects"])
        quiet = "true" if Delete.get("Quiet") else "false"
        body = f"<Delete><Quiet>{quiet}</Quiet>{keys}</Delete>".encode()
        md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
        answer = self._request(
            "POST", Bucket, "", {"delete": ""}, body=body, headers={"Content-MD5": md5}
        )
        errors = [
            {"Key": _text(e, "Key"), "Code": _text(e, "Code"), "Message": _text(e, "Message")}
            for e in _children(self._xml(answer), "Error")
        ]
        return {"Errors": errors}

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # -- one request ---------------------------------------------------------

    def _request(
        self,
        method: str,
        bucket: str,
        key: str,
        query: Mapping[str, str],
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> Any:
        """Send one signed request; the headers (or a ``_Body`` when ``stream``) of a 2xx answer.

        A kept-alive connection the server has meanwhile closed fails on first
        use; that one failure is retried at once on a new connection.
        """
        path = (
            self._base_path
            + "/"
            + quote(bucket, safe="")
            + ("/" + quote(key, safe="/") if key else "")
        )
        query_text = "&".join(
            f"{quote(k, safe=_UNRESERVED)}={quote(v, safe=_UNRESERVED)}"
            for k, v in sorted(query.items())
        )
        target = path + (f"?{query_text}" if query_text else "")
        signed = self._sign(method, path, query_text, body or b"", dict(headers or {}))
        retried = False
        while True:
            connection, reused = self._connection()
            try:
                connection.request(method, target, body=body, headers=signed)
                response = connection.getresponse()
            except ssl.SSLError as exc:
                connection.close()
                raise WireUnreachable(
                    f"TLS with {self._host_header} failed: {exc}", tls=True
                ) from exc
            except (http.client.HTTPException, OSError) as exc:
                connection.close()
                if reused and not retried:
                    retried = True
                    continue
                raise WireUnreachable(f"{method} to {self._host_header} failed: {exc!r}") from exc
            return self._answer(method, connection, response, stream)

    def _answer(
        self,
        method: str,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        stream: bool,
    ) -> Any:
        if 200 <= response.status < 300:
            if stream:
                return _Body(response, lambda done: self._release(connection, done))
            try:
                data = response.read()
            except (http.client.HTTPException, OSError) as exc:
                connection.close()
                raise WireUnreachable(
                    f"reading an answer from {self._host_header} failed: {exc!r}"
                ) from exc
            self._release(connection, response)
            return _Headers(response.getheaders(), data)
        try:
            data = response.read()  # b"" for HEAD; reading it lets the connection be kept
        except (http.client.HTTPException, OSError):
            data = b""
        self._release(connection, response)
        code, message = _error_details(data, response.status)
        raise WireError(code, response.status, message)

    def _sign(
        self,
        method: str,
        path: str,
        query_text: str,
        body: bytes,
        headers: dict[str, str],
        now: dt.datetime | None = None,
    ) -> dict[str, str]:
        now = now or dt.datetime.now(dt.UTC)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        # Over https a body is sent unsigned, as botocore does with our settings
        # (s3.py): TLS and the object format's own SHA-256 cover those bytes, and
        # hashing them here would cost this process and the server a pass each.
        if not body:
            payload = _EMPTY_SHA256
        elif self._https:
            payload = _UNSIGNED_PAYLOAD
        else:
            payload = hashlib.sha256(body).hexdigest()
        headers |= {"Host": self._host_header, "X-Amz-Date": stamp, "X-Amz-Content-SHA256": payload}
        if self._credentials.session_token:
            headers["X-Amz-Security-Token"] = self._credentials.session_token
        if body is not None and method in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        signed = sorted((k.lower(), v.strip()) for k, v in headers.items())
        names = ";".join(k for k, _ in signed)
        canonical = "\n".join(
            [method, path, query_text, *(f"{k}:{v}" for k, v in signed), "", names, payload]
        )
        scope = f"{day}/{self._region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = ("AWS4" + self._credentials.secret_access_key).encode()
        for part in (day, self._region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self._credentials.access_key_id}/{scope}, "
            f"SignedHeaders={names}, Signature={signature}"
        )
        return headers

    # -- connections ---------------------------------------------------------

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        connection: http.client.HTTPConnection
        if self._tls is not None:
            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._connect_timeout_s, context=self._tls
            )
        else:
            connection = http.client.HTTPConnection(
                self._host, self._port, timeout=self._connect_timeout_s
            )
        try:
            connection.connect()
        except ssl.SSLError as exc:
            connection.close()
            raise WireUnreachable(f"TLS with {self._host_header} failed: {exc}", tls=True) from exc
        except OSError as exc:
            connection.close()
            raise WireUnreachable(f"cannot connect to {self._host_header}: {exc!r}") from exc
        if connection.sock is not None:
            connection.sock.settimeout(self._read_timeout_s)
        return connection, False

    def _release(
        self, connection: http.client.HTTPConnection, response: http.client.HTTPResponse | None
    ) -> None:
        """Keep the connection for the next call only if its answer was read to the end."""
        if response is None or response.will_close or not response.isclosed():
            connection.close()
            return
        with self._lock:
            self._idle.append(connection)

    def _xml(self, answer: _Headers) -> ElementTree.Element:
        try:
            root = ElementTree.fromstring(answer.data)
        except ElementTree.ParseError as exc:
            raise WireError("MalformedResponse", 200, f"unreadable XML: {exc}") from exc
        if _local(root.tag) == "Error":
            raise WireError(_text(root, "Code", "InternalError"), 200, _text(root, "Message"))
        return root


class _Headers(dict[str, str]):
    """Response headers by lower-case name, and the body that came with them."""

    def __init__(self, items: list[tuple[str, str]], data: bytes) -> None:
        super().__init__((k.lower(), v) for k, v in items)
        self.data = data


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(root: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [child for child in root if _local(child.tag) == name]


def _text(root: ElementTree.Element, name: str, default: str | None = None) -> str:
    for child in root:
        if _local(child.tag) == name:
            return child.text or ""
    if default is None:
        raise WireError("MalformedResponse", 200, f"no <{name}> in the answer")
    return default


def _utc(text: str) -> dt.datetime:
    """An ISO 8601 time from a listing; one without an offset is UTC, as S3 means it."""
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def escape(text: str) -> str:
    """XML text escaping (xml.sax.saxutils would import urllib.request: ~6 ms per process)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _unquote(text: str) -> str:
    from urllib.parse import unquote_plus

    return unquote_plus(text)


def _error_details(data: bytes, status: int) -> tuple[str, str]:
    """Code and message of an error answer; a bare status (HEAD) is its number, as in botocore."""
    try:
        root = ElementTree.fromstring(data) if data else None
    except ElementTree.ParseError:
        root = None
    if root is None:
        return str(status), http.client.responses.get(status, "")
    return _text(root, "Code", str(status)), _text(root, "Message", "")
