"""OAuth flow state in Redis: a sign-in started on one instance finishes on another
(standalone and Cluster), and with Redis down the OAuth routes answer 503 while password
sign-in keeps working (SECURITY.md §4A F3); unverifiable state is never accepted."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.oauth.provider import TestProvider, running_provider
from tests.redis.conftest import RedisProcess
from usermgmt.app import UserManagement
from usermgmt.config import Settings
from usermgmt.errors import BackendUnavailable, OAuthStateInvalid
from usermgmt.testing import create_user


@pytest.fixture(scope="module")
def provider() -> Iterator[TestProvider]:
    with running_provider() as p:
        p.identity = {"sub": "sub-redis", "email": "redis@example.com", "email_verified": True}
        yield p


@pytest.fixture
def make_um() -> Iterator[Callable[..., UserManagement]]:
    made: list[UserManagement] = []

    def make(**settings: Any) -> UserManagement:
        um = UserManagement(Settings.for_tests(**settings))
        um.seed()
        made.append(um)
        return um

    yield make
    for um in made:
        um.close()


def _query(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}


def test_oauth_callback_on_another_instance(
    redis_url: str,
    provider: TestProvider,
    make_um: Callable[..., UserManagement],
    tmp_path: Path,
) -> None:
    from usermgmt.backends.sqlalchemy import migrate

    database = f"sqlite:///{tmp_path / 'shared.db'}"
    migrate.upgrade(database)
    common = {
        "redis_url": redis_url,
        "database_url": database,
        "app_url": "http://app.example",
        "oidc_providers": [provider.settings_entry()],
        "jwt_secret": secrets.token_urlsafe(48),  # one deployment: the same keys
        "jwt_refresh_secret": secrets.token_urlsafe(48),
    }
    first, second = make_um(**common), make_um(**common)
    start = first.oauth.begin("test")
    back = _query(provider.login(start.url))
    result = second.oauth.complete(
        "test", state=back["state"], code=back["code"], cookie=start.cookie.value
    )
    assert result.created
    code = _query(result.redirect_to)["code"]
    # and the code works on any instance too (bound to the browser, through Redis)
    pair = first.oauth.exchange(code, cookie=start.cookie.value)
    assert second.auth.authenticate(pair.access_token).email == "redis@example.com"
    with pytest.raises(OAuthStateInvalid):  # single use across instances
        first.oauth.complete(
            "test", state=back["state"], code=back["code"], cookie=start.cookie.value
        )


def test_oauth_redis_down_is_503_and_password_login_works(
    redis_process: RedisProcess, provider: TestProvider, make_um: Callable[..., UserManagement]
) -> None:
    um = make_um(
        redis_url=redis_process.url,
        redis_socket_timeout_seconds=0.2,
        oidc_providers=[provider.settings_entry()],
    )
    user, password = create_user(um, "pw-redis@example.com", verified=True)
    start = um.oauth.begin("test")
    back = _query(provider.login(start.url))
    redis_process.stop()
    with pytest.raises(BackendUnavailable):  # the state cannot be checked: refused
        um.oauth.complete("test", state=back["state"], code=back["code"], cookie=start.cookie.value)
    with pytest.raises(BackendUnavailable):
        um.oauth.begin("test")
    assert um.auth.login(user.email, password).access_token  # unaffected
