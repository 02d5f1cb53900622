"""Helpers for testing applications that use usermgmt — no server, no network.

Use the pytest fixtures by adding one line to your ``conftest.py``::

    pytest_plugins = ["usermgmt.testing.plugin"]

which gives ``um`` (a :meth:`UserManagement.in_memory` instance on a fake clock),
``um_clock`` (the :class:`FakeClock`), ``um_outbox`` (the email outbox) and
``make_user`` (a factory of signed-up, verified users). Or call the functions here
directly. Third-party backends prove they conform with the mixins in
:mod:`usermgmt.testing.contracts`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import replace
from typing import Any

from usermgmt.app import UserManagement
from usermgmt.backends.memory import MemoryEmailSender
from usermgmt.clock import FakeClock
from usermgmt.config import Settings
from usermgmt.models import TokenPair, User
from usermgmt.ports import EmailMessage

__all__ = [
    "FakeClock",
    "MemoryEmailSender",
    "create_user",
    "extract_token",
    "login",
    "make_um",
    "random_password",
]

_TOKEN_RE = re.compile(r"[?&]token=([A-Za-z0-9_-]+)")


def make_um(*, clock: FakeClock | None = None, **settings: Any) -> UserManagement:
    """A fresh in-memory UserManagement; keyword arguments override settings."""
    return UserManagement.in_memory(Settings.for_tests(**settings), clock=clock or FakeClock())


def random_password() -> str:
    """A password that passes the default policy (long, random, not on any list)."""
    return "pw-" + secrets.token_urlsafe(18)


def extract_token(message: EmailMessage) -> str:
    """The ``token`` of the first link in an email (verification, reset, invitation)."""
    match = _TOKEN_RE.search(message.text)
    if match is None:
        raise AssertionError(f"no token link in email {message.template!r}")
    return match.group(1)


def create_user(
    um: UserManagement,
    email: str | None = None,
    password: str | None = None,
    *,
    name: str | None = None,
    verified: bool = True,
    superuser: bool = False,
) -> tuple[User, str]:
    """Register a user (verified unless told otherwise); returns ``(user, password)``."""
    email = email or f"user-{secrets.token_hex(4)}@example.com"
    password = password or random_password()
    result = um.users.register(email=email, password=password, name=name)
    if result.user is None:
        raise AssertionError(f"{email} is already registered")
    user = result.user
    if verified or superuser:
        user = um.kernel.write(lambda uow: _flag(uow, user.id, verified, superuser, um))
    return user, password


def _flag(uow: Any, user_id: Any, verified: bool, superuser: bool, um: UserManagement) -> User:
    user: User = uow.users.get(user_id, for_update=True)
    now = um.clock.now()
    user = replace(
        user,
        is_verified=verified or user.is_verified,
        email_verified_at=now if verified else user.email_verified_at,
        is_superuser=superuser,
        updated_at=now,
    )
    uow.users.update(user)
    return user


def login(um: UserManagement, email: str, password: str) -> TokenPair:
    """Log in and return the token pair."""
    return um.auth.login(email=email, password=password)
