"""Archival to S3 (moto's server, an Object Lock bucket) from a real PostgreSQL:
the backlog moves exactly once, a fault keeps the rows, and the bucket refuses to
delete or overwrite what was archived."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.audit.conftest import all_db_events, archiver, make_backlog
from tests.audit.test_archive import FaultyStorage, assert_exactly_once
from tests.sql.conftest import truncate_all
from tests.storage.conftest import MotoS3
from usermgmt.backends.sqlalchemy import SqlUnitOfWorkFactory
from usermgmt.backends.storage.s3 import S3BlobStorage
from usermgmt.errors import BlobExists
from usermgmt.ports import UnitOfWorkFactory
from usermgmt.services.archive import AuditArchiver

pytestmark = pytest.mark.sql


@pytest.fixture
def pg_factory(pg_contracts_url: str) -> Iterator[UnitOfWorkFactory]:
    truncate_all(pg_contracts_url)
    factory = SqlUnitOfWorkFactory(pg_contracts_url)
    yield factory
    factory.dispose()


def test_backlog_is_archived_to_an_object_lock_bucket(
    pg_factory: UnitOfWorkFactory, s3_storage: S3BlobStorage, moto_s3: MotoS3
) -> None:
    backlog = make_backlog(pg_factory)
    arch, _ = archiver(pg_factory, s3_storage)
    report = arch.archive()
    assert report.problems == []
    assert (report.events, report.batches) == (24, 9)
    assert_exactly_once(pg_factory, s3_storage, backlog)
    assert len(all_db_events(pg_factory)) == 2
    verified = arch.verify()
    assert verified.problems == []
    assert (verified.archived_events, verified.database_events) == (24, 2)
    org0 = str(backlog.orgs[0])
    assert [r["seq"] for r in arch.export(org0)] == list(range(1, 15))

    key = report.keys[0]
    client: Any = moto_s3.client()
    (version,) = [
        v
        for v in client.list_object_versions(Bucket=moto_s3.bucket, Prefix=key)["Versions"]
        if v["Key"] == key
    ]
    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=moto_s3.bucket, Key=key, VersionId=version["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(BlobExists):
        s3_storage.put(key, b"forged")
    assert s3_storage.head(key) is not None
    assert arch.verify().problems == []
    # a raw PUT over the key only adds a version (the locked original stays), and
    # verify notices that the current version is not what the ledger recorded
    client.put_object(Bucket=moto_s3.bucket, Key=key, Body=gzip.compress(b"{}\n"))
    versions = client.list_object_versions(Bucket=moto_s3.bucket, Prefix=key)["Versions"]
    assert version["VersionId"] in {v["VersionId"] for v in versions if v["Key"] == key}
    (problem,) = arch.verify().problems
    assert key in problem


@pytest.mark.parametrize("fault", ["upload-fails", "corrupted-in-transit", "crash-after-upload"])
def test_faults_against_s3_keep_every_event_once(
    pg_factory: UnitOfWorkFactory, s3_storage: S3BlobStorage, fault: str
) -> None:
    backlog = make_backlog(pg_factory)
    arch, clock = archiver(pg_factory, FaultyStorage(s3_storage, fault))
    if fault == "crash-after-upload":
        with pytest.raises(KeyboardInterrupt):
            arch.archive()
    else:
        assert len(arch.archive().problems) == 1
    assert_exactly_once(pg_factory, s3_storage, backlog)
    rerun = AuditArchiver(pg_factory, s3_storage, clock, after_days=90)
    assert rerun.archive().problems == []
    assert_exactly_once(pg_factory, s3_storage, backlog)
    assert rerun.verify().problems == []
