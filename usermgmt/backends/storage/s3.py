"""Write-once blob storage on Amazon S3 (or an S3-compatible store) with boto3 (extra ``aws``).

How the :class:`~usermgmt.ports.BlobStorage` promises are kept on S3:

* **never overwrite**: every write is conditional (``If-None-Match: *`` on ``PutObject``
  and on ``CompleteMultipartUpload``), so S3 itself refuses a second object under a key,
  even from a concurrent writer. A refused write is then compared with the stored
  object: the same size and SHA-256 is a no-op (a re-run), anything else raises
  :class:`~usermgmt.errors.BlobExists`. On a bucket with versioning and Object Lock an
  overwrite by anyone else would only add a version; the locked one stays.
* **integrity**: the SHA-256 of the bytes is sent as ``x-amz-checksum-sha256`` (each
  part's for multipart uploads), so S3 verifies it and refuses a corrupted upload
  (``BadDigest``, mapped to :class:`~usermgmt.errors.BlobIntegrityError`). The hex
  digest of the whole object is also kept as user metadata ``sha256``, because S3's
  checksum of a multipart object is a checksum of the part checksums.
* **retention**: with ``AWS_S3_OBJECT_LOCK_MODE`` (``GOVERNANCE`` or ``COMPLIANCE``) and
  ``AWS_S3_OBJECT_LOCK_RETENTION_DAYS`` every object is written with that mode and a
  retain-until date; otherwise the bucket's default retention (if any) applies. After
  a multipart upload the retention is read back and applied with ``PutObjectRetention``
  if the store did not apply it (moto does not; S3 does).
* **errors**: throttling, 5xx, timeouts and connection failures raise
  :class:`~usermgmt.errors.BackendUnavailable` (after botocore's own retries); a missing
  bucket, missing credentials or a refused permission raise
  :class:`~usermgmt.errors.ConfigurationError`; other refusals
  :class:`~usermgmt.errors.BackendError`.

Large objects (``multipart_threshold`` bytes, 16 MiB by default) go up in parts of
``part_size`` bytes (8 MiB), one part in flight at a time, so the upload itself holds
no more than one part beyond the caller's bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NoReturn

from usermgmt.backends import require_module
from usermgmt.backends.storage.common import DEFAULT_CONTENT_TYPE, validate_blob_key
from usermgmt.config import Settings
from usermgmt.errors import (
    BackendError,
    BackendUnavailable,
    BlobExists,
    BlobIntegrityError,
    ConfigurationError,
    NotFound,
    ValidationError,
)
from usermgmt.ports import BlobInfo

__all__ = ["ObjectRetention", "S3BlobStorage", "build"]

logger = logging.getLogger("usermgmt.storage.s3")

LockMode = Literal["GOVERNANCE", "COMPLIANCE"]

MIB = 1024 * 1024
#: S3's smallest part (all but the last) and largest number of parts.
MIN_PART_SIZE = 5 * MIB
MAX_PARTS = 10_000

_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
        "OperationAborted",
    }
)
_CONFIG_CODES = frozenset(
    {
        "NoSuchBucket",
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidBucketName",
        "AuthorizationHeaderMalformed",
        "PermanentRedirect",
        "301",
        "403",
        "InvalidToken",
        "ExpiredToken",
        "AccountProblem",
    }
)
_INTEGRITY_CODES = frozenset(
    {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "InvalidChecksum"}
)
_EXISTS_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchVersion"})


_SESSION_LOCK = threading.Lock()
_SESSIONS: list[Any] = []


def _session(boto3: Any) -> Any:
    """One boto3 session per process: it caches the parsed S3 service model, which
    takes most of a second to load (each storage gets its own client)."""
    if not _SESSIONS:
        _SESSIONS.append(boto3.session.Session())
    return _SESSIONS[0]


@dataclass(frozen=True, slots=True)
class ObjectRetention:
    """The Object Lock retention of a stored object."""

    mode: str
    retain_until: datetime


def _b64_to_hex(value: str) -> str | None:
    """``x-amz-checksum-sha256`` (base64) as lowercase hex; None for a composite checksum."""
    if "-" in value:  # "<base64>-<parts>": a checksum of the parts' checksums
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


def _hex_to_b64(value: str) -> str:
    return base64.b64encode(bytes.fromhex(value)).decode("ascii")


class S3BlobStorage:
    """A write-once :class:`~usermgmt.ports.BlobStorage` in an S3 bucket.

    ``prefix`` (``AWS_S3_PREFIX``) is prepended to every key and hidden from callers.
    ``lock_mode`` / ``retention_days`` set a per-object Object Lock retention; leave them
    None to rely on the bucket's default retention. Thread-safe (boto3 clients are).
    """

    def __init__(
        self,
        *,
        bucket: str,
        region: str | None = None,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
        lock_mode: LockMode | None = None,
        retention_days: int | None = None,
        multipart_threshold: int = 16 * MIB,
        part_size: int = 8 * MIB,
        timeout: float = 30.0,
        max_attempts: int = 3,
    ) -> None:
        if not bucket:
            raise ConfigurationError("STORAGE_BACKEND=s3 needs AWS_S3_BUCKET")
        if (lock_mode is None) != (retention_days is None):
            raise ConfigurationError(
                "AWS_S3_OBJECT_LOCK_MODE and AWS_S3_OBJECT_LOCK_RETENTION_DAYS go together"
            )
        if lock_mode is not None and lock_mode not in ("GOVERNANCE", "COMPLIANCE"):
            raise ConfigurationError("AWS_S3_OBJECT_LOCK_MODE must be GOVERNANCE or COMPLIANCE")
        if retention_days is not None and retention_days < 1:
            raise ConfigurationError("AWS_S3_OBJECT_LOCK_RETENTION_DAYS must be at least 1")
        if part_size < MIN_PART_SIZE:
            raise ConfigurationError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        if multipart_threshold < part_size:
            raise ConfigurationError("multipart_threshold must be at least part_size")
        boto3 = require_module("boto3", "boto3", "aws")
        botocore_config = require_module("botocore.config", "boto3", "aws")
        self._errors: Any = require_module("botocore.exceptions", "boto3", "aws")
        config = botocore_config.Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            # we send SHA-256 checksums ourselves; no CRC32 on top of them
            request_checksum_calculation="when_required",
            response_checksum_validation="when_supported",
        )
        kwargs: dict[str, Any] = {"config": config}
        if region:
            kwargs["region_name"] = region
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
        if access_key_id and secret_access_key:
            kwargs["aws_access_key_id"] = access_key_id
            kwargs["aws_secret_access_key"] = secret_access_key
        with _SESSION_LOCK:  # creating clients is not thread-safe; using them is
            self._client: Any = _session(boto3).client("s3", **kwargs)
        self.bucket = bucket
        self.region = region
        self.endpoint_url = endpoint_url
        self.prefix = _normalise_prefix(prefix)
        self.lock_mode: LockMode | None = lock_mode
        self.retention_days = retention_days
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.list_page_size = 1000  # keys per ListObjectsV2 request (S3's maximum)
        self._bucket_lock: tuple[bool, str | None] | None = None  # (enabled, default mode)
        self._bucket_lock_guard = threading.Lock()

    def __repr__(self) -> str:  # never shows credentials
        return (
            f"S3BlobStorage(bucket={self.bucket!r}, prefix={self.prefix!r}, "
            f"endpoint_url={self.endpoint_url!r}, lock_mode={self.lock_mode!r})"
        )

    # -- the port ----------------------------------------------------------------------

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        checksum_sha256: str | None = None,
    ) -> BlobInfo:
        """Store ``data`` under a new key (see the module docstring).

        The same bytes again return the stored info; different bytes raise BlobExists; a
        ``checksum_sha256`` that is not the data's raises BlobIntegrityError (nothing is
        sent); S3 refusing the checksum raises BlobIntegrityError too."""
        validate_blob_key(key)
        data = bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        if checksum_sha256 is not None and checksum_sha256.lower() != digest:
            raise BlobIntegrityError(f"blob {key!r}: SHA-256 checksum does not match the data")
        info = BlobInfo(key=key, size=len(data), sha256=digest, content_type=content_type)
        self._check_lock_settings()
        for attempt in range(4):
            try:
                if len(data) > self.multipart_threshold:
                    self._put_multipart(key, data, info)
                else:
                    self._put_single(key, data, info)
            except _KeyTaken:
                existing = self.head(key)
                if existing is None:  # a concurrent writer has not finished: ask again
                    time.sleep(0.05 * (attempt + 1))
                    continue
                if (existing.size, existing.sha256) != (info.size, info.sha256):
                    raise BlobExists(f"blob {key!r} exists with different content") from None
                return existing
            return info
        raise BackendUnavailable(f"blob {key!r}: a concurrent upload of this key did not finish")

    def head(self, key: str) -> BlobInfo | None:
        """Size, SHA-256 and content type of the stored object, or None."""
        validate_blob_key(key)
        try:
            response = self._client.head_object(
                Bucket=self.bucket, Key=self.prefix + key, ChecksumMode="ENABLED"
            )
        except Exception as exc:
            if self._is_missing(exc):
                return None
            self._translate(exc, "HeadObject", key)
        return self._info_from(key, response)

    def get(self, key: str) -> bytes:
        """The stored bytes, checked against the stored SHA-256; raises NotFound."""
        return b"".join(self.iter_chunks(key))

    def iter_chunks(self, key: str, chunk_size: int = MIB) -> Iterator[bytes]:
        """Stream the stored bytes in chunks; raises NotFound before the first chunk,
        BlobIntegrityError after the last one if the bytes do not hash to the stored
        SHA-256 (so a consumer must not act on the data before the iterator ends)."""
        validate_blob_key(key)
        try:
            response = self._client.get_object(
                Bucket=self.bucket, Key=self.prefix + key, ChecksumMode="ENABLED"
            )
        except Exception as exc:
            if self._is_missing(exc):
                raise NotFound("blob") from None
            self._translate(exc, "GetObject", key)
        expected = self._info_from(key, response).sha256
        return self._stream(key, response["Body"], expected, chunk_size)

    def list(self, prefix: str = "") -> list[BlobInfo]:
        """Infos of the keys starting with ``prefix``, sorted by key (one HEAD per key)."""
        infos = (self.head(key) for key in self.keys(prefix))
        return [info for info in infos if info is not None]

    # -- beyond the port -----------------------------------------------------------------

    def keys(self, prefix: str = "") -> Iterator[str]:
        """The keys starting with ``prefix`` in key order, listed page by page."""
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=self.prefix + prefix,
            PaginationConfig={"PageSize": self.list_page_size},
        )
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    yield str(item["Key"])[len(self.prefix) :]
        except Exception as exc:
            self._translate(exc, "ListObjectsV2", prefix)

    def retention(self, key: str) -> ObjectRetention | None:
        """The Object Lock mode and retain-until date of the current version, or None."""
        validate_blob_key(key)
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except Exception as exc:
            if self._is_missing(exc):
                raise NotFound("blob") from None
            self._translate(exc, "HeadObject", key)
        return _retention_from(response)

    def check(self) -> None:
        """Raise BackendUnavailable / ConfigurationError unless the bucket can be reached."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            if self._is_missing(exc):
                raise ConfigurationError(f"S3 bucket {self.bucket!r} does not exist") from None
            self._translate(exc, "HeadBucket", "")

    def bucket_default_retention(self) -> str | None:
        """The bucket's default Object Lock mode, or None (no Object Lock or no default)."""
        return self._lock_config()[1]

    # -- writing -------------------------------------------------------------------------

    def _write_args(self, info: BlobInfo) -> dict[str, Any]:
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.prefix + info.key,
            "ContentType": info.content_type,
            "Metadata": {"sha256": info.sha256},
            "ChecksumAlgorithm": "SHA256",
        }
        retention = self._wanted_retention()
        if retention is not None:
            args["ObjectLockMode"] = retention.mode
            args["ObjectLockRetainUntilDate"] = retention.retain_until
        return args

    def _put_single(self, key: str, data: bytes, info: BlobInfo) -> None:
        args = self._write_args(info)
        try:
            self._client.put_object(
                Body=data, ChecksumSHA256=_hex_to_b64(info.sha256), IfNoneMatch="*", **args
            )
        except Exception as exc:
            self._translate(exc, "PutObject", key)

    def _put_multipart(self, key: str, data: bytes, info: BlobInfo) -> None:
        if self.head(key) is not None:  # cheap early answer; the conditional write decides
            raise _KeyTaken
        part_size = max(self.part_size, -(-len(data) // MAX_PARTS))
        try:
            upload = self._client.create_multipart_upload(**self._write_args(info))
        except Exception as exc:
            self._translate(exc, "CreateMultipartUpload", key)
        upload_id = upload["UploadId"]
        target = {"Bucket": self.bucket, "Key": self.prefix + key, "UploadId": upload_id}
        completed = False
        try:
            parts = []
            view = memoryview(data)
            for number, start in enumerate(range(0, len(data), part_size), start=1):
                chunk = view[start : start + part_size]
                checksum = base64.b64encode(hashlib.sha256(chunk).digest()).decode("ascii")
                try:
                    response = self._client.upload_part(
                        Body=chunk.tobytes(),
                        PartNumber=number,
                        ChecksumAlgorithm="SHA256",
                        ChecksumSHA256=checksum,
                        **target,
                    )
                except Exception as exc:
                    self._translate(exc, "UploadPart", key)
                parts.append(
                    {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}
                )
            try:
                self._client.complete_multipart_upload(
                    MultipartUpload={"Parts": parts}, IfNoneMatch="*", **target
                )
            except Exception as exc:
                self._translate(exc, "CompleteMultipartUpload", key)
            completed = True
        finally:
            if not completed:
                self._abort(target)
        self._ensure_retention(key)

    def _abort(self, target: dict[str, Any]) -> None:
        try:
            self._client.abort_multipart_upload(**target)
        except Exception:
            logger.warning("could not abort multipart upload of %s", target["Key"])

    # -- Object Lock ---------------------------------------------------------------------

    def _lock_config(self) -> tuple[bool, str | None]:
        """(Object Lock enabled, default mode) of the bucket, asked once."""
        with self._bucket_lock_guard:
            if self._bucket_lock is None:
                self._bucket_lock = self._read_lock_config()
            return self._bucket_lock

    def _read_lock_config(self) -> tuple[bool, str | None]:
        try:
            response = self._client.get_object_lock_configuration(Bucket=self.bucket)
        except Exception as exc:
            code = _code(exc)
            if code == "ObjectLockConfigurationNotFoundError":
                return (False, None)
            if code in ("AccessDenied", "403"):
                # The application may lack s3:GetBucketObjectLockConfiguration; that is fine.
                logger.info("cannot read the Object Lock configuration of %s", self.bucket)
                return (self.lock_mode is not None, None)
            self._translate(exc, "GetObjectLockConfiguration", "")
        config = response.get("ObjectLockConfiguration", {})
        enabled = config.get("ObjectLockEnabled") == "Enabled"
        default = config.get("Rule", {}).get("DefaultRetention", {})
        mode = default.get("Mode") if enabled else None
        return (enabled, str(mode) if mode else None)

    def _check_lock_settings(self) -> None:
        if self.lock_mode is not None and not self._lock_config()[0]:
            raise ConfigurationError(
                f"AWS_S3_OBJECT_LOCK_MODE={self.lock_mode} but bucket {self.bucket!r} "
                "has no Object Lock (create it with --object-lock-enabled-for-bucket)"
            )

    def _wanted_retention(self) -> ObjectRetention | None:
        if self.lock_mode is None or self.retention_days is None:
            return None
        until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=self.retention_days)
        return ObjectRetention(self.lock_mode, until)

    def _default_retention(self) -> ObjectRetention | None:
        """The bucket's default retention as it would apply to an object written now."""
        try:
            response = self._client.get_object_lock_configuration(Bucket=self.bucket)
        except Exception:
            return None
        rule = response.get("ObjectLockConfiguration", {}).get("Rule", {})
        default = rule.get("DefaultRetention", {})
        if not default.get("Mode"):
            return None
        days = int(default.get("Days") or 0) + 365 * int(default.get("Years") or 0)
        if days <= 0:
            return None
        until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)
        return ObjectRetention(str(default["Mode"]), until)

    def _ensure_retention(self, key: str) -> None:
        """After a multipart upload: apply the retention the store should have applied."""
        wanted = self._wanted_retention()
        if wanted is None and self._lock_config()[1] is not None:
            wanted = self._default_retention()
        if wanted is None:
            return
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=self.prefix + key)
            if _retention_from(response) is not None:
                return
            self._client.put_object_retention(
                Bucket=self.bucket,
                Key=self.prefix + key,
                VersionId=response.get("VersionId"),
                Retention={"Mode": wanted.mode, "RetainUntilDate": wanted.retain_until},
            )
        except Exception as exc:
            self._translate(exc, "PutObjectRetention", key)

    # -- reading -------------------------------------------------------------------------

    def _info_from(self, key: str, response: dict[str, Any]) -> BlobInfo:
        stored = _b64_to_hex(str(response.get("ChecksumSHA256") or ""))
        etag = str(response.get("ETag") or "").strip('"')
        if response.get("ChecksumType") == "COMPOSITE" or re.search(r"-\d+$", etag):
            stored = None  # a multipart object: S3's checksum covers the part checksums
        claimed = (response.get("Metadata") or {}).get("sha256")
        if stored is not None and claimed is not None and stored != claimed:
            raise BlobIntegrityError(f"blob {key!r}: S3's checksum and the sha256 metadata differ")
        return BlobInfo(
            key=key,
            size=int(response.get("ContentLength", 0)),
            sha256=stored or str(claimed or ""),
            content_type=str(response.get("ContentType") or DEFAULT_CONTENT_TYPE),
        )

    def _stream(self, key: str, body: Any, expected: str, chunk_size: int) -> Iterator[bytes]:
        digest = hashlib.sha256()
        try:
            for chunk in body.iter_chunks(chunk_size):
                digest.update(chunk)
                yield chunk
        except Exception as exc:
            self._translate(exc, "GetObject", key)
        finally:
            body.close()
        if expected and digest.hexdigest() != expected:
            raise BlobIntegrityError(f"blob {key!r}: the bytes read do not match their SHA-256")

    # -- errors --------------------------------------------------------------------------

    def _is_missing(self, exc: Exception) -> bool:
        return isinstance(exc, self._errors.ClientError) and _code(exc) in _MISSING_CODES

    def _translate(self, exc: Exception, operation: str, key: str) -> NoReturn:
        """Raise the usermgmt error for a boto3 / botocore exception (chained)."""
        errors = self._errors
        where = f"S3 {operation} on s3://{self.bucket}/{self.prefix}{key}"
        if isinstance(exc, errors.ClientError):
            code = _code(exc)
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            message = str(exc.response.get("Error", {}).get("Message", ""))[:200]
            detail = f"{where} refused: {code}{': ' + message if message else ''}"
            if code in _EXISTS_CODES or status == 412:
                raise _KeyTaken from exc
            if code in _INTEGRITY_CODES:
                raise BlobIntegrityError(detail) from exc
            if code in _TRANSIENT_CODES or status >= 500 or status == 429:
                raise BackendUnavailable(detail) from exc
            if code in _CONFIG_CODES:
                raise ConfigurationError(
                    f"{detail} (check AWS_S3_BUCKET, the credentials and the IAM policy)"
                ) from exc
            if code in ("InvalidRequest", "InvalidArgument") and "lock" in message.lower():
                raise ConfigurationError(detail) from exc
            if code == "KeyTooLongError":
                raise ValidationError("invalid blob key: too long for S3") from exc
            raise BackendError(detail) from exc
        if isinstance(exc, errors.NoCredentialsError | errors.PartialCredentialsError):
            raise ConfigurationError("No AWS credentials for S3") from exc
        if isinstance(exc, errors.ParamValidationError):
            raise ValidationError(f"{where}: {exc}") from exc
        if isinstance(exc, errors.BotoCoreError | OSError):
            # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
            # IncompleteReadError, ResponseStreamingError, FlexibleChecksumError ...
            if type(exc).__name__ == "FlexibleChecksumError":
                raise BlobIntegrityError(f"{where}: {exc}") from exc
            raise BackendUnavailable(f"Could not reach S3 ({type(exc).__name__})") from exc
        raise exc


class _KeyTaken(Exception):
    """S3 refused a conditional write: the key exists (or is being written)."""


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def _retention_from(response: dict[str, Any]) -> ObjectRetention | None:
    mode = response.get("ObjectLockMode")
    until = response.get("ObjectLockRetainUntilDate")
    if not mode or not isinstance(until, datetime):
        return None
    return ObjectRetention(str(mode), until.astimezone(UTC))


def _normalise_prefix(prefix: str) -> str:
    prefix = prefix.strip()
    if not prefix:
        return ""
    prefix = prefix.rstrip("/")
    try:
        validate_blob_key(prefix)
    except ValidationError:
        raise ConfigurationError(
            "AWS_S3_PREFIX must be a relative path such as 'usermgmt/audit'"
        ) from None
    return prefix + "/"


def build(settings: Settings) -> S3BlobStorage:
    """The storage for ``STORAGE_BACKEND=s3``."""
    if not settings.aws_s3_bucket:
        raise ConfigurationError("STORAGE_BACKEND=s3 needs AWS_S3_BUCKET")
    secret = settings.aws_secret_access_key
    mode = settings.aws_s3_object_lock_mode
    return S3BlobStorage(
        bucket=settings.aws_s3_bucket,
        region=settings.aws_s3_region,
        endpoint_url=settings.aws_endpoint_url,
        access_key_id=settings.aws_access_key_id,
        secret_access_key=None if secret is None else secret.get_secret_value(),
        prefix=settings.aws_s3_prefix,
        lock_mode=None if mode == "none" else mode,
        retention_days=None if mode == "none" else settings.aws_s3_object_lock_retention_days,
    )
