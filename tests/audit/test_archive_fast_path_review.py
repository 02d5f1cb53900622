"""Review tests of the archiver's PostgreSQL fast path (``audit_lines``): what the hash
check does not prove, session time zones, UTC midnight and the cutoff, and connections
after a stream fails midway."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from tests.audit.conftest import T0, Tamper, all_db_events, append, archiver, hours
from tests.audit.test_archive_fast_path import add, archived_lines
from tests.sql.conftest import truncate_all
from usermgmt.audit_chain import canonical_json, event_record
from usermgmt.backends.memory import MemoryBlobStorage, MemoryUnitOfWorkFactory
from usermgmt.backends.sqlalchemy import SqlUnitOfWorkFactory
from usermgmt.errors import BackendUnavailable
from usermgmt.ids import new_id
from usermgmt.ports import UnitOfWorkFactory
from usermgmt.services.archive import AuditArchiver

pytestmark = pytest.mark.sql

#: ``archiver()``'s cutoff: T0 + 100 days - 90 days.
CUTOFF = T0 + timedelta(days=10)


@pytest.fixture(params=["UTC", "America/New_York", "Pacific/Chatham"])
def zoned_factory(
    request: pytest.FixtureRequest, pg_contracts_url: str
) -> Iterator[SqlUnitOfWorkFactory]:
    """The PostgreSQL store, its sessions in the time zone ``request.param``."""
    truncate_all(pg_contracts_url)
    options = quote(f"-c TimeZone={request.param}")
    factory = SqlUnitOfWorkFactory(f"{pg_contracts_url}?options={options}")
    with factory.engine.connect() as connection:
        from sqlalchemy import text

        assert connection.execute(text("SHOW TimeZone")).scalar_one() == request.param
    yield factory
    factory.dispose()


@pytest.mark.parametrize(
    ("stored", "tampered"),
    [
        ({"note": "x,y"}, '{"note": "x, y"}'),
        ({"note": "a:b"}, '{"note": "a: b"}'),
        ({"l": ["1,2", 3]}, '{"l": ["1, 2", 3]}'),
    ],
)
def test_a_metadata_string_respaced_in_the_database_is_refused(
    zoned_factory: SqlUnitOfWorkFactory, stored: dict[str, object], tampered: str
) -> None:
    """jsonb text has ", " and ": " between items; a string value changed to hold them
    must not be taken for the separators: the event is modified, so it is refused (and
    its row kept) as the reference path refuses it, never archived as the original."""
    org = new_id()
    events = [add(zoned_factory, org, metadata=stored) for _ in range(3)]
    Tamper(zoned_factory)._sql(
        "UPDATE audit_logs SET metadata = CAST(:v AS jsonb) WHERE id = :id",
        v=tampered,
        id=events[1].id,
    )
    storage = MemoryBlobStorage()
    arch, _ = archiver(zoned_factory, storage)
    report = arch.archive()
    (problem,) = report.problems
    assert "broken chain, not archived" in problem
    assert "seq 2" in problem
    assert report.events == 0
    assert storage.list() == []
    assert len(all_db_events(zoned_factory)) == 3
    (verify_problem,) = arch.verify().problems
    assert "seq 2" in verify_problem


def test_batches_are_utc_days_whatever_the_session_time_zone(
    zoned_factory: SqlUnitOfWorkFactory,
) -> None:
    """Batch boundaries at UTC midnight and at the cutoff, and the lines' times, in UTC
    with the session in any time zone; the same keys as the reference path."""
    org = new_id()
    times = [
        T0 - timedelta(microseconds=1),  # 2025-12-31 UTC
        T0,  # midnight UTC: a new batch
        T0 + timedelta(hours=4, minutes=30),  # still 2025-12-31 in New York
        T0 + timedelta(days=1) - timedelta(microseconds=1),
        T0 + timedelta(days=1),
        CUTOFF - timedelta(days=1),
        CUTOFF - timedelta(microseconds=1),  # due
        CUTOFF,  # not due: neither it nor anything after it
        CUTOFF - timedelta(days=2),
    ]
    events = append(zoned_factory, org, times)
    storage = MemoryBlobStorage()
    arch, _ = archiver(zoned_factory, storage, batch_size=2)
    report = arch.archive()
    assert report.problems == []
    assert report.keys == [
        f"audit/{org}/2025-12-31/000000000001-000000000001.jsonl.gz",
        f"audit/{org}/2026-01-01/000000000002-000000000003.jsonl.gz",
        f"audit/{org}/2026-01-01/000000000004-000000000004.jsonl.gz",
        f"audit/{org}/2026-01-02/000000000005-000000000005.jsonl.gz",
        f"audit/{org}/2026-01-10/000000000006-000000000007.jsonl.gz",
    ]
    assert archived_lines(storage) == [canonical_json(event_record(e)) for e in events[:7]]
    assert sorted(int(e.chain_seq or 0) for e in all_db_events(zoned_factory)) == [8, 9]
    for batch in arch._batches(str(org)):
        assert batch.min_occurred_at.tzinfo is not None
    (first, second, *_) = arch._batches(str(org))
    assert (first.min_occurred_at, first.max_occurred_at) == (times[0], times[0])
    assert (second.min_occurred_at, second.max_occurred_at) == (times[1], times[2])
    assert arch.verify().problems == []


def test_a_stream_failing_midway_returns_every_connection(
    zoned_factory: SqlUnitOfWorkFactory,
) -> None:
    """A tampered event deep in a batch (past the first pages of the server-side cursor)
    stops the stream with the rows kept, and no connection stays checked out."""
    org = new_id()
    at = datetime(2026, 1, 1, 12, tzinfo=UTC)
    events = append(zoned_factory, org, [at] * 2_500)
    Tamper(zoned_factory).modify(events[2_100], "forged")
    storage = MemoryBlobStorage()
    arch, _ = archiver(zoned_factory, storage)
    report = arch.archive()
    (problem,) = report.problems
    assert "seq 2101" in problem
    assert storage.list() == []
    assert len(all_db_events(zoned_factory)) == 2_500
    assert zoned_factory.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


class _FailingPut(MemoryBlobStorage):
    """Memory storage whose ``nth`` upload fails with ``error``."""

    def __init__(self, nth: int, error: BaseException) -> None:
        super().__init__()
        self.nth, self.error, self.puts = nth, error, 0

    def put(self, key: str, data: bytes, **kwargs: Any) -> Any:
        self.puts += 1
        if self.puts == self.nth:
            raise self.error
        return super().put(key, data, **kwargs)


@pytest.mark.parametrize(
    "error", [BackendUnavailable("S3 is down"), KeyboardInterrupt()], ids=["down", "crash"]
)
@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_later_batch_failing_records_nothing_after_it(
    uow_factory: UnitOfWorkFactory, error: BaseException, concurrency: int
) -> None:
    """Batch 2 of 4 fails to upload while batch 3 is read and compressed: batch 1 stays
    recorded, nothing from batch 2 on is uploaded, recorded or deleted; a rerun completes
    under the same keys."""
    org = new_id()
    events = append(uow_factory, org, hours(T0, 8, step=12))  # 2 a day: 4 batches
    storage = _FailingPut(2, error)
    arch, clock = archiver(uow_factory, storage, concurrency=concurrency)
    if isinstance(error, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            arch.archive()
    else:
        report = arch.archive()
        (problem,) = report.problems
        assert "S3 is down" in problem
        assert (report.batches, report.events) == (1, 2)
    (first,) = arch._batches(str(org))
    assert (first.first_seq, first.last_seq) == (1, 2)
    assert [info.key for info in storage.list()] == [first.key]
    assert sorted(int(e.chain_seq or 0) for e in all_db_events(uow_factory)) == list(range(3, 9))
    rerun = AuditArchiver(uow_factory, storage, clock, after_days=90).archive()
    assert (rerun.problems, rerun.events) == ([], 6)
    assert all_db_events(uow_factory) == []
    assert archived_lines(storage) == [canonical_json(event_record(e)) for e in events]
    assert arch.verify().problems == []


def test_the_first_event_after_the_archive_must_link_to_it(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """An event rewritten with a self-consistent hash but a ``prev_hash`` that is not the
    hash of the last archived event breaks the chain at the archive boundary: it is
    refused (rows kept), not archived behind the archive's back."""
    import dataclasses

    from usermgmt.audit_chain import chain_event

    org = new_id()
    events = append(uow_factory, org, [T0, T0 + timedelta(hours=1), T0 + timedelta(days=20)])
    storage = MemoryBlobStorage()
    arch, clock = archiver(uow_factory, storage)
    assert arch.archive().events == 2
    forged = chain_event(dataclasses.replace(events[2], hash=None), 3, "0" * 64)
    if isinstance(uow_factory, MemoryUnitOfWorkFactory):
        Tamper(uow_factory)._memory(lambda t: t.__setitem__(forged.id, forged))
    else:
        Tamper(uow_factory)._sql(
            "UPDATE audit_logs SET prev_hash = :p, hash = :h WHERE id = :id",
            p=forged.prev_hash,
            h=forged.hash,
            id=Tamper(uow_factory)._id(forged.id),
        )
    clock.advance(timedelta(days=30))
    report = arch.archive()
    (problem,) = report.problems
    assert "broken chain, not archived" in problem
    assert "seq 3" in problem
    assert report.events == 0
    assert len(storage.list()) == 1
    assert [e.id for e in all_db_events(uow_factory)] == [forged.id]


class _RaceRepository:
    """The archive repository of a unit of work; ``race`` runs once right after the
    first ``next_batch`` (between the batch bounds query and the line query)."""

    def __init__(self, inner: Any, owner: _RacingFactory) -> None:
        self._inner = inner
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def next_batch(self, stream: str, **kwargs: Any) -> Any:
        found = self._inner.next_batch(stream, **kwargs)
        race, self._owner.race = self._owner.race, None
        if race is not None:
            race()
        return found


class _RacingFactory:
    def __init__(self, inner: SqlUnitOfWorkFactory) -> None:
        self.inner = inner
        self.race: Any = None

    def __call__(self, *, read_only: bool = False, replica: bool = False) -> Any:
        uow = self.inner(read_only=read_only, replica=replica)
        uow.audit_archive = _RaceRepository(uow.audit_archive, self)
        return uow


def test_a_batch_archived_by_another_run_between_the_two_queries(
    zoned_factory: SqlUnitOfWorkFactory,
) -> None:
    """Another archiver records the batch (and deletes its rows) after this run found the
    batch's bounds and before it read the lines; events are appended with old times
    meanwhile too: this run records nothing, each event is archived once, and the next
    run carries on with the appended ones."""
    org = new_id()
    events = append(zoned_factory, org, hours(T0, 3))
    storage = MemoryBlobStorage()
    racing = _RacingFactory(zoned_factory)
    other, _ = archiver(zoned_factory, storage)
    late: list[Any] = []

    def race() -> None:
        assert other.archive().events == 3
        late.extend(append(zoned_factory, org, [T0 + timedelta(hours=1)]))

    racing.race = race
    arch, _ = archiver(racing, storage)  # type: ignore[arg-type]
    report = arch.archive()
    (problem,) = report.problems
    assert "archived meanwhile" in problem
    assert report.events == 0
    assert [b.last_seq for b in arch._batches(str(org))] == [3]
    assert [e.id for e in all_db_events(zoned_factory)] == [late[0].id]
    assert archiver(zoned_factory, storage)[0].archive().events == 1
    assert archived_lines(storage) == [canonical_json(event_record(e)) for e in events + late]
    assert arch.verify().problems == []
