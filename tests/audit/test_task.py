"""The ``audit.archive`` queue task and the application's audit archiver."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from usermgmt.app import UserManagement
from usermgmt.audit_chain import PLATFORM_STREAM
from usermgmt.backends.memory import MemoryBlobStorage
from usermgmt.clock import FakeClock
from usermgmt.errors import BackendError
from usermgmt.services.archive import AUDIT_ARCHIVE_TASK, archive_key
from usermgmt.testing import create_user

pytestmark = pytest.mark.memory


def test_the_task_archives_what_the_services_wrote() -> None:
    clock = FakeClock(datetime(2026, 1, 1, 12, tzinfo=UTC))
    um = UserManagement.in_memory(clock=clock)
    owner, _ = create_user(um, "owner@example.com")
    org = um.organizations.create(owner.id, "Acme")
    clock.advance(seconds=91 * 86400)
    fresh = um.organizations.update(owner.id, org.id, name="Acme 2")
    assert fresh.name == "Acme 2"
    storage = um.backends.blobs
    assert isinstance(storage, MemoryBlobStorage)

    um.run_task(AUDIT_ARCHIVE_TASK, {})

    keys = [info.key for info in storage.list("audit/")]
    assert archive_key(str(org.id), datetime(2026, 1, 1).date(), 1, 1) in keys
    assert any(k.startswith(f"audit/{PLATFORM_STREAM}/2026-01-01/") for k in keys)
    left = um.audit.list(owner.id, org.id).items
    assert [e.action for e in left] == ["organization.updated"]
    assert um.audit_archiver.verify().problems == []


def test_a_failed_stream_fails_the_job() -> None:
    clock = FakeClock(datetime(2026, 1, 1, 12, tzinfo=UTC))
    um = UserManagement.in_memory(clock=clock)
    owner, _ = create_user(um, "owner@example.com")
    org = um.organizations.create(owner.id, "Acme")
    clock.advance(seconds=91 * 86400)
    key = archive_key(str(org.id), datetime(2026, 1, 1).date(), 1, 1)
    um.backends.blobs.put(key, b"squatter")

    with pytest.raises(BackendError, match="audit archival incomplete"):
        um.run_task(AUDIT_ARCHIVE_TASK, {})
    assert um.audit.list(owner.id, org.id).items[0].action == "organization.created"
