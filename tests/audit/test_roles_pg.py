"""SEC-LG-05 on a real PostgreSQL: with the documented GRANTs the application role can
append audit events but not update or delete them; only the archiver role deletes, and
archival works with it."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from tests.audit.conftest import T0, append, archiver, hours
from tests.sql.conftest import PgServer
from usermgmt.backends.sqlalchemy import SqlUnitOfWorkFactory, migrate
from usermgmt.backends.sqlalchemy.audit_roles import grant_statements
from usermgmt.errors import Conflict
from usermgmt.ids import new_id
from usermgmt.testing.contracts import make_audit_event

pytestmark = pytest.mark.sql


@pytest.fixture
def urls(pg_server: PgServer) -> tuple[str, str]:
    """(app URL, archiver URL) of a migrated database with the two roles granted."""
    if not pg_server.can_create_databases:
        pytest.fail("this test needs a private PostgreSQL server (it creates roles)")
    owner_url = pg_server.database("usermgmt_audit_roles")
    migrate.upgrade(owner_url)
    plain = owner_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True) as connection:
        for role in ("um_app", "um_archiver"):
            connection.execute(f"DROP OWNED BY {role}" if _exists(connection, role) else "SELECT 1")
            connection.execute(f"DROP ROLE IF EXISTS {role}")
            connection.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'")
        for statement in grant_statements("um_app", "um_archiver"):
            connection.execute(statement)
    url = make_url(owner_url)
    return (
        url.set(username="um_app", password="pw-um_app").render_as_string(hide_password=False),
        url.set(username="um_archiver", password="pw-um_archiver").render_as_string(
            hide_password=False
        ),
    )


def _exists(connection: psycopg.Connection, role: str) -> bool:
    row = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    return row is not None


def test_app_role_appends_but_cannot_rewrite_history(urls: tuple[str, str]) -> None:
    app_url, archiver_url = urls
    app = SqlUnitOfWorkFactory(app_url)
    arch_db = SqlUnitOfWorkFactory(archiver_url)
    try:
        org = new_id()
        events = append(app, org, hours(T0, 4))
        assert [e.chain_seq for e in events] == [1, 2, 3, 4]
        plain = app_url.replace("postgresql+psycopg://", "postgresql://", 1)
        for statement in (
            "UPDATE audit_logs SET action = 'forged'",
            "DELETE FROM audit_logs",
            "TRUNCATE audit_logs",
            "DELETE FROM audit_archive_batches",
        ):
            with (
                psycopg.connect(plain) as connection,
                pytest.raises(psycopg.errors.InsufficientPrivilege),
            ):
                connection.execute(statement)
        # the archiver cannot run on the application's role: nothing is deleted
        app_archiver, clock = archiver(app)
        with pytest.raises(ProgrammingError, match="permission denied"):
            app_archiver.archive()
        with app(read_only=True) as uow:
            assert len(uow.audit_archive.events(str(org), after_seq=0, limit=10)) == 4
        # the archiver role archives (and verifies) with the same storage
        storage = app_archiver.storage
        real = archiver(arch_db, storage)[0]
        done = real.archive()
        assert done.problems == []
        assert done.events == 4
        assert real.verify().problems == []
        assert clock.now() - T0 > timedelta(days=90)
    finally:
        app.dispose()
        arch_db.dispose()


def test_role_names_are_checked() -> None:
    with pytest.raises(ValueError, match="identifier"):
        grant_statements("app; DROP TABLE users", "archiver")
    statements = grant_statements("app", "arch")
    assert "REVOKE UPDATE, DELETE, TRUNCATE ON public.audit_logs FROM app" in statements
    assert "GRANT SELECT, DELETE ON public.audit_logs TO arch" in statements


def test_app_role_duplicate_id_puts_the_head_back(urls: tuple[str, str]) -> None:
    """A duplicate id under the application role (no DELETE on heads): Conflict, the
    transaction stays usable and the chains verify."""
    app_url, _ = urls
    app = SqlUnitOfWorkFactory(app_url)
    try:
        org, fresh = new_id(), new_id()
        (first,) = append(app, org, [T0])
        for stream in (org, fresh):  # an existing stream, then a stream's first event
            duplicate = make_audit_event(id=first.id, organization_id=stream, occurred_at=T0)
            with app() as uow:
                with pytest.raises(Conflict):
                    uow.audit.add(duplicate)
                uow.commit()
        append(app, org, [T0 + timedelta(minutes=1)])
        report = archiver(app)[0].verify()
        assert report.problems == []
        assert report.database_events == 2
    finally:
        app.dispose()
