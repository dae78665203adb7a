"""A ``Storage`` on S3 or an S3-compatible store (SeaweedFS, MinIO, Ceph...).

Must not import: ``janua_backup.pg``, ``janua_backup.pipeline``,
``janua_backup.repository``. boto3 and botocore are imported here only, and
lazily: importing this module costs nothing, the client is built on first use
(``wal-push`` runs once per segment, and start-up time is archive latency).

Every botocore exception becomes a ``StorageError``. Retries are one policy:
botocore makes one attempt per call (``max_attempts`` = 1), and around it a
loop with exponential backoff and jitter, so a throttled or briefly unreachable
store makes ``archive_command`` wait instead of failing fast. An operation gives
up after about ``retry_deadline_s``; nesting botocore's own attempts inside that
loop multiplied both the wait and the warnings (54 s and 10 lines for ``list``
against a dead endpoint).

Addressing: path-style when an endpoint is set (S3-compatible stores rarely have
per-bucket DNS names), virtual-hosted on AWS; ``path_style`` in the settings
overrides either way (``commands.common`` resolves the default).

Choices a reader may wonder about:

* ``head`` and ``put`` confirm the bucket exists (``HeadBucket``, cached for a
  few minutes): a ``HEAD`` on a missing bucket is a bare 404 like a missing
  key, and some stores (SeaweedFS) create a missing bucket on the first PUT,
  which would archive WAL into a typo. So the credentials need
  ``s3:ListBucket`` as well as get/put/delete/abort-multipart on objects.
* ``if_absent`` sends ``If-None-Match: *`` on the PUT or on
  CompleteMultipartUpload. Stores that ignore the header overwrite silently;
  nothing client-side can make that race-free. A conditional put retried after
  a lost response meets its own first attempt (412): the stored object is then
  read back and compared with what was sent (the bytes of a single PUT; each
  part's length and MD5 against the ETag the store gave it, for a multipart
  upload), and the same bytes are success, as the contract says. A
  CompleteMultipartUpload retried after its answer was lost may also meet
  ``NoSuchUpload``; the same comparison decides. A store whose part ETags are
  not MD5s (SSE-KMS) cannot be compared: the conflict stays ``ObjectExists``.
* ``list`` buffers and sorts one listing: the contract promises lexicographic
  order, and SeaweedFS returns keys in directory order (``a/b`` before
  ``a-b``). That costs roughly 200 bytes per key.
* Flexible checksums (CRC32 headers, botocore >= 1.36) are sent only when an
  operation requires them: many S3-compatible stores reject them, and the
  pipeline already verifies size and sha256 end to end.
* ``quick_start`` (``wal-push``, ``wal-fetch``, ``restore``) swaps boto3 for the
  standard library client of ``s3_wire`` where that gives the same answers:
  building a boto3 client costs more than the requests of a command that stores
  or fetches one segment, and a restore is downtime from its first second (and
  boto3 is a third of its memory). Its errors go through the same retry loop
  and translation.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING, TypeVar, cast

from janua_backup.errors import (
    AccessDenied,
    BucketNotFound,
    ConfigError,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    StorageUnreachable,
)
from janua_backup.storage.base import ObjectInfo
from janua_backup.storage.retry import Backoff
from janua_backup.storage.s3_wire import WireError, WireUnreachable

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import (
        CompletedPartTypeDef,
        CompleteMultipartUploadRequestTypeDef,
        ListObjectsV2RequestTypeDef,
        ObjectIdentifierTypeDef,
        PutObjectRequestTypeDef,
    )

__all__ = ["S3Location", "S3Storage"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_MIB = 1024 * 1024
_CHUNK_BYTES = _MIB
_MIN_PART_BYTES = 5 * _MIB  # S3's minimum for every part but the last
_MAX_PART_BYTES = 5 * 1024 * _MIB
_DELETE_BATCH = 1000  # DeleteObjects' limit
_BUCKET_CHECK_TTL_S = 300.0
_MAX_RETRY_DELAY_S = 8.0
_THROTTLED = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests",
     "RequestTimeout", "InternalError", "ServiceUnavailable"}
)  # fmt: skip
_DENIED = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
     "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "403"}
)  # fmt: skip
_CONDITION_FAILED = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412"})
_BARE_NOT_FOUND = frozenset({"404", "NotFound"})
_MD5_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})"?$')


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where the repository lives on S3, and how patiently to talk to it."""

    bucket: str
    prefix: str  # "" or "some/prefix" (no leading/trailing slash); keys live at prefix + "/" + key
    endpoint_url: str | None  # None: AWS, from the region
    region: str | None
    access_key_id: str | None  # None (with the secret): botocore's default credential chain
    secret_access_key: str | None = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    path_style: bool = True
    verify_tls: bool | str = True  # or a CA bundle path
    max_attempts: int = 1  # botocore's attempts per call: our loop below is the retry policy
    profile: str | None = None  # a profile of ~/.aws/config of the user running us; boto3 only
    part_size_bytes: int = 5 * _MIB  # two copies in flight per upload: memory is jobs x 10 MiB
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    retry_deadline_s: float = 30.0  # no new retry round starts after this
    retry_base_delay_s: float = 0.5  # first backoff; doubles each round, capped at 8 s
    max_pool_connections: int = 16  # parallel transfers share one client
    quick_start: bool = False  # s3_wire's client when it applies (see the module docstring)

    def __post_init__(self) -> None:
        problems = []
        if not self.bucket:
            problems.append("the bucket name is empty")
        if self.prefix.startswith("/") or self.prefix.endswith("/"):
            problems.append(f"prefix {self.prefix!r} must not start or end with '/'")
        if "//" in self.prefix:
            problems.append(f"prefix {self.prefix!r} must not have an empty part ('//')")
        if not _MIN_PART_BYTES <= self.part_size_bytes <= _MAX_PART_BYTES:
            problems.append("part_size_bytes must be between 5 MiB and 5 GiB (S3's part limits)")
        if self.max_attempts < 1 or self.max_pool_connections < 1:
            problems.append("max_attempts and max_pool_connections must be at least 1")
        if min(self.connect_timeout_s, self.read_timeout_s, self.retry_base_delay_s) <= 0:
            problems.append("timeouts and retry_base_delay_s must be positive")
        if self.retry_deadline_s < 0:
            problems.append("retry_deadline_s must not be negative")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            problems.append("access_key_id and secret_access_key must be set together")
        if problems:
            details = "; ".join(problems)
            raise ConfigError(f"invalid S3 settings for bucket {self.bucket!r}: {details}")


class S3Storage:
    """Objects at ``s3://bucket/prefix/<key>``; thread-safe (one boto3 client, shared)."""

    def __init__(self, settings: S3Location) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._client_or_none: S3Client | None = None
        self._client_errors: tuple[type[Exception], ...] = (WireError, WireUnreachable)
        self._bucket_seen_at: float | None = None

    def describe(self) -> str:
        s = self.settings
        return f"s3://{s.bucket}/{s.prefix}" if s.prefix else f"s3://{s.bucket}"

    def close(self) -> None:
        """Release pooled connections (tests do; a command may simply exit)."""
        with self._lock:
            client, self._client_or_none = self._client_or_none, None
        if client is not None:
            client.close()

    def put(self, key: str, chunks: Iterable[bytes], *, if_absent: bool = False) -> None:
        self._require_bucket()
        parts = _parts(chunks, self.settings.part_size_bytes)
        first = next(parts)
        if first[1]:  # the whole object fits in one part: a single PUT
            request: PutObjectRequestTypeDef = {
                "Bucket": self.settings.bucket, "Key": self._full(key), "Body": first[0]
            }  # fmt: skip
            if if_absent:
                request["IfNoneMatch"] = "*"
            try:
                self._call("put", key, lambda c: c.put_object(**request))
            except ObjectExists:
                if not self._holds(key, iter([first[0]])):
                    raise
            return
        stream = _prepend(first, parts)
        del first  # the generator now holds the only reference: one part in memory
        if if_absent and self.head(key) is not None:
            # Compared with the stream before uploading parts the store would refuse anyway.
            if not self._holds(key, (body for body, _last in stream)):
                raise ObjectExists(f"{self.describe()}/{key} already exists")
            return
        self._put_multipart(key, stream, if_absent)

    def get(self, key: str) -> Iterator[bytes]:
        full, bucket = self._full(key), self.settings.bucket
        # GetObject, not HeadObject: its error body tells NoSuchKey from NoSuchBucket.
        response = self._call("get", key, lambda c: c.get_object(Bucket=bucket, Key=full))
        self._bucket_seen_at = time.monotonic()  # an answer from inside it: no HeadBucket needed
        return _BodyChunks(response["Body"], f"{self.describe()}/{key}", self._client_errors)

    def head(self, key: str) -> ObjectInfo | None:
        full, bucket = self._full(key), self.settings.bucket
        try:
            meta = self._call("head", key, lambda c: c.head_object(Bucket=bucket, Key=full))
        except ObjectNotFound:  # raised only once the bucket is known to exist
            return None
        self._bucket_seen_at = time.monotonic()
        return ObjectInfo(key, meta["ContentLength"], meta["LastModified"].astimezone(UTC))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        strip = len(self._full(""))
        request: ListObjectsV2RequestTypeDef = {
            "Bucket": self.settings.bucket, "Prefix": self._full(prefix)
        }  # fmt: skip
        found: list[ObjectInfo] = []
        while True:
            page = self._call("list", None, lambda c: c.list_objects_v2(**request))
            found.extend(
                ObjectInfo(obj["Key"][strip:], obj["Size"], obj["LastModified"].astimezone(UTC))
                for obj in page.get("Contents", [])
            )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
            request["ContinuationToken"] = token
        found.sort(key=lambda info: info.key)
        return iter(found)

    def delete(self, keys: Iterable[str]) -> None:
        batch: list[ObjectIdentifierTypeDef] = []
        for key in keys:
            batch.append({"Key": self._full(key)})
            if len(batch) == _DELETE_BATCH:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    # -- internals ---------------------------------------------------------

    def _full(self, key: str) -> str:
        prefix = self.settings.prefix
        return f"{prefix}/{key}" if prefix else key

    def _client(self) -> S3Client:
        with self._lock:
            if self._client_or_none is None:
                try:
                    self._client_or_none = self._new_client()
                except ValueError as exc:  # botocore's bad endpoint or region errors too
                    where = self.describe()
                    raise ConfigError(f"cannot use the S3 settings for {where}: {exc}") from exc
            return self._client_or_none

    def _new_client(self) -> S3Client:
        s = self.settings
        if s.verify_tls is False and (s.endpoint_url or "https:").startswith("https:"):
            _warn_unverified(s.endpoint_url or "AWS")
        if s.quick_start and s.endpoint_url and s.profile is None:
            from janua_backup.storage import s3_wire

            creds = s3_wire.usable(
                s.endpoint_url, s.access_key_id, s.secret_access_key, s.session_token, s.path_style
            )
            if creds is not None:
                try:
                    wire = s3_wire.WireClient(
                        s.endpoint_url, s.region, creds, verify=s.verify_tls,
                        connect_timeout_s=s.connect_timeout_s, read_timeout_s=s.read_timeout_s,
                    )  # fmt: skip
                except OSError as exc:  # ssl.SSLError too: the CA bundle cannot be loaded
                    raise ConfigError(
                        f"cannot load the CA bundle {s.verify_tls!r} for {s.endpoint_url} "
                        f"({exc.strerror or exc}); fix [s3] ca_bundle"
                    ) from exc
                self._client_errors = (WireError, WireUnreachable)
                return cast("S3Client", wire)
        import boto3.session
        from botocore import exceptions as bce
        from botocore.config import Config

        if s.verify_tls is False:
            import warnings

            from urllib3.exceptions import InsecureRequestWarning

            # _warn_unverified said it once for the process; urllib3 says it per request.
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)

        self._client_errors = (bce.BotoCoreError, bce.ClientError)
        config = Config(
            connect_timeout=s.connect_timeout_s,
            read_timeout=s.read_timeout_s,
            # total_max_attempts counts the first try; botocore's max_attempts counts retries.
            retries={"mode": "standard", "total_max_attempts": s.max_attempts},
            # Over https botocore would hash every body again for the signature:
            # TLS and the object format's own SHA-256 already cover those bytes.
            s3={
                "addressing_style": "path" if s.path_style else "auto",
                "payload_signing_enabled": not (s.endpoint_url or "https:").startswith("https:"),
            },
            max_pool_connections=s.max_pool_connections,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            user_agent_extra="janua-backup",
        )
        try:
            session = boto3.session.Session(
                aws_access_key_id=s.access_key_id,
                aws_secret_access_key=s.secret_access_key,
                aws_session_token=s.session_token,
                region_name=s.region,
                profile_name=s.profile,
            )
        except bce.ProfileNotFound as exc:
            raise ConfigError(
                f"AWS profile {s.profile!r} is not in the AWS config files of this user "
                "(archive_command runs as postgres, with its own ~/.aws); fix [s3] profile"
            ) from exc
        return session.client("s3", endpoint_url=s.endpoint_url, verify=s.verify_tls, config=config)

    def _call(self, op: str, key: str | None, request: Callable[[S3Client], _T]) -> _T:
        """Run ``request`` with our retry loop; translate what finally fails.

        ``key`` names the object in messages; ``None`` marks a bucket-level call.
        """
        client = self._client()
        s = self.settings
        attempts = Backoff(s.retry_deadline_s, s.retry_base_delay_s, _MAX_RETRY_DELAY_S).start()
        while True:
            try:
                return request(client)
            except self._client_errors as exc:
                delay = attempts.next_delay() if _retryable(exc) else None
                if delay is None:
                    raise self._translate(exc, op, key, attempts.elapsed_s) from exc
                log.warning(
                    "s3 retry op=%s key=%s attempt=%d delay_s=%.1f error=%s",
                    *(op, key, attempts.failures, delay, exc),
                )
            time.sleep(delay)

    def _translate(
        self, exc: Exception, op: str, key: str | None, elapsed_s: float
    ) -> StorageError:
        s, where = self.settings, self.describe() + (f"/{key}" if key else "")
        endpoint = s.endpoint_url or "the AWS S3 endpoint"
        if isinstance(exc, WireUnreachable):
            if exc.tls:
                return StorageUnreachable(
                    f"TLS with {endpoint} failed ({exc}); check [s3] verify_tls and the CA bundle"
                )
            return StorageUnreachable(
                f"cannot reach S3 endpoint {endpoint} (gave up after {elapsed_s:.0f}s): {exc}"
            )
        if isinstance(exc, WireError):
            return self._refusal(exc.code, exc.status, exc.message, op, key, elapsed_s)
        from botocore import exceptions as bce

        if isinstance(exc, bce.ClientError):
            return self._refusal(*_details(exc), op, key, elapsed_s)
        if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
            return AccessDenied(
                "no S3 credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                "or [s3] access_key_id/secret_access_key"
            )
        if isinstance(exc, bce.SSLError):
            return StorageUnreachable(
                f"TLS with {endpoint} failed ({exc}); check [s3] verify_tls and the CA bundle"
            )
        if isinstance(exc, bce.ConnectionError | bce.ReadTimeoutError | bce.ConnectionClosedError):
            return StorageUnreachable(
                f"cannot reach S3 endpoint {endpoint} (gave up after {elapsed_s:.0f}s): {exc}"
            )
        return StorageError(f"S3 {op} of {where} failed: {exc}")

    def _refusal(
        self, code: str, status: int, message: str, op: str, key: str | None, elapsed_s: float
    ) -> StorageError:
        """The error for an answer the store gave (rather than no answer)."""
        s, where = self.settings, self.describe() + (f"/{key}" if key else "")
        endpoint = s.endpoint_url or "the AWS S3 endpoint"
        if code == "NoSuchBucket" or (key is None and code in _BARE_NOT_FOUND):
            return BucketNotFound(
                f"bucket {s.bucket!r} does not exist at {endpoint}; create it or fix repository.url"
            )
        if code in _BARE_NOT_FOUND:
            self._require_bucket()  # a bare 404 says nothing about the bucket
        if code == "NoSuchKey" or code in _BARE_NOT_FOUND:
            return ObjectNotFound(f"{where} does not exist")
        if code in _CONDITION_FAILED or status == 412:
            return ObjectExists(f"{where} already exists")
        if code in _DENIED or status == 403:
            return AccessDenied(
                f"{endpoint} refused the credentials for s3://{s.bucket} ({code}); check "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or [s3] access_key_id/"
                "secret_access_key, and that they may read and write the bucket"
            )
        return StorageError(
            f"S3 {op} of {where} failed after {elapsed_s:.0f}s: {code} (HTTP {status}) {message}"
        )

    def _require_bucket(self) -> None:
        seen = self._bucket_seen_at
        if seen is not None and time.monotonic() - seen < _BUCKET_CHECK_TTL_S:
            return
        bucket = self.settings.bucket
        self._call("check", None, lambda c: c.head_bucket(Bucket=bucket))
        self._bucket_seen_at = time.monotonic()

    def _holds(self, key: str, sent: Iterator[bytes]) -> bool:
        """Whether the object at ``key`` is exactly the bytes of ``sent`` (read in step)."""
        try:
            stored = cast("_BodyChunks", self.get(key))
        except ObjectNotFound:  # deleted since the store refused: not ours to claim
            return False
        try:
            return _same_stream(sent, stored)
        finally:
            stored.close()

    def _holds_parts(self, key: str, parts: Sequence[tuple[int, str]]) -> bool:
        """Whether the object at ``key`` is the parts we uploaded: each ``(length, ETag)``
        compared with the MD5 of the same stretch of the stored object."""
        expected = []
        for _length, etag in parts:
            match = _MD5_ETAG.match(etag)
            if match is None:
                return False  # not an MD5 (SSE-KMS, some stores): cannot tell
            expected.append(match.group(1).lower())
        try:
            stored = cast("_BodyChunks", self.get(key))
        except ObjectNotFound:
            return False
        try:
            return _part_md5s(stored, [length for length, _etag in parts]) == expected
        finally:
            stored.close()

    def _put_multipart(
        self, key: str, parts: Iterator[tuple[bytes, bool]], if_absent: bool
    ) -> None:
        full, bucket = self._full(key), self.settings.bucket
        created = self._call(
            "put", key, lambda c: c.create_multipart_upload(Bucket=bucket, Key=full)
        )
        upload_id = created["UploadId"]
        lengths: list[int] = []
        try:
            done: list[CompletedPartTypeDef] = []
            # No enumerate(): its cached result tuple would keep the previous
            # part alive while the next one is read.
            for body, _last in parts:
                done.append(self._upload_part(key, upload_id, len(done) + 1, body))
                lengths.append(len(body))
                del body  # before the next part is read: one part in memory
            request: CompleteMultipartUploadRequestTypeDef = {
                "Bucket": bucket, "Key": full, "UploadId": upload_id,
                "MultipartUpload": {"Parts": done},
            }  # fmt: skip
            if if_absent:
                request["IfNoneMatch"] = "*"
            try:
                self._call("put", key, lambda c: c.complete_multipart_upload(**request))
            except StorageError as exc:
                # A retry after a lost answer: 412 (our own object is there) or
                # NoSuchUpload (our completion consumed the upload).
                settled = isinstance(exc, ObjectExists) or _code(exc) == "NoSuchUpload"
                sent = [(n, part["ETag"]) for n, part in zip(lengths, done, strict=True)]
                if not (settled and self._holds_parts(key, sent)):
                    raise
        except BaseException:
            # Our failure or the caller's stream: either way, no parts left billed.
            self._abort(full, upload_id)
            raise

    def _upload_part(
        self, key: str, upload_id: str, number: int, body: bytes
    ) -> CompletedPartTypeDef:
        full, bucket = self._full(key), self.settings.bucket
        uploaded = self._call("put", key, lambda c: c.upload_part(
            Bucket=bucket, Key=full, UploadId=upload_id, PartNumber=number, Body=body))  # fmt: skip
        return {"PartNumber": number, "ETag": uploaded["ETag"]}

    def _abort(self, full: str, upload_id: str) -> None:
        try:
            self._client().abort_multipart_upload(
                Bucket=self.settings.bucket, Key=full, UploadId=upload_id
            )
        except self._client_errors as exc:
            log.warning(
                "s3 abort failed key=%s upload_id=%s error=%s "
                "(a lifecycle rule for incomplete multipart uploads will clean it up)",
                full, upload_id, exc,
            )  # fmt: skip

    def _delete_batch(self, batch: Sequence[ObjectIdentifierTypeDef]) -> None:
        bucket = self.settings.bucket
        response = self._call("delete", None, lambda c: c.delete_objects(
            Bucket=bucket, Delete={"Objects": batch, "Quiet": True}))  # fmt: skip
        errors = response.get("Errors", [])
        if errors:
            first = errors[0]
            cls = AccessDenied if first.get("Code") in _DENIED else StorageError
            raise cls(
                f"could not delete {len(errors)} objects from {self.describe()}, e.g. "
                f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
            )


class _BodyChunks(Iterator[bytes]):
    """Streams a GetObject body in 1 MiB chunks; closing it releases the connection.

    A class, not a generator, so that ``close()`` works before the first chunk
    too, and read errors mid-stream become ``StorageError``.
    """

    def __init__(
        self, body: StreamingBody, where: str, errors: tuple[type[Exception], ...]
    ) -> None:
        self._body = body
        self._errors: tuple[type[Exception], ...] = (*errors, OSError)
        self._chunks = body.iter_chunks(_CHUNK_BYTES)
        self._where = where
        self._closed = False

    def __next__(self) -> bytes:
        if self._closed:
            raise StopIteration
        try:
            return next(self._chunks)
        except StopIteration:
            self.close()
            raise
        except self._errors as exc:
            self.close()
            raise StorageError(f"reading {self._where} failed mid-stream: {exc}") from exc

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._body.close()

    def __del__(self) -> None:
        self.close()


_unverified_warned = False


def _warn_unverified(endpoint: str) -> None:
    """One warning line per process that talks to S3 without checking its certificate."""
    global _unverified_warned
    if not _unverified_warned:
        _unverified_warned = True
        log.warning(
            "s3.verify_tls is false: the certificate of %s is not checked, so whoever sits "
            "on the network path can read and change what is stored; set s3.ca_bundle instead",
            endpoint,
        )


def _parts(chunks: Iterable[bytes], size: int) -> Iterator[tuple[bytes, bool]]:
    """Regroup ``chunks`` into ``(part, is_last)`` of ``size`` bytes (the last may be shorter).

    A full part is handed out only once a byte beyond it has arrived, so the
    first part tells ``put`` whether a single PUT suffices. While the caller
    uploads a part, nothing else is buffered: the buffer is emptied before the
    yield and refilled after. Each byte is copied twice (into the buffer, into
    the part), whatever the chunk sizes. An empty stream is one empty last part.
    """
    buffer = bytearray()
    for chunk in chunks:
        with memoryview(chunk) as view:
            offset = 0
            while offset < len(view):
                if len(buffer) == size:
                    part = bytes(buffer)
                    buffer = bytearray()
                    yield part, False
                    del part
                take = min(size - len(buffer), len(view) - offset)
                buffer += view[offset : offset + take]
                offset += take
    last = bytes(buffer)
    del buffer
    yield last, True


def _prepend(head: _T, rest: Iterator[_T]) -> Iterator[_T]:
    # Not itertools.chain: its argument tuple would keep the first part alive
    # until the last one is uploaded.
    yield head
    del head
    yield from rest


def _same_stream(ours: Iterable[bytes], theirs: Iterable[bytes]) -> bool:
    """Whether two chunk streams carry the same bytes, whatever their chunk sizes;
    holds one chunk of each at a time."""
    mine_chunks, other_chunks = _nonempty(ours), _nonempty(theirs)
    mine = other = memoryview(b"")
    while True:
        if not mine:
            mine = next(mine_chunks, memoryview(b""))
        if not other:
            other = next(other_chunks, memoryview(b""))
        if not mine or not other:
            return not mine and not other
        step = min(len(mine), len(other))
        if mine[:step] != other[:step]:
            return False
        mine, other = mine[step:], other[step:]


def _nonempty(chunks: Iterable[bytes]) -> Iterator[memoryview]:
    return (memoryview(chunk) for chunk in chunks if len(chunk))


def _part_md5s(stored: Iterable[bytes], lengths: Sequence[int]) -> list[str] | None:
    """The MD5 of each stretch of ``lengths`` bytes of ``stored``; None if its length differs."""
    digests: list[str] = []
    digest, filled = hashlib.md5(usedforsecurity=False), 0
    for view in _nonempty(stored):
        while view:
            if len(digests) == len(lengths):
                return None  # longer than what we sent
            take = min(len(view), lengths[len(digests)] - filled)
            digest.update(view[:take])
            filled, view = filled + take, view[take:]
            if filled == lengths[len(digests)]:
                digests.append(digest.hexdigest())
                digest, filled = hashlib.md5(usedforsecurity=False), 0
    return digests if len(digests) == len(lengths) else None


def _code(error: StorageError) -> str:
    """The store's error code behind a translated error ("" if there was no answer)."""
    cause = error.__cause__
    return _details(cause)[0] if isinstance(cause, Exception) else ""


def _details(exc: Exception) -> tuple[str, int, str]:
    if isinstance(exc, WireError):
        return exc.code, exc.status, exc.message
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return "", 0, ""
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(error.get("Code", "")), int(status), str(error.get("Message", ""))


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, WireUnreachable):
        return not exc.tls
    if isinstance(exc, WireError):
        return exc.status >= 500 or exc.status == 429 or exc.code in _THROTTLED
    from botocore import exceptions as bce

    if isinstance(exc, bce.ClientError):
        code, status, _ = _details(exc)
        return status >= 500 or status == 429 or code in _THROTTLED
    transient = bce.EndpointConnectionError | bce.ConnectTimeoutError | bce.ReadTimeoutError
    return isinstance(exc, transient | bce.ConnectionClosedError)
