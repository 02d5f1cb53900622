"""Authenticating a bearer token on SQL without a revocation store (several processes, no
Redis): the session and the user are read in one unit of work, and every change that
must stop a caller is seen at the very next request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from tests.sql.conftest import fresh_sqlite_url, truncate_all
from usermgmt.app import UserManagement
from usermgmt.backends.sqlalchemy import SqlUnitOfWorkFactory
from usermgmt.backends.sqlalchemy.repositories.users import USERS
from usermgmt.clock import FakeClock
from usermgmt.config import Settings
from usermgmt.errors import InvalidToken, TokenRevoked
from usermgmt.testing import create_user

pytestmark = pytest.mark.sql


@pytest.fixture(params=["sqlite", "postgresql"])
def um(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[UserManagement]:
    if request.param == "sqlite":
        url = fresh_sqlite_url(request.getfixturevalue("sqlite_template"), tmp_path)
    else:
        url = request.getfixturevalue("pg_contracts_url")
        truncate_all(url)
    built = UserManagement(Settings.for_tests(database_url=url), clock=FakeClock())
    built.seed()
    assert built.backends.revocations is None  # every check reads the database
    yield built
    built.close()
    factory = built.backends.uow
    assert isinstance(factory, SqlUnitOfWorkFactory)
    factory.dispose()


def test_logout_stops_the_token_at_once(um: UserManagement) -> None:
    user, password = create_user(um)
    pair = um.auth.login(user.email, password)
    assert um.auth.authenticate(pair.access_token).id == user.id  # remembered signature

    um.auth.logout(user.id, pair.session_id)

    with pytest.raises(TokenRevoked):
        um.auth.authenticate(pair.access_token)


def test_deactivation_and_deletion_stop_the_token_at_once(um: UserManagement) -> None:
    user, password = create_user(um)
    other, other_password = create_user(um)
    pair = um.auth.login(user.email, password)
    other_pair = um.auth.login(other.email, other_password)
    assert um.auth.authenticate(pair.access_token).id == user.id
    assert um.auth.authenticate(other_pair.access_token).id == other.id

    um.users.deactivate(user.id)

    with pytest.raises(InvalidToken):
        um.auth.authenticate(pair.access_token)
    assert um.auth.authenticate(other_pair.access_token).id == other.id  # untouched


def test_an_inactive_user_with_a_live_session_is_refused(um: UserManagement) -> None:
    # The user row alone decides, even if its sessions were somehow left unrevoked
    # (written by hand, or by another tool): InvalidToken, not TokenRevoked.
    user, password = create_user(um)
    pair = um.auth.login(user.email, password)
    assert um.auth.authenticate(pair.access_token).id == user.id
    factory = um.backends.uow
    assert isinstance(factory, SqlUnitOfWorkFactory)
    with factory.engine.begin() as connection:
        connection.execute(update(USERS).where(USERS.c.id == user.id).values(is_active=False))

    with pytest.raises(InvalidToken) as refused:
        um.auth.authenticate(pair.access_token)
    assert not isinstance(refused.value, TokenRevoked)
