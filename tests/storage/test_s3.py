"""The S3 backend against moto's S3 server with an Object Lock bucket.

The contract (tests/storage/test_contracts.py) covers the shared behaviour; here: what
the bucket itself refuses (checked with plain boto3, i.e. even against us), retention,
checksums, multipart uploads and the mapping of S3 failures to usermgmt errors.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.email import free_port
from tests.storage.conftest import DEFAULT_RETENTION_DAYS, MotoS3
from tests.storage.gate import Gate, s3_gate
from usermgmt import Settings
from usermgmt.backends import build_storage
from usermgmt.backends.storage.s3 import S3BlobStorage, build
from usermgmt.errors import (
    BackendError,
    BackendUnavailable,
    BlobExists,
    BlobIntegrityError,
    ConfigurationError,
    MissingDependency,
    NotFound,
    ValidationError,
)

MIB = 1024 * 1024


def _storage(s3: MotoS3, endpoint: str | None = None, **kwargs: Any) -> S3BlobStorage:
    values: dict[str, Any] = {
        "bucket": s3.bucket,
        "region": s3.region,
        "endpoint_url": endpoint or s3.endpoint,
        "access_key_id": s3.access_key_id,
        "secret_access_key": s3.secret_access_key,
        "timeout": 5.0,
    }
    values.update(kwargs)
    return S3BlobStorage(**values)


def _versions(s3: MotoS3, key: str) -> list[dict[str, Any]]:
    response = s3.client().list_object_versions(Bucket=s3.bucket, Prefix=key)
    return [v for v in response.get("Versions", []) if v["Key"] == key]


def _about(when: datetime, expected: datetime) -> bool:
    return abs((when - expected).total_seconds()) < 120


@pytest.fixture
def gate(moto_server: str) -> Iterator[Gate]:
    with s3_gate(moto_server) as relay:
        yield relay


# --- the bucket protects the archive, even from us --------------------------------------


def test_overwrite_through_the_backend_is_refused(
    s3_storage: S3BlobStorage, moto_s3: MotoS3
) -> None:
    info = s3_storage.put(
        "org/2026/01/batch-1.jsonl.gz", b"original", content_type="application/gzip"
    )
    with pytest.raises(BlobExists):
        s3_storage.put("org/2026/01/batch-1.jsonl.gz", b"tampered")
    assert s3_storage.put("org/2026/01/batch-1.jsonl.gz", b"original") == info  # a re-run
    assert len(_versions(moto_s3, "org/2026/01/batch-1.jsonl.gz")) == 1  # nothing was written
    assert s3_storage.get("org/2026/01/batch-1.jsonl.gz") == b"original"


def test_conditional_write_refuses_a_second_object_at_the_s3_level(
    s3_storage: S3BlobStorage, moto_s3: MotoS3
) -> None:
    s3_storage.put("k", b"archived")
    with pytest.raises(ClientError) as info:
        moto_s3.client().put_object(
            Bucket=moto_s3.bucket,
            Key="k",
            Body=b"other",
            IfNoneMatch="*",
            ChecksumAlgorithm="SHA256",
        )
    assert info.value.response["Error"]["Code"] == "PreconditionFailed"


def test_deleting_a_locked_version_is_refused(s3_storage: S3BlobStorage, moto_s3: MotoS3) -> None:
    s3_storage.put("org/a.jsonl.gz", b"evidence")
    client = moto_s3.client()
    [version] = _versions(moto_s3, "org/a.jsonl.gz")
    with pytest.raises(ClientError) as info:
        client.delete_object(
            Bucket=moto_s3.bucket, Key="org/a.jsonl.gz", VersionId=version["VersionId"]
        )
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    # A delete without a version only hides the object behind a delete marker ...
    client.delete_object(Bucket=moto_s3.bucket, Key="org/a.jsonl.gz")
    assert s3_storage.head("org/a.jsonl.gz") is None
    # ... and an unconditional overwrite only adds a version: the locked bytes stay.
    client.put_object(
        Bucket=moto_s3.bucket, Key="org/a.jsonl.gz", Body=b"forged", ChecksumAlgorithm="SHA256"
    )
    kept = client.get_object(
        Bucket=moto_s3.bucket, Key="org/a.jsonl.gz", VersionId=version["VersionId"]
    )
    assert kept["Body"].read() == b"evidence"


def test_compliance_mode_cannot_be_bypassed(moto_s3: MotoS3) -> None:
    storage = _storage(moto_s3, lock_mode="COMPLIANCE", retention_days=30)
    storage.put("c", b"kept for 30 days")
    [version] = _versions(moto_s3, "c")
    with pytest.raises(ClientError) as info:
        moto_s3.client().delete_object(
            Bucket=moto_s3.bucket,
            Key="c",
            VersionId=version["VersionId"],
            BypassGovernanceRetention=True,
        )
    assert info.value.response["Error"]["Code"] == "AccessDenied"


# --- retention -----------------------------------------------------------------------------


def test_bucket_default_retention_applies(s3_storage: S3BlobStorage, moto_s3: MotoS3) -> None:
    s3_storage.put("d", b"x")
    head = moto_s3.client().head_object(Bucket=moto_s3.bucket, Key="d")
    expected = datetime.now(UTC) + timedelta(days=DEFAULT_RETENTION_DAYS)
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert _about(head["ObjectLockRetainUntilDate"], expected)
    retention = s3_storage.retention("d")
    assert retention is not None
    assert retention.mode == "GOVERNANCE"
    assert _about(retention.retain_until, expected)
    assert s3_storage.bucket_default_retention() == "GOVERNANCE"


@pytest.mark.parametrize("mode", ["GOVERNANCE", "COMPLIANCE"])
def test_configured_retention_is_set_per_object(moto_s3: MotoS3, mode: str) -> None:
    storage = _storage(moto_s3, lock_mode=mode, retention_days=400)
    storage.put("p", b"x")
    head = moto_s3.client().head_object(Bucket=moto_s3.bucket, Key="p")
    assert head["ObjectLockMode"] == mode
    assert _about(head["ObjectLockRetainUntilDate"], datetime.now(UTC) + timedelta(days=400))


def test_configured_retention_on_a_bucket_without_object_lock_is_a_configuration_error(
    moto_s3: MotoS3,
) -> None:
    plain = moto_s3.create_bucket(moto_s3.bucket + "-plain", object_lock=False)
    storage = _storage(plain, lock_mode="COMPLIANCE", retention_days=1)
    with pytest.raises(ConfigurationError, match="no Object Lock"):
        storage.put("k", b"x")
    assert _storage(plain).put("k", b"x").size == 1  # without a configured mode it works
    assert _storage(plain).retention("k") is None


def test_retention_of_a_missing_key(s3_storage: S3BlobStorage) -> None:
    with pytest.raises(NotFound):
        s3_storage.retention("absent")


# --- checksums -------------------------------------------------------------------------------


def test_head_reports_s3s_checksum(s3_storage: S3BlobStorage, moto_s3: MotoS3) -> None:
    data = b"line\n" * 1000
    s3_storage.put("sum", data, checksum_sha256=hashlib.sha256(data).hexdigest())
    raw = moto_s3.client().head_object(Bucket=moto_s3.bucket, Key="sum", ChecksumMode="ENABLED")
    assert raw["ChecksumSHA256"]  # S3 holds its own checksum of the bytes
    info = s3_storage.head("sum")
    assert info is not None
    assert (info.size, info.sha256) == (len(data), hashlib.sha256(data).hexdigest())


def test_wrong_checksum_from_the_caller_sends_nothing(
    s3_storage: S3BlobStorage, moto_s3: MotoS3
) -> None:
    with pytest.raises(BlobIntegrityError):
        s3_storage.put("bad", b"data", checksum_sha256="00" * 32)
    assert _versions(moto_s3, "bad") == []


def test_damage_in_transit_is_refused_by_s3_as_bad_digest(moto_s3: MotoS3, gate: Gate) -> None:
    storage = _storage(moto_s3, gate.url)
    gate.corrupt_uploads = True
    with pytest.raises(BlobIntegrityError, match="BadDigest"):
        storage.put("org/batch.jsonl.gz", b"{}\n" * 100)
    gate.corrupt_uploads = False
    assert storage.head("org/batch.jsonl.gz") is None
    assert storage.put("org/batch.jsonl.gz", b"{}\n" * 100).size == 300  # a retry succeeds


def test_tampered_object_is_detected_on_read(s3_storage: S3BlobStorage, moto_s3: MotoS3) -> None:
    info = s3_storage.put("t", b"genuine")
    # Someone with write access adds a version that claims the old checksum.
    moto_s3.client().put_object(
        Bucket=moto_s3.bucket, Key="t", Body=b"forged!", Metadata={"sha256": info.sha256}
    )
    with pytest.raises(BlobIntegrityError):
        s3_storage.get("t")


def test_iter_chunks_streams_the_object(s3_storage: S3BlobStorage) -> None:
    data = bytes(range(256)) * 5000
    s3_storage.put("stream", data)
    chunks = list(s3_storage.iter_chunks("stream", chunk_size=64 * 1024))
    assert len(chunks) > 1
    assert b"".join(chunks) == data
    with pytest.raises(NotFound):
        s3_storage.get("absent")


# --- multipart ---------------------------------------------------------------------------------


def _multipart(s3: MotoS3, endpoint: str | None = None, **kwargs: Any) -> S3BlobStorage:
    return _storage(s3, endpoint, part_size=5 * MIB, multipart_threshold=5 * MIB, **kwargs)


def test_multipart_upload(moto_s3: MotoS3) -> None:
    storage = _multipart(moto_s3)
    data = hashlib.sha256(b"seed").digest() * (12 * MIB // 32) + b"tail"
    info = storage.put("big/archive.jsonl.gz", data, content_type="application/gzip")
    raw = moto_s3.client().head_object(
        Bucket=moto_s3.bucket, Key="big/archive.jsonl.gz", ChecksumMode="ENABLED"
    )
    assert raw["ETag"].endswith('-3"')  # three parts: 5 + 5 + 2 MiB
    # S3's checksum of a multipart object covers the part checksums, not the bytes
    assert (
        raw["ChecksumSHA256"].split("-")[0]
        != base64.b64encode(hashlib.sha256(data).digest()).decode()
    )
    assert storage.head("big/archive.jsonl.gz") == info
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert storage.get("big/archive.jsonl.gz") == data
    # Retention reaches multipart objects too (S3 applies it; on moto the backend does).
    [version] = _versions(moto_s3, "big/archive.jsonl.gz")
    with pytest.raises(ClientError) as refused:
        moto_s3.client().delete_object(
            Bucket=moto_s3.bucket, Key="big/archive.jsonl.gz", VersionId=version["VersionId"]
        )
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # write-once: the same bytes are a no-op, other bytes are refused, no upload is left over
    assert storage.put("big/archive.jsonl.gz", data, content_type="application/gzip") == info
    with pytest.raises(BlobExists):
        storage.put("big/archive.jsonl.gz", data[:-1] + b"!")
    uploads = moto_s3.client().list_multipart_uploads(Bucket=moto_s3.bucket)
    assert uploads.get("Uploads", []) == []
    assert len(_versions(moto_s3, "big/archive.jsonl.gz")) == 1


def test_multipart_with_configured_compliance_retention(moto_s3: MotoS3) -> None:
    storage = _multipart(moto_s3, lock_mode="COMPLIANCE", retention_days=7)
    storage.put("big", b"z" * (6 * MIB))
    retention = storage.retention("big")
    assert retention is not None
    assert retention.mode == "COMPLIANCE"
    assert _about(retention.retain_until, datetime.now(UTC) + timedelta(days=7))


def test_failed_multipart_upload_is_aborted(moto_s3: MotoS3, gate: Gate) -> None:
    storage = _multipart(moto_s3, gate.url, max_attempts=2)
    gate.fail = (lambda method, path: method == "PUT" and "partNumber=2" in path, 503, "SlowDown")
    with pytest.raises(BackendUnavailable, match="SlowDown"):
        storage.put("big", b"y" * (11 * MIB))
    gate.fail = None
    assert storage.head("big") is None
    assert moto_s3.client().list_multipart_uploads(Bucket=moto_s3.bucket).get("Uploads", []) == []


# --- failures map to usermgmt errors -------------------------------------------------------------


@pytest.mark.parametrize(("status", "code"), [(503, "SlowDown"), (500, "InternalError")])
def test_transient_failures_are_backend_unavailable(
    moto_s3: MotoS3, gate: Gate, status: int, code: str
) -> None:
    storage = _storage(moto_s3, gate.url, max_attempts=2)
    gate.fail = (lambda method, path: True, status, code)
    with pytest.raises(BackendUnavailable):
        storage.put("k", b"x")
    with pytest.raises(BackendUnavailable):
        storage.head("k")
    with pytest.raises(BackendUnavailable):
        storage.list()
    assert sum(1 for method, _ in gate.requests if method == "HEAD") == 2, gate.requests


def test_unreachable_endpoint_is_backend_unavailable(moto_s3: MotoS3) -> None:
    storage = _storage(moto_s3, f"http://127.0.0.1:{free_port()}", max_attempts=1, timeout=1.0)
    with pytest.raises(BackendUnavailable):
        storage.put("k", b"x")
    with pytest.raises(BackendUnavailable):
        storage.get("k")


def test_missing_bucket_is_a_configuration_error(moto_s3: MotoS3) -> None:
    storage = _storage(MotoS3(moto_s3.endpoint, "no-such-bucket-here"))
    with pytest.raises(ConfigurationError, match="NoSuchBucket"):
        storage.put("k", b"x")
    with pytest.raises(ConfigurationError, match="does not exist"):
        storage.check()
    _storage(moto_s3).check()


def test_access_denied_is_a_configuration_error(moto_s3: MotoS3, gate: Gate) -> None:
    storage = _storage(moto_s3, gate.url)
    gate.fail = (lambda method, path: True, 403, "AccessDenied")
    with pytest.raises(ConfigurationError, match=r"AccessDenied.*IAM policy"):
        storage.put("k", b"x")
    assert [m for m, _ in gate.requests] == ["PUT"]  # not retried


def test_listing_follows_pages(moto_s3: MotoS3, gate: Gate) -> None:
    storage = _storage(moto_s3, gate.url)
    keys = [f"org/{i:02d}" for i in range(5)]
    for key in keys:
        storage.put(key, key.encode())
    storage.list_page_size = 2
    gate.requests.clear()
    assert list(storage.keys("org/")) == keys
    assert sum(1 for method, _ in gate.requests if method == "GET") == 3  # 2 + 2 + 1


def test_other_refusals_are_backend_errors_not_retryable(moto_s3: MotoS3, gate: Gate) -> None:
    storage = _storage(moto_s3, gate.url)
    gate.fail = (lambda method, path: method == "PUT", 400, "EntityTooLarge")
    with pytest.raises(BackendError) as info:
        storage.put("k", b"x")
    assert not isinstance(info.value, BackendUnavailable)
    assert "EntityTooLarge" in info.value.detail


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/./b", ".usermgmt-meta/x", "a\\b"])
def test_bad_keys_never_reach_s3(moto_s3: MotoS3, gate: Gate, key: str) -> None:
    storage = _storage(moto_s3, gate.url)
    for call in (
        lambda: storage.put(key, b"x"),
        lambda: storage.head(key),
        lambda: storage.get(key),
    ):
        with pytest.raises(ValidationError):
            call()
    assert gate.requests == []


def test_prefix_is_applied_and_hidden(moto_s3: MotoS3) -> None:
    storage = _storage(moto_s3, prefix="usermgmt/audit/")
    storage.put("org/x", b"1")
    listed = moto_s3.client().list_objects_v2(Bucket=moto_s3.bucket)["Contents"]
    assert [o["Key"] for o in listed] == ["usermgmt/audit/org/x"]
    assert [i.key for i in storage.list()] == ["org/x"]
    assert storage.list("usermgmt") == []


def test_credentials_never_appear_in_repr(s3_storage: S3BlobStorage, moto_s3: MotoS3) -> None:
    assert moto_s3.secret_access_key not in repr(s3_storage)
    assert moto_s3.bucket in repr(s3_storage)


# --- settings and the composition root -------------------------------------------------------------


def test_build_storage_selects_s3(s3_settings: Settings, moto_s3: MotoS3) -> None:
    storage = build_storage(s3_settings)
    assert isinstance(storage, S3BlobStorage)
    assert storage.bucket == moto_s3.bucket
    assert storage.lock_mode is None
    assert storage.put("via/settings", b"ok").size == 2


def test_settings_carry_lock_mode_retention_and_prefix(
    moto_s3: MotoS3, s3_settings: Settings
) -> None:
    settings = s3_settings.model_copy(
        update={
            "aws_s3_object_lock_mode": "COMPLIANCE",
            "aws_s3_object_lock_retention_days": 10,
            "aws_s3_prefix": "p",
        }
    )
    storage = build(settings)
    assert (storage.lock_mode, storage.retention_days, storage.prefix) == ("COMPLIANCE", 10, "p/")
    storage.put("k", b"x")
    head = moto_s3.client().head_object(Bucket=moto_s3.bucket, Key="p/k")
    assert head["ObjectLockMode"] == "COMPLIANCE"


def test_missing_boto3_names_the_aws_extra(
    monkeypatch: pytest.MonkeyPatch, s3_settings: Settings
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name.split(".")[0] in ("boto3", "botocore") else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingDependency) as info:
        build_storage(s3_settings)
    assert 'pip install "usermgmt[aws]"' in info.value.detail
