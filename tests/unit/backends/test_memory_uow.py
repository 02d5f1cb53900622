"""Behaviour of the in-memory unit of work beyond the shared contract."""

from __future__ import annotations

import threading

import pytest

from usermgmt.backends.memory import MemoryStore, MemoryUnitOfWorkFactory
from usermgmt.errors import TransactionConflict
from usermgmt.testing.contracts import make_organization, make_user


def test_read_only_unit_of_work_refuses_writes() -> None:
    factory = MemoryUnitOfWorkFactory()
    with factory(read_only=True) as uow:
        assert uow.users.count() == 0
        with pytest.raises(RuntimeError, match="read-only"):
            uow.users.add(make_user())
        uow.commit()  # nothing to commit is fine


def test_unit_of_work_belongs_to_its_thread() -> None:
    factory = MemoryUnitOfWorkFactory()
    errors: list[BaseException] = []
    with factory() as uow:

        def intruder() -> None:
            try:
                uow.users.count()
            except RuntimeError as exc:
                errors.append(exc)

        thread = threading.Thread(target=intruder)
        thread.start()
        thread.join(5)
    assert len(errors) == 1
    assert "another thread" in str(errors[0])


def test_unit_of_work_cannot_be_entered_twice_at_once() -> None:
    uow = MemoryUnitOfWorkFactory()()
    with uow, pytest.raises(RuntimeError, match="already open"):
        uow.__enter__()
    with uow:  # but it may be entered again once left
        uow.users.count()


def test_commit_and_rollback_outside_with_raise() -> None:
    uow = MemoryUnitOfWorkFactory()()
    with pytest.raises(RuntimeError):
        uow.commit()
    with pytest.raises(RuntimeError):
        uow.rollback()


def test_lock_timeout_reports_a_transaction_conflict() -> None:
    store = MemoryStore()
    holder = MemoryUnitOfWorkFactory(store)
    waiter = MemoryUnitOfWorkFactory(store, lock_timeout=0.05)
    entered, done = threading.Event(), threading.Event()

    def hold() -> None:
        with holder():
            entered.set()
            done.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert entered.wait(5)
        with pytest.raises(TransactionConflict), waiter():
            pass
    finally:
        done.set()
        thread.join(5)
    with waiter() as uow:  # the lock was released properly
        assert uow.users.count() == 0


def test_nested_unit_of_work_in_one_thread_commits_independently() -> None:
    factory = MemoryUnitOfWorkFactory()
    outer_user, inner_user = make_user(), make_user()
    with factory() as outer:
        outer.users.add(outer_user)
        with factory() as inner:
            assert inner.users.get(outer_user.id) == outer_user  # sees the outer writes
            inner.users.add(inner_user)
            inner.commit()
    with factory() as uow:
        assert uow.users.get(outer_user.id) is None
        assert uow.users.get(inner_user.id) == inner_user


def test_factories_share_a_store_and_count_rows() -> None:
    store = MemoryStore()
    with MemoryUnitOfWorkFactory(store)() as uow:
        uow.users.add(make_user())
        uow.organizations.add(make_organization())
        uow.commit()
    with MemoryUnitOfWorkFactory(store)() as uow:
        assert uow.users.count() == 1
    counts = store.counts()
    assert counts["users"] == 1
    assert counts["organizations"] == 1
    assert counts["audit"] == 0


def test_failed_write_leaves_nothing_behind() -> None:
    factory = MemoryUnitOfWorkFactory()
    first = make_user(email="a@example.com")
    with factory() as uow:
        uow.users.add(first)
        uow.commit()
    before = dict(factory.store.user_email_index)
    with factory() as uow:
        with pytest.raises(Exception, match="Email"):
            uow.users.add(make_user(email="A@example.com"))
        uow.commit()
    assert factory.store.user_email_index == before
    assert factory.store.counts()["users"] == 1
