"""``audit verify`` on a live system: an append or an archiver run that commits while
verify reads must not be reported as a break. The interleaving is injected
deterministically: the store's unit-of-work factory is wrapped so that a hook runs (in
its own transactions, on the real store) right before verify's first database read."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import Any

from tests.audit.conftest import T0, Tamper, all_db_events, append, archiver, hours
from usermgmt.ids import new_id
from usermgmt.ports import UnitOfWork, UnitOfWorkFactory


class _HookedArchiveRepo:
    def __init__(self, uow: _HookedUow) -> None:
        self._uow = uow

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if name == "events":
                self._uow.fire()  # before the transaction starts: it must not see the hook
            return getattr(self._uow.entered().audit_archive, name)(*args, **kwargs)

        return call


class _HookedUow:
    """A read-only unit of work entered lazily, so the hook runs outside of it (the
    memory store's lock, SQLite's snapshot)."""

    def __init__(self, inner: UnitOfWork, fire: Callable[[], None]) -> None:
        self._inner, self.fire, self._entered = inner, fire, False

    def entered(self) -> UnitOfWork:
        if not self._entered:
            self._inner.__enter__()
            self._entered = True
        return self._inner

    def __enter__(self) -> _HookedUow:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._entered:
            self._inner.__exit__(kind, exc, tb)

    @property
    def audit_archive(self) -> _HookedArchiveRepo:
        return _HookedArchiveRepo(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.entered(), name)


class HookedFactory:
    """``inner``, but ``hook`` runs once, before the first read of chained events."""

    def __init__(self, inner: UnitOfWorkFactory, hook: Callable[[], None]) -> None:
        self.inner, self.hook, self.fired = inner, hook, False

    def fire(self) -> None:
        if not self.fired:
            self.fired = True
            self.hook()

    def __call__(self, *, read_only: bool = False, replica: bool = False) -> Any:
        uow = self.inner(read_only=read_only, replica=replica)
        return _HookedUow(uow, self.fire) if read_only else uow

    def check(self) -> None:
        self.inner.check()


def test_an_append_during_verify_is_not_a_break(uow_factory: UnitOfWorkFactory) -> None:
    org = new_id()
    append(uow_factory, org, hours(T0, 10))
    hooked = HookedFactory(uow_factory, lambda: append(uow_factory, org, [T0 + timedelta(days=99)]))
    checker, _ = archiver(hooked, page_size=3)  # type: ignore[arg-type]
    report = checker.verify()
    assert hooked.fired
    assert report.problems == []
    assert report.database_events == 10  # the event appended after the head was read waits
    assert len(all_db_events(uow_factory)) == 11
    again, _ = archiver(uow_factory, page_size=3)
    quiet = again.verify()
    assert quiet.problems == []
    assert quiet.database_events == 11


def test_an_archiver_run_during_verify_is_not_a_break(uow_factory: UnitOfWorkFactory) -> None:
    org = new_id()
    append(uow_factory, org, hours(T0, 10))  # all due for archival at T0 + 100 days
    storage_holder: list[Any] = []

    def archive_now() -> None:
        report = archiver(uow_factory, storage_holder[0])[0].archive()
        assert report.events == 10
        assert not report.problems

    hooked = HookedFactory(uow_factory, archive_now)
    checker, _ = archiver(hooked, page_size=3)  # type: ignore[arg-type]
    storage_holder.append(checker.storage)
    report = checker.verify()
    assert hooked.fired
    assert report.problems == []
    assert report.archived_events == 10
    assert report.database_events == 0
    assert all_db_events(uow_factory) == []


def test_partly_archived_during_verify_is_not_a_break(uow_factory: UnitOfWorkFactory) -> None:
    org = new_id()
    append(uow_factory, org, hours(T0, 6))  # due
    append(uow_factory, org, hours(T0 + timedelta(days=95), 4))  # young: stay in the database
    storage_holder: list[Any] = []
    hooked = HookedFactory(
        uow_factory, lambda: archiver(uow_factory, storage_holder[0])[0].archive()
    )
    checker, _ = archiver(hooked, page_size=3)  # type: ignore[arg-type]
    storage_holder.append(checker.storage)
    report = checker.verify()
    assert hooked.fired
    assert report.problems == []
    assert (report.archived_events, report.database_events) == (6, 4)


def test_a_real_gap_is_still_reported_after_the_ledger_reread(
    uow_factory: UnitOfWorkFactory,
) -> None:
    org = new_id()
    events = append(uow_factory, org, hours(T0, 5))
    Tamper(uow_factory).delete(events[0])
    checker, _ = archiver(uow_factory)
    problems = checker.verify().problems
    assert len(problems) == 1
    assert "seq 1" in problems[0]
