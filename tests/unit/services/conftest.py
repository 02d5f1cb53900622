"""Fixtures of the service tests.

The fixtures of :mod:`usermgmt.testing.plugin` (``um``, ``um_clock``, ``um_outbox``,
``make_user``) are imported here instead of being named in ``pytest_plugins``: pytest
refuses ``pytest_plugins`` in a conftest below the rootdir as soon as the whole suite is
collected (``pytest`` from the repository root, as CI runs it).

Fixtures added by the authentication tests are prefixed ``auth_``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from usermgmt.app import UserManagement
from usermgmt.models import AuditEvent
from usermgmt.ports import AuditQuery
from usermgmt.testing.plugin import make_user, um, um_clock, um_outbox

__all__ = ["make_user", "um", "um_clock", "um_outbox"]


class AuthHasherSpy:
    """Wraps a PasswordHasher and counts its calls (thread-safe)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self._lock:
            self.calls[name] += 1

    @property
    def verifications(self) -> int:
        """Password verifications of any kind: real ones and dummy ones."""
        with self._lock:
            return self.calls["verify"] + self.calls["dummy_verify"]

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()

    def hash(self, password: str) -> str:
        self._count("hash")
        return str(self.inner.hash(password))

    def verify(self, password: str, hashed: str) -> bool:
        self._count("verify")
        return bool(self.inner.verify(password, hashed))

    def dummy_verify(self, password: str) -> None:
        self._count("dummy_verify")
        self.inner.dummy_verify(password)

    def needs_rehash(self, hashed: str) -> bool:
        return bool(self.inner.needs_rehash(hashed))


@pytest.fixture
def auth_spy_hasher() -> Callable[[UserManagement], AuthHasherSpy]:
    """``auth_spy_hasher(um)`` puts a counting spy around ``um``'s hasher and returns it."""

    def install(instance: UserManagement) -> AuthHasherSpy:
        spy = AuthHasherSpy(instance.kernel.hasher)
        instance.kernel.hasher = spy
        return spy

    return install


@pytest.fixture
def auth_concurrently() -> Callable[..., list[tuple[bool, Any]]]:
    """``auth_concurrently(n, fn)`` runs ``fn(i)`` on n threads released together by a
    Barrier; returns ``[(True, result) | (False, exception)]`` in thread order."""

    def run(n: int, fn: Callable[[int], Any]) -> list[tuple[bool, Any]]:
        barrier = threading.Barrier(n)
        results: list[tuple[bool, Any]] = [(False, None)] * n

        def worker(i: int) -> None:
            try:
                barrier.wait(timeout=10)
                results[i] = (True, fn(i))
            except BaseException as exc:  # reported to the test, never lost
                results[i] = (False, exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not any(t.is_alive() for t in threads), "a worker thread hung"
        return results

    return run


@pytest.fixture
def auth_audit() -> Callable[..., list[AuditEvent]]:
    """``auth_audit(um, action=None)``: the audit events of ``um``, oldest first."""

    def events(instance: UserManagement, action: str | None = None) -> list[AuditEvent]:
        found = instance.kernel.read(
            lambda uow: uow.audit.list(AuditQuery(action=action), limit=100_000, before=None)
        )
        return list(reversed(found))

    return events
