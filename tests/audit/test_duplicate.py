"""A duplicate event id: Conflict, and the chain head stays in step with the events
even when the caller catches the Conflict and commits its other writes."""

from __future__ import annotations

import pytest

from tests.audit.conftest import T0, all_db_events, archiver
from usermgmt.audit_chain import GENESIS_HASH
from usermgmt.errors import Conflict
from usermgmt.ids import new_id
from usermgmt.ports import UnitOfWorkFactory
from usermgmt.testing.contracts import make_audit_event


@pytest.mark.parametrize("first_of_stream", [False, True])
def test_a_duplicate_id_caught_and_committed_leaves_the_chain_whole(
    uow_factory: UnitOfWorkFactory, first_of_stream: bool
) -> None:
    org, other = new_id(), new_id()
    original = make_audit_event(organization_id=org, occurred_at=T0)
    with uow_factory() as uow:
        uow.audit.add(original)
        uow.commit()
    duplicate = make_audit_event(
        id=original.id, organization_id=other if first_of_stream else org, occurred_at=T0
    )
    kept = make_audit_event(organization_id=org, occurred_at=T0)
    with uow_factory() as uow:
        with pytest.raises(Conflict):
            uow.audit.add(duplicate)
        uow.audit.add(kept)  # the unit of work is still usable (PostgreSQL too)
        uow.commit()
    checker, _ = archiver(uow_factory)
    report = checker.verify()
    assert report.problems == []
    assert report.database_events == 2
    with uow_factory(read_only=True) as uow:
        head = uow.audit_archive.head(str(org))
        empty = uow.audit_archive.head(str(other))
    # memory creates no head; SQL may leave one at seq 0 (the app role cannot delete heads)
    assert empty is None or (empty.seq, empty.hash) == (0, GENESIS_HASH)
    assert head is not None
    assert head.seq == 2
    assert sorted(int(e.chain_seq or 0) for e in all_db_events(uow_factory)) == [1, 2]
