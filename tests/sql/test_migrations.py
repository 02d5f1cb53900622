"""The packaged Alembic migrations: they build exactly the models' schema on SQLite and
PostgreSQL, every revision downgrades, and the indexes of the seed guide exist."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from tests.sql.conftest import PgServer
from usermgmt.backends.sqlalchemy import build_engine, migrate
from usermgmt.backends.sqlalchemy.models import Base

pytestmark = pytest.mark.sql

#: The seed deployment guide's check (section "Create Indexes").
SEED_INDEX_QUERY = (
    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN "
    "('users', 'organizations', 'roles', 'permissions', 'organization_memberships')"
)

EXPECTED_SEED_INDEXES = {
    "pk_users",
    "uq_users_lower_email",
    "pk_organizations",
    "uq_organizations_slug",
    "pk_roles",
    "uq_roles_organization_id_name",
    "pk_permissions",
    "uq_permissions_name",
    "pk_organization_memberships",
    "uq_organization_memberships_organization_id_user_id",
    "ix_organization_memberships_user_id",
    "ix_organization_memberships_organization_id_id",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database (never migrated)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.database("usermgmt_migrations")
    if not server.can_create_databases:
        migrate.downgrade(url, "base")  # a shared external database: start from nothing
    return url


@pytest.fixture
def engine(empty_url: str) -> Iterator[Engine]:
    engine = build_engine(empty_url)
    yield engine
    engine.dispose()


def schema_diff(engine: Engine) -> list[Any]:
    """What autogenerate would change to make the database match the models."""
    with engine.connect() as connection, warnings.catch_warnings():
        # SQLite cannot reflect expression indexes (lower(email)); it is checked apart.
        warnings.filterwarnings("ignore", message=".*expression-based index.*")
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def user_tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_to_head_builds_exactly_the_models(empty_url: str, engine: Engine) -> None:
    assert migrate.current(empty_url) is None
    migrate.upgrade(empty_url)
    assert migrate.current(empty_url) == migrate.heads()[0]
    assert schema_diff(engine) == []
    assert user_tables(engine) == set(Base.metadata.tables)


def test_every_revision_downgrades_and_upgrades_again(empty_url: str, engine: Engine) -> None:
    revisions = migrate.revisions()
    assert revisions, "no packaged revision"
    assert migrate.heads() == [revisions[-1]]
    migrate.upgrade(empty_url)
    for expected in reversed([None, *revisions[:-1]]):
        migrate.downgrade(empty_url, "-1")
        assert migrate.current(empty_url) == expected
    assert user_tables(engine) == set()
    for revision in revisions:
        migrate.upgrade(empty_url, revision)
        assert migrate.current(empty_url) == revision
    assert schema_diff(engine) == []


def test_upgrade_is_idempotent(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    migrate.upgrade(empty_url)
    assert migrate.current(empty_url) == migrate.heads()[0]


def test_sqlite_has_the_case_insensitive_email_index(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    migrate.upgrade(url)
    engine = build_engine(url)
    try:
        with engine.connect() as connection:
            sql = connection.execute(
                text("SELECT sql FROM sqlite_master WHERE name = 'uq_users_lower_email'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert sql == "CREATE UNIQUE INDEX uq_users_lower_email ON users (lower(email))"


class TestPostgresIndexes:
    @pytest.fixture
    def pg_engine(self, pg_server: PgServer) -> Iterator[Engine]:
        url = pg_server.database("usermgmt_indexes")
        migrate.upgrade(url)
        engine = build_engine(url)
        yield engine
        engine.dispose()

    def test_seed_guide_index_query_shows_the_indexes(self, pg_engine: Engine) -> None:
        with pg_engine.connect() as connection:
            found = {row[0]: row[1] for row in connection.execute(text(SEED_INDEX_QUERY))}
        assert set(found) >= EXPECTED_SEED_INDEXES, sorted(EXPECTED_SEED_INDEXES - set(found))
        email = found["uq_users_lower_email"]
        assert email.startswith("CREATE UNIQUE INDEX uq_users_lower_email ON public.users")
        assert "lower((email)::text)" in email

    def test_audit_indexes_serve_org_and_time(self, pg_engine: Engine) -> None:
        with pg_engine.connect() as connection:
            found = set(
                connection.execute(
                    text("SELECT indexname FROM pg_indexes WHERE tablename = 'audit_logs'")
                ).scalars()
            )
        assert {
            "ix_audit_logs_organization_id_id",
            "ix_audit_logs_organization_id_occurred_at",
            "ix_audit_logs_actor_user_id",
        } <= found

    @pytest.mark.parametrize(
        ("query", "index"),
        [
            ("SELECT * FROM users WHERE lower(email) = lower(:email)", "uq_users_lower_email"),
            ("SELECT * FROM organizations WHERE slug = 'acme'", "uq_organizations_slug"),
            (
                (
                    "SELECT * FROM organization_memberships WHERE organization_id = :id "
                    "ORDER BY id LIMIT 20"
                ),
                "ix_organization_memberships_organization_id_id",
            ),
            (
                "SELECT * FROM organization_memberships WHERE user_id = :id",
                "ix_organization_memberships_user_id",
            ),
            (
                "SELECT * FROM audit_logs WHERE organization_id = :id ORDER BY id DESC LIMIT 50",
                "ix_audit_logs_organization_id_id",
            ),
            (
                "SELECT * FROM audit_logs WHERE organization_id = :id AND occurred_at >= now()",
                # on an empty table any index led by organization_id may win
                "ix_audit_logs_organization_id_",
            ),
            (
                (
                    "SELECT * FROM audit_logs WHERE organization_id = :id AND chain_seq > 0 "
                    "ORDER BY chain_seq LIMIT 1000"
                ),
                "uq_audit_logs_organization_id_chain_seq",
            ),
            (
                "SELECT count(*) FROM audit_logs WHERE occurred_at < now()",
                "ix_audit_logs_occurred_at",
            ),
        ],
        ids=[
            "user-by-email",
            "org-by-slug",
            "members-by-org",
            "memberships-by-user",
            "audit-by-org",
            "audit-by-org-and-time",
            "audit-chain-order",
            "audit-archive-backlog",
        ],
    )
    def test_lookups_use_an_index(self, pg_engine: Engine, query: str, index: str) -> None:
        with pg_engine.connect() as connection:
            connection.execute(text("SET LOCAL enable_seqscan = off"))
            params = {"id": uuid.UUID(int=1), "email": "a@example.com"}
            plan = "\n".join(connection.execute(text(f"EXPLAIN {query}"), params).scalars())
        assert "Seq Scan" not in plan, plan
        assert any(name in plan for name in index.split("|")), plan
