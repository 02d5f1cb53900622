"""OAuth races on the real PostgreSQL server with real threads (SECURITY.md §4B style):
one exchange code redeemed by twenty threads, two unlinks of a passwordless user's two
providers, and the same new identity finishing two sign-ins at once."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy.engine import make_url

from tests.oauth.provider import TestProvider, running_provider
from tests.sql.conftest import PgServer, truncate_all
from usermgmt.app import UserManagement
from usermgmt.backends.sqlalchemy import migrate
from usermgmt.config import Settings
from usermgmt.errors import LastLoginMethod, OneTimeTokenError
from usermgmt.models import TokenPair
from usermgmt.oauth import CallbackResult
from usermgmt.testing.contracts import race

pytestmark = pytest.mark.sql

THREADS = 20
ITERATIONS = 5


@pytest.fixture(scope="module")
def provider() -> Iterator[TestProvider]:
    with running_provider() as p:
        yield p


@pytest.fixture(scope="module")
def oauth_url(pg_server: PgServer) -> str:
    url = pg_server.database("usermgmt_oauth")
    migrate.upgrade(url)
    return url


@pytest.fixture
def um(oauth_url: str, provider: TestProvider) -> Iterator[UserManagement]:
    truncate_all(oauth_url)
    pooled = make_url(oauth_url).update_query_dict(
        {"connection_limit": str(THREADS + 10), "pool_timeout": "30"}
    )
    um = UserManagement(
        Settings.for_tests(
            database_url=pooled.render_as_string(hide_password=False),
            oidc_providers=[provider.settings_entry("test"), provider.settings_entry("other")],
        )
    )
    um.seed()
    yield um
    um.close()


def _sign_in(um: UserManagement, provider: TestProvider, name: str = "test") -> CallbackResult:
    start = um.oauth.begin(name)
    back = {k: v[-1] for k, v in parse_qs(urlsplit(provider.login(start.url)).query).items()}
    return um.oauth.complete(
        name, state=back["state"], code=back["code"], cookie=start.cookie.value
    )


def _code(result: CallbackResult) -> str:
    return parse_qs(urlsplit(result.redirect_to).query)["code"][0]


def test_oauth_exchange_code_twenty_threads(um: UserManagement, provider: TestProvider) -> None:
    for i in range(ITERATIONS):
        provider.identity = {
            "sub": f"pg-{i}",
            "email": f"pg{i}@example.com",
            "email_verified": True,
        }
        result = _sign_in(um, provider)
        code, cookie = _code(result), result.cookie.value
        results = race(THREADS, lambda _, c=code, b=cookie: um.oauth.exchange(c, cookie=b))
        pairs = [r for r in results if isinstance(r, TokenPair)]
        assert len(pairs) == 1, results
        assert all(isinstance(r, OneTimeTokenError) for r in results if r not in pairs)


def test_oauth_two_unlinks_at_once_keep_one_way_in(
    um: UserManagement, provider: TestProvider
) -> None:
    for i in range(ITERATIONS):
        provider.identity = {
            "sub": f"un-{i}",
            "email": f"un{i}@example.com",
            "email_verified": True,
        }
        user_id = _sign_in(um, provider).user_id
        signed_in = _sign_in(um, provider)
        pair = um.oauth.exchange(_code(signed_in), cookie=signed_in.cookie.value)
        start = um.oauth.begin_link("other", user_id)
        back = {k: v[-1] for k, v in parse_qs(urlsplit(provider.login(start.url)).query).items()}
        um.oauth.complete(
            "other", state=back["state"], code=back["code"], cookie=start.cookie.value
        )
        assert len(um.oauth.accounts(user_id)) == 2
        results = race(2, lambda j, u=user_id: um.oauth.unlink(u, ["test", "other"][j]))
        assert sum(r is None for r in results) == 1, results
        assert sum(isinstance(r, LastLoginMethod) for r in results) == 1, results
        assert len(um.oauth.accounts(user_id)) == 1
        assert pair.access_token


def test_oauth_same_new_identity_twice_at_once(um: UserManagement, provider: TestProvider) -> None:
    """Two callbacks of one new identity: one account, both signed in to it."""
    for i in range(ITERATIONS):
        provider.identity = {
            "sub": f"dup-{i}",
            "email": f"dup{i}@example.com",
            "email_verified": True,
        }
        starts = [um.oauth.begin("test") for _ in range(2)]
        backs = [
            {k: v[-1] for k, v in parse_qs(urlsplit(provider.login(s.url)).query).items()}
            for s in starts
        ]
        results = race(
            2,
            lambda j, b=backs, s=starts: um.oauth.complete(
                "test", state=b[j]["state"], code=b[j]["code"], cookie=s[j].cookie.value
            ),
        )
        assert all(isinstance(r, CallbackResult) for r in results), results
        assert len({r.user_id for r in results if isinstance(r, CallbackResult)}) == 1
        assert sum(r.created for r in results if isinstance(r, CallbackResult)) == 1
