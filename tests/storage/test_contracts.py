"""Every blob storage backend against BlobStorageContract: memory, a local directory
and S3 (moto's server, an Object Lock bucket)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.storage.conftest import MotoS3
from usermgmt.backends.memory import MemoryBlobStorage
from usermgmt.backends.storage.local import LocalBlobStorage
from usermgmt.backends.storage.s3 import S3BlobStorage
from usermgmt.ports import BlobStorage
from usermgmt.testing.contracts import BlobStorageContract


@pytest.fixture(params=["memory", "local", "s3", "s3-prefixed"])
def blob_storage(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStorage:
    if request.param == "memory":
        return MemoryBlobStorage()
    if request.param == "local":
        return LocalBlobStorage(tmp_path / "blobs")
    s3: MotoS3 = request.getfixturevalue("moto_s3")
    if request.param == "s3":
        storage: S3BlobStorage = request.getfixturevalue("s3_storage")
        return storage
    # keys live under a prefix the caller never sees
    return S3BlobStorage(
        bucket=s3.bucket,
        region=s3.region,
        endpoint_url=s3.endpoint,
        access_key_id=s3.access_key_id,
        secret_access_key=s3.secret_access_key,
        prefix="tenant-a/audit",
    )


class TestBlobStorage(BlobStorageContract):
    pass
