"""FastAPI only: the per-request checks that may wait on SQL or Redis run in a small pool
of their own (``HTTP_CHECK_THREADS``), not in Starlette's shared threadpool, with the
caller's context; on a real SQLite file database (not in process)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from usermgmt import Settings, UserManagement
from usermgmt.errors import ConfigurationError

PASSWORD = "correct horse battery staple 42"
_probe: contextvars.ContextVar[str] = contextvars.ContextVar("probe", default="unset")


def test_run_check_uses_a_bounded_pool_of_its_own_with_the_callers_context() -> None:
    from usermgmt_fastapi.threads import run_check

    running = 0
    most = 0
    lock = threading.Lock()

    def work(n: int) -> tuple[int, str, str]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return n, threading.current_thread().name, _probe.get()

    async def main() -> list[tuple[int, str, str]]:
        _probe.set("from the request")
        return list(await asyncio.gather(*(run_check(2, work, n) for n in range(8))))

    results = asyncio.run(main())
    assert [n for n, _, _ in results] == list(range(8))
    assert all(name.startswith("usermgmt-check") for _, name, _ in results)
    assert {probe for _, _, probe in results} == {"from the request"}
    assert most == 2  # eight calls, never more than two at once


@pytest.mark.parametrize("value", ["0", "65", "many"])
def test_http_check_threads_is_validated(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_CHECK_THREADS", value)
    with pytest.raises((ConfigurationError, ValueError)):
        Settings(_env_file=None)


def test_sql_backed_checks_run_in_the_check_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty concurrent authenticated requests on a SQLite file: every one answered, each
    authentication ran in one of HTTP_CHECK_THREADS=1 threads named usermgmt-check."""
    import httpx
    from fastapi import FastAPI

    import usermgmt_fastapi
    import usermgmt_fastapi.dependencies as dependencies
    from usermgmt.backends.sqlalchemy import migrate

    url = f"sqlite:///{tmp_path / 'checks.db'}"
    migrate.upgrade(url)
    um = UserManagement(Settings.for_tests(database_url=url, http_check_threads=1))
    seen: list[str] = []
    real = dependencies._authenticate

    def recording(um: Any, token: str) -> Any:
        seen.append(threading.current_thread().name)
        return real(um, token)

    monkeypatch.setattr(dependencies, "_authenticate", recording)
    try:
        app = FastAPI()
        usermgmt_fastapi.mount(app, um)
        um.users.register("check@example.com", PASSWORD)
        token = um.auth.login("check@example.com", PASSWORD).access_token

        async def main() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                headers = {"Authorization": f"Bearer {token}"}
                return list(
                    await asyncio.gather(
                        *(client.get("/users/me", headers=headers) for _ in range(20))
                    )
                )

        responses = asyncio.run(main())
    finally:
        um.close()
    assert [r.status_code for r in responses] == [200] * 20
    assert {r.json()["email"] for r in responses} == {"check@example.com"}
    assert len(seen) == 20
    assert {name.rsplit("_", 1)[0] for name in seen} == {"usermgmt-check"}
