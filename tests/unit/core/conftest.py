"""Fixtures of the core tests: every test starts from an environment without usermgmt
variables, so a developer's shell (``REDIS_URL``, ``NODE_ENV``, ...) cannot change them."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tests.unit.core.support import make_secret
from usermgmt.config import Settings

#: Every environment variable Settings reads (field names and the NODE_ENV alias).
SETTINGS_VARIABLES = frozenset(name.upper() for name in Settings.model_fields) | {"NODE_ENV"}


@pytest.fixture(autouse=True)
def core_clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every usermgmt variable from the environment (any case)."""
    for name in list(os.environ):
        if name.upper() in SETTINGS_VARIABLES:
            monkeypatch.delenv(name)


@pytest.fixture
def core_secrets(monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[str, str]]:
    """``core_secrets(length=40)`` sets valid, different JWT_SECRET / JWT_REFRESH_SECRET."""

    def install(length: int = 40) -> tuple[str, str]:
        access, refresh = make_secret(length, "access"), make_secret(length, "refresh")
        monkeypatch.setenv("JWT_SECRET", access)
        monkeypatch.setenv("JWT_REFRESH_SECRET", refresh)
        return access, refresh

    return install
