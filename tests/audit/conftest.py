"""Fixtures of the audit-trail tests: the three stores (memory, SQLite, a real
PostgreSQL), a way to append events at chosen times, and a way to tamper with rows
behind the application's back (what ``audit verify`` must catch)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import text

from tests.sql.conftest import (  # noqa: F401 - fixtures
    fresh_sqlite_url,
    pg_contracts_url,
    pg_server,
    sqlite_template,
    truncate_all,
)
from tests.storage.conftest import (  # noqa: F401 - fixtures (moto's S3, Object Lock bucket)
    moto_s3,
    moto_server,
    s3_settings,
    s3_storage,
)
from usermgmt.backends.memory import MemoryBlobStorage, MemoryUnitOfWorkFactory
from usermgmt.backends.sqlalchemy import SqlUnitOfWorkFactory
from usermgmt.clock import FakeClock
from usermgmt.ids import new_id
from usermgmt.models import AuditEvent
from usermgmt.ports import UnitOfWorkFactory
from usermgmt.services.archive import AuditArchiver
from usermgmt.testing.contracts import transact

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def uow_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[UnitOfWorkFactory]:
    """An empty, migrated store of each kind."""
    if request.param == "memory":
        yield MemoryUnitOfWorkFactory()
        return
    if request.param == "sqlite":
        url = fresh_sqlite_url(request.getfixturevalue("sqlite_template"), tmp_path)
    else:
        url = request.getfixturevalue("pg_contracts_url")
        truncate_all(url)
    factory = SqlUnitOfWorkFactory(url)
    yield factory
    factory.dispose()


def append(
    factory: UnitOfWorkFactory,
    organization_id: UUID | None,
    times: list[datetime],
    *,
    action: str = "member.added",
    **fields: Any,
) -> list[AuditEvent]:
    """One event per time, each in its own transaction; the chained events."""
    out = []
    for at in times:
        event = AuditEvent(
            id=new_id(),
            occurred_at=at,
            action=action,
            organization_id=organization_id,
            actor_user_id=new_id(),
            target_type="user",
            target_id=str(new_id()),
            ip="203.0.113.7",
            user_agent="pytest",
            request_id="req-1",
            metadata={"n": len(out), "roles": ["member"], "note": "é ✓"},
            **fields,
        )
        out.append(transact(factory, lambda uow, e=event: uow.audit.add(e)))
    return out


def hours(start: datetime, count: int, step: float = 6) -> list[datetime]:
    """``count`` times ``step`` hours apart from ``start``."""
    return [start + timedelta(hours=step * i) for i in range(count)]


@dataclasses.dataclass
class Backlog:
    """Events of several organizations and the platform over several days."""

    orgs: list[UUID]
    events: list[AuditEvent]


def make_backlog(factory: UnitOfWorkFactory) -> Backlog:
    orgs = [new_id(), new_id(), new_id()]
    events: list[AuditEvent] = []
    events += append(factory, orgs[0], hours(T0, 12))  # 3 days, 4 a day
    events += append(factory, orgs[1], hours(T0 + timedelta(hours=1), 5, step=11))
    events += append(factory, orgs[2], hours(T0 + timedelta(days=2), 3))
    events += append(factory, None, hours(T0, 4, step=20), action="user.login")
    # young events, not due for archival with a 90-day cutoff measured from T0 + 100d
    events += append(factory, orgs[0], hours(T0 + timedelta(days=95), 2))
    return Backlog(orgs, events)


def archiver(
    factory: UnitOfWorkFactory, storage: Any = None, **kwargs: Any
) -> tuple[AuditArchiver, FakeClock]:
    """An archiver at T0 + 100 days (so events of the first 10 days are due)."""
    clock = FakeClock(T0 + timedelta(days=100))
    return (
        AuditArchiver(factory, storage or MemoryBlobStorage(), clock, after_days=90, **kwargs),
        clock,
    )


# --- tampering (what only an attacker with database access would do) ----------------------


class Tamper:
    """Change rows behind the application's back, on any of the three stores."""

    def __init__(self, factory: UnitOfWorkFactory) -> None:
        self.factory = factory

    def _sql(self, statement: str, **params: Any) -> None:
        assert isinstance(self.factory, SqlUnitOfWorkFactory)
        with self.factory.engine.begin() as connection:
            connection.execute(text(statement), params)

    def _memory(self, change: Callable[[dict[UUID, AuditEvent]], None]) -> None:
        assert isinstance(self.factory, MemoryUnitOfWorkFactory)
        with self.factory.store.lock:
            change(self.factory.store.audit)

    def _id(self, event_id: UUID) -> Any:
        if not isinstance(self.factory, SqlUnitOfWorkFactory):
            return event_id
        return event_id if self.factory.engine.dialect.name == "postgresql" else event_id.hex

    def modify(self, event: AuditEvent, action: str) -> None:
        if isinstance(self.factory, MemoryUnitOfWorkFactory):
            self._memory(
                lambda t: t.__setitem__(event.id, dataclasses.replace(t[event.id], action=action))
            )
        else:
            self._sql(
                "UPDATE audit_logs SET action = :a WHERE id = :id", a=action, id=self._id(event.id)
            )

    def delete(self, event: AuditEvent) -> None:
        if isinstance(self.factory, MemoryUnitOfWorkFactory):
            self._memory(lambda t: t.__delitem__(event.id))
        else:
            self._sql("DELETE FROM audit_logs WHERE id = :id", id=self._id(event.id))

    def swap(self, a: AuditEvent, b: AuditEvent) -> None:
        """Swap the chain positions of two events (hashes and links stay as stored)."""
        if isinstance(self.factory, MemoryUnitOfWorkFactory):

            def change(t: dict[UUID, AuditEvent]) -> None:
                t[a.id] = dataclasses.replace(t[a.id], chain_seq=b.chain_seq)
                t[b.id] = dataclasses.replace(t[b.id], chain_seq=a.chain_seq)

            self._memory(change)
            return
        self._sql("UPDATE audit_logs SET chain_seq = -1 WHERE id = :id", id=self._id(a.id))
        self._sql(
            "UPDATE audit_logs SET chain_seq = :s WHERE id = :id", s=a.chain_seq, id=self._id(b.id)
        )
        self._sql(
            "UPDATE audit_logs SET chain_seq = :s WHERE id = :id", s=b.chain_seq, id=self._id(a.id)
        )


def all_db_events(factory: UnitOfWorkFactory) -> list[AuditEvent]:
    from usermgmt.ports import AuditQuery

    with factory(read_only=True) as uow:
        return uow.audit.list(AuditQuery(), limit=1_000_000, before=None)
