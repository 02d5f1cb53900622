"""Fixtures for blob storage: moto's S3 server on loopback with an Object Lock bucket.

Reuse them from another test folder (the audit archival tests do) with::

    from tests.storage.conftest import moto_s3, moto_server, s3_storage  # noqa: F401

``moto_server`` (session)
    a ``ThreadedMotoServer`` on 127.0.0.1 and a free port below 32768; yields its URL.
``moto_s3``
    a :class:`MotoS3`: the endpoint, a fresh bucket created with
    ``ObjectLockEnabledForBucket=True`` (so versioning is on) and a default retention of
    ``DEFAULT_RETENTION_DAYS`` days in GOVERNANCE mode, a region, credentials and a
    :meth:`MotoS3.client` for boto3 calls made directly by a test. Every test gets a new
    bucket, so tests never see each other's objects.
``s3_storage``
    an :class:`~usermgmt.backends.storage.s3.S3BlobStorage` on that bucket.
``s3_settings``
    :class:`~usermgmt.Settings` selecting ``STORAGE_BACKEND=s3`` on that bucket.

boto3 and moto are imported inside the fixtures, so importing this module needs neither.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.email import free_port

if TYPE_CHECKING:
    from usermgmt import Settings
    from usermgmt.backends.storage.s3 import S3BlobStorage

REGION = "eu-west-1"
KEY_ID = "testing-key-id"
SECRET = "testing-secret-do-not-leak"
DEFAULT_RETENTION_DAYS = 1
DEFAULT_RETENTION_MODE = "GOVERNANCE"

_bucket_numbers = itertools.count(1)
_CLIENTS: dict[tuple[str, str, str], Any] = {}


@dataclass(frozen=True)
class MotoS3:
    """A bucket on moto's S3 server."""

    endpoint: str
    bucket: str
    region: str = REGION
    access_key_id: str = KEY_ID
    secret_access_key: str = SECRET

    def client(self) -> Any:
        """A plain boto3 S3 client on the server (for what the backend must not do)."""
        key = (self.endpoint, self.region, self.access_key_id)
        if key not in _CLIENTS:
            import boto3

            _CLIENTS[key] = boto3.session.Session().client(
                "s3",
                region_name=self.region,
                endpoint_url=self.endpoint,
                aws_access_key_id=self.access_key_id,
                aws_secret_access_key=self.secret_access_key,
            )
        return _CLIENTS[key]

    def create_bucket(
        self, name: str, *, object_lock: bool = True, default_retention: bool = True
    ) -> MotoS3:
        """Create another bucket on the same server; the :class:`MotoS3` for it."""
        other = MotoS3(self.endpoint, name, self.region, self.access_key_id, self.secret_access_key)
        client = other.client()
        kwargs: dict[str, Any] = {}
        if object_lock:
            kwargs["ObjectLockEnabledForBucket"] = True
        client.create_bucket(
            Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.region}, **kwargs
        )
        if object_lock and default_retention:
            client.put_object_lock_configuration(
                Bucket=name,
                ObjectLockConfiguration={
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {
                        "DefaultRetention": {
                            "Mode": DEFAULT_RETENTION_MODE,
                            "Days": DEFAULT_RETENTION_DAYS,
                        }
                    },
                },
            )
        return other


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's S3 (and every other service) on loopback for the session; its URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto_s3(moto_server: str) -> MotoS3:
    """A fresh Object Lock bucket (versioned; default retention GOVERNANCE, 1 day)."""
    base = MotoS3(moto_server, "unused")
    return base.create_bucket(f"usermgmt-archive-{next(_bucket_numbers)}")


@pytest.fixture
def s3_settings(moto_s3: MotoS3) -> Settings:
    """Settings selecting STORAGE_BACKEND=s3 on the ``moto_s3`` bucket."""
    from usermgmt import Settings

    return Settings(
        environment="test",
        storage_backend="s3",
        aws_s3_bucket=moto_s3.bucket,
        aws_s3_region=moto_s3.region,
        aws_endpoint_url=moto_s3.endpoint,
        aws_access_key_id=moto_s3.access_key_id,
        aws_secret_access_key=moto_s3.secret_access_key,
    )


@pytest.fixture
def s3_storage(s3_settings: Settings) -> S3BlobStorage:
    """The S3 backend built from ``s3_settings`` (as ``build_storage`` would)."""
    from usermgmt.backends.storage import s3

    return s3.build(s3_settings)
