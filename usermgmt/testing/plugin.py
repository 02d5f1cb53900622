"""pytest fixtures for applications: ``pytest_plugins = ["usermgmt.testing.plugin"]``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from usermgmt.app import UserManagement
from usermgmt.backends.memory import MemoryEmailSender
from usermgmt.clock import FakeClock
from usermgmt.models import User
from usermgmt.testing import create_user, make_um


@pytest.fixture
def um_clock() -> FakeClock:
    """A fake clock that moves only when told (``um_clock.advance(seconds=61)``)."""
    return FakeClock()


@pytest.fixture
def um(um_clock: FakeClock) -> Iterator[UserManagement]:
    """A fresh in-memory UserManagement per test, on ``um_clock``."""
    instance = make_um(clock=um_clock)
    yield instance
    instance.close()


@pytest.fixture
def um_outbox(um: UserManagement) -> MemoryEmailSender:
    """The outbox of ``um``: every email the test caused, already rendered."""
    outbox: MemoryEmailSender = um.outbox
    return outbox


@pytest.fixture
def make_user(um: UserManagement) -> Callable[..., tuple[User, str]]:
    """``make_user(email=None, password=None, verified=True, superuser=False) -> (user, password)``."""

    def factory(*args: Any, **kwargs: Any) -> tuple[User, str]:
        return create_user(um, *args, **kwargs)

    return factory
