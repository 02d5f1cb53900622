"""The per-request reads of the memory backend (one lock acquisition each) and the data
version the authorization service remembers its answers by."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime

import pytest

from usermgmt.backends.memory import MemoryStore, MemoryUnitOfWorkFactory
from usermgmt.backends.memory.store import detach
from usermgmt.errors import TransactionConflict
from usermgmt.models import User
from usermgmt.ports import OneStatementReads
from usermgmt.services.authorization import ProcessLocalReads
from usermgmt.testing.contracts import (
    make_membership,
    make_organization,
    make_role,
    make_session,
    make_user,
)


def test_the_factory_offers_the_local_reads() -> None:
    factory = MemoryUnitOfWorkFactory()
    assert isinstance(factory, OneStatementReads)
    assert isinstance(factory, ProcessLocalReads)
    assert factory.reads_from_replicas is False


def test_the_data_version_changes_with_each_commit_or_rollback_that_changed_something() -> None:
    factory = MemoryUnitOfWorkFactory()
    start = factory.data_version
    with factory(read_only=True) as uow:
        uow.users.count()
    with factory() as uow:
        uow.commit()  # nothing written
    assert factory.data_version == start
    with factory() as uow:
        uow.users.add(make_user())
        assert factory.store.version == start  # not before the commit
        assert factory.data_version is None  # this thread has a unit of work open
        uow.commit()
        assert factory.data_version is None
    committed = factory.data_version
    assert committed != start
    with factory() as uow:
        uow.users.add(make_user())
    # left without commit: rolled back, which changes the version too
    assert factory.data_version not in (start, committed)


def test_member_roles_answers_from_the_store() -> None:
    factory = MemoryUnitOfWorkFactory()
    user, org, elsewhere = make_user(), make_organization(), make_organization()
    role = make_role(org.id, permissions=["member:read"])
    foreign = make_role(elsewhere.id)
    with factory() as uow:
        uow.users.add(user)
        uow.organizations.add(org)
        uow.organizations.add(elsewhere)
        uow.roles.add(role)
        uow.roles.add(foreign)
        uow.memberships.add(make_membership(org.id, user.id, [role.id, foreign.id]))
        uow.commit()
    version, found = factory.member_roles_at(org.id, user.id)
    assert version == factory.data_version
    assert found == (True, [role])  # the other organization's role is not one here
    assert factory.member_roles(org.id, user.id) == (True, [role])
    assert factory.member_roles(elsewhere.id, user.id) is None
    assert factory.member_roles(org.id, make_user().id) is None


def test_an_answer_seen_inside_an_open_unit_of_work_has_no_version() -> None:
    """The thread's own writes are visible but maybe never committed: not to remember."""
    factory = MemoryUnitOfWorkFactory()
    user, org = make_user(), make_organization()
    with factory() as uow:
        uow.users.add(user)
        uow.organizations.add(org)
        uow.memberships.add(make_membership(org.id, user.id))
        version, found = factory.member_roles_at(org.id, user.id)
        assert version is None
        assert found == (True, [])
    # rolled back
    assert factory.member_roles_at(org.id, user.id) == (factory.data_version, None)


def test_the_data_version_is_none_only_in_the_thread_with_a_unit_of_work_open() -> None:
    factory = MemoryUnitOfWorkFactory()
    other: list[int | None] = []
    with factory() as uow:
        with factory() as inner:  # nested in the same thread (a sync inline job)
            inner.users.add(make_user())
            inner.commit()
        assert factory.data_version is None  # the outer one is still open
        thread = threading.Thread(target=lambda: other.append(factory.data_version))
        thread.start()
        thread.join(5)
        uow.users.count()
    assert other == [factory.store.version]
    assert factory.data_version == factory.store.version


def test_live_session_user_sees_revocation_and_copies_the_user() -> None:
    factory = MemoryUnitOfWorkFactory()
    user = make_user(metadata={"plan": "pro"})
    session = make_session(user.id)
    with factory() as uow:
        uow.users.add(user)
        uow.sessions.add(session)
        uow.commit()
    live, found = factory.live_session_user(session.id, user.id)
    assert live is True
    assert found == user
    assert found is not None
    found.metadata["plan"] = "free"  # a copy: the store keeps its own
    assert factory.user_by_id(user.id) == user
    assert factory.live_session_user(make_session(user.id).id, user.id) == (False, user)
    assert factory.live_session_user(session.id, make_user().id) == (True, None)
    with factory() as uow:
        uow.sessions.revoke(session.id, datetime.now(UTC), "logout")
        uow.commit()
    assert factory.live_session_user(session.id, user.id)[0] is False
    assert factory.user_by_id(make_user().id) is None


def test_the_reads_wait_for_a_unit_of_work_of_another_thread() -> None:
    """Uncommitted writes of another thread are never seen: the reads take the lock."""
    factory = MemoryUnitOfWorkFactory()
    user, org = make_user(), make_organization()
    with factory() as uow:
        uow.users.add(user)
        uow.organizations.add(org)
        uow.commit()
    seen: list[object] = []
    inside = threading.Event()
    release = threading.Event()

    def writer() -> None:
        with factory() as uow:
            uow.memberships.add(make_membership(org.id, user.id))
            inside.set()
            release.wait(5)
            # rolled back on the way out

    thread = threading.Thread(target=writer)
    thread.start()
    assert inside.wait(5)
    reader = threading.Thread(target=lambda: seen.append(factory.member_roles(org.id, user.id)))
    reader.start()
    reader.join(0.2)
    assert reader.is_alive()  # blocked on the lock
    release.set()
    thread.join(5)
    reader.join(5)
    assert seen == [None]


def test_a_per_request_read_waits_at_most_the_lock_timeout() -> None:
    """A read while another thread holds a unit of work open: TransactionConflict once
    ``lock_timeout`` has passed (the free lock is taken without waiting)."""
    store = MemoryStore()
    holder = MemoryUnitOfWorkFactory(store)
    reader = MemoryUnitOfWorkFactory(store, lock_timeout=0.05)
    user = make_user()
    with holder() as uow:
        uow.users.add(user)
        uow.commit()
    assert reader.user_by_id(user.id) == user  # the lock is free: taken at once
    entered, done = threading.Event(), threading.Event()

    def hold() -> None:
        with holder():
            entered.set()
            done.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert entered.wait(5)
        with pytest.raises(TransactionConflict):
            reader.live_session_user_at(make_session(user.id).id, user.id)
    finally:
        done.set()
        thread.join(5)
    assert reader.live_session_user_at(make_session(user.id).id, user.id)[1:] == (False, user)


def test_a_copy_is_an_ordinary_frozen_entity_of_its_class() -> None:
    user = make_user(metadata={"plan": {"tier": "pro"}})
    copy = detach(user)
    assert type(copy) is User
    assert copy == user
    assert copy.metadata["plan"] is not user.metadata["plan"]  # deep
    with pytest.raises(dataclasses.FrozenInstanceError):
        copy.email = "other@example.com"  # type: ignore[misc]
    assert detach(make_user()).metadata == {}


def test_the_answer_of_a_session_read_names_its_data_version() -> None:
    factory = MemoryUnitOfWorkFactory()
    user = make_user()
    session = make_session(user.id)
    with factory() as uow:
        uow.users.add(user)
        uow.sessions.add(session)
        uow.commit()
        assert factory.live_session_user_at(session.id, user.id)[0] is None  # mine, open
    version, live, found = factory.live_session_user_at(session.id, user.id)
    assert (version, live, found) == (factory.data_version, True, user)
    assert factory.copy_of(user) == user
    assert factory.copy_of(user) is not user
