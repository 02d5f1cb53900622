"""Revision 0002 chains the events an existing database already holds."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from tests.audit.conftest import T0, archiver
from tests.sql.conftest import PgServer
from usermgmt.audit_chain import GENESIS_HASH, PLATFORM_STREAM
from usermgmt.backends.sqlalchemy import SqlUnitOfWorkFactory, build_engine, migrate
from usermgmt.models import AuditEvent

pytestmark = pytest.mark.sql


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.database("usermgmt_audit_migration")
    migrate.downgrade(url, "base")
    return url


def test_upgrade_chains_existing_events_and_downgrade_keeps_them(url: str) -> None:
    migrate.upgrade(url, "0001")
    engine = build_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    org = uuid.uuid4()
    rows = [(org, i) for i in range(3)] + [(None, 3)]
    with engine.begin() as connection:
        for organization, minutes in rows:
            event_id = uuid.UUID(int=minutes + 1)
            connection.execute(
                text(
                    "INSERT INTO audit_logs (id, occurred_at, action, organization_id, outcome, "
                    "metadata) VALUES (:id, :at, 'member.added', :org, 'success', :meta)"
                ),
                {
                    "id": event_id.hex if sqlite else event_id,
                    "at": (T0 + timedelta(minutes=minutes)).replace(tzinfo=None)
                    if sqlite
                    else T0 + timedelta(minutes=minutes),
                    "org": None
                    if organization is None
                    else organization.hex
                    if sqlite
                    else organization,
                    "meta": json.dumps({"minute": minutes}),
                },
            )
    engine.dispose()

    migrate.upgrade(url)
    factory = SqlUnitOfWorkFactory(url)
    try:
        with factory(read_only=True) as uow:
            events = uow.audit_archive.events(str(org), after_seq=0, limit=10)
            platform = uow.audit_archive.events(PLATFORM_STREAM, after_seq=0, limit=10)
        assert [e.chain_seq for e in events] == [1, 2, 3]
        assert events[0].prev_hash == GENESIS_HASH
        assert [e.metadata for e in events] == [{"minute": 0}, {"minute": 1}, {"minute": 2}]
        assert [e.chain_seq for e in platform] == [1]
        report = archiver(factory)[0].verify()
        assert report.problems == []
        assert report.database_events == 4
        # new events continue the migrated chains
        with factory() as uow:
            added = uow.audit.add(
                AuditEvent(id=uuid.uuid4(), occurred_at=T0, action="x", organization_id=org)
            )
            uow.commit()
        assert (added.chain_seq, added.prev_hash) == (4, events[-1].hash)
    finally:
        factory.dispose()

    migrate.downgrade(url, "0001")
    engine = build_engine(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM audit_logs")).scalar_one() == 5
    engine.dispose()


@contextmanager
def backfill_updates() -> Iterator[list[int]]:
    """The number of parameter sets of each ``UPDATE audit_logs`` sent, on any engine
    (the migration builds its own)."""
    sent: list[int] = []

    def count(conn: object, cursor: object, statement: str, parameters: object, *_: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE AUDIT_LOGS"):
            many = isinstance(parameters, list | tuple) and isinstance(
                parameters[0] if parameters else None, dict | list | tuple
            )
            sent.append(len(parameters) if many else 1)  # type: ignore[arg-type]

    event.listen(Engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", count)


def test_backfill_updates_a_page_per_statement(url: str) -> None:
    """2,500 events in 3 streams: 3 executemany UPDATEs (pages of 1,000), not 2,500
    statements, and the same chains (verify holds, seqs run 1..n per stream)."""
    migrate.upgrade(url, "0001")
    engine = build_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    orgs = [uuid.uuid4(), uuid.uuid4(), None]
    rows = []
    for i in range(2500):
        org = orgs[i % 3]
        rows.append(
            {
                "id": uuid.UUID(int=i + 1).hex if sqlite else uuid.UUID(int=i + 1),
                "at": (T0 + timedelta(seconds=i)).replace(tzinfo=None)
                if sqlite
                else T0 + timedelta(seconds=i),
                "org": None if org is None else org.hex if sqlite else org,
                "meta": json.dumps({"i": i}),
            }
        )
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO audit_logs (id, occurred_at, action, organization_id, outcome, "
                "metadata) VALUES (:id, :at, 'member.added', :org, 'success', :meta)"
            ),
            rows,
        )
    engine.dispose()
    with backfill_updates() as sent:
        migrate.upgrade(url)
    assert sent == [1000, 1000, 500]
    factory = SqlUnitOfWorkFactory(url)
    try:
        report = archiver(factory)[0].verify()
        assert report.problems == []
        assert (report.streams, report.database_events) == (3, 2500)
        with factory(read_only=True) as uow:
            first = uow.audit_archive.events(str(orgs[0]), after_seq=0, limit=1000)
        assert [e.chain_seq for e in first] == list(range(1, 835))
        assert [e.metadata["i"] for e in first] == list(range(0, 2500, 3))
    finally:
        factory.dispose()
