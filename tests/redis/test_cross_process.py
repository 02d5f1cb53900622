"""Two real application processes sharing PostgreSQL and Redis behave as one:
a logout in one rejects the token in the other at once, a role change in one is enforced
by the other at once, and the global rate limit counts the requests of both together."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.redis.conftest import flush
from tests.sql.conftest import PgServer, pg_server
from usermgmt.backends.redis import RedisConnection
from usermgmt.backends.sqlalchemy import migrate

pytestmark = pytest.mark.redis

__all__ = ["pg_server"]  # the PostgreSQL fixture of tests/sql, used here

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("_worker.py")


class Worker:
    """One application process; :meth:`call` sends a command and waits for the answer."""

    def __init__(self, name: str, settings: dict[str, Any]) -> None:
        self.name = name
        env = {
            **os.environ,
            "USERMGMT_WORKER_SETTINGS": json.dumps(settings),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.process = subprocess.Popen(  # noqa: S603 - our own worker script
            [sys.executable, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        ready = self._read()
        self.pid = ready["pid"]

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            assert self.process.stderr is not None
            raise RuntimeError(f"worker {self.name} died: {self.process.stderr.read()[-2000:]}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def ok(self, op: str, **args: Any) -> Any:
        reply = self.call(op, **args)
        assert reply["ok"], f"{self.name} {op}: {reply}"
        return reply["result"]

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                self.call("quit")
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="module")
def shared_database(pg_server: PgServer) -> str:
    url = pg_server.database("usermgmt_redis_cross_process")
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="module", params=["standalone", "cluster"])
def redis_kind_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(
        "redis_server" if request.param == "standalone" else "redis_cluster"
    )
    flush(url)
    return url


@pytest.fixture(scope="module")
def pair(shared_database: str, redis_kind_url: str) -> Iterator[tuple[Worker, Worker]]:
    """Processes A and B on the same database and Redis (one pair per Redis kind)."""
    settings = {
        "database_url": shared_database,
        "redis_url": redis_kind_url,
        "jwt_secret": secrets.token_urlsafe(48),
        "jwt_refresh_secret": secrets.token_urlsafe(48),
        "redis_socket_timeout_seconds": 2.0,
        "rate_limit_max_requests": 10,
        "rate_limit_window_ms": 60_000,
        "login_max_failures": 3,
    }
    first = Worker("A", settings)
    try:
        second = Worker("B", settings)
    except BaseException:
        first.close()
        raise
    assert first.pid != second.pid
    yield first, second
    first.close()
    second.close()


def test_logout_in_one_process_rejects_the_token_in_the_other(
    pair: tuple[Worker, Worker],
) -> None:
    a, b = pair
    ids = a.ok("setup")
    user = ids["member"]
    first = a.ok("login", email=ids["member_email"], password=ids["member_password"])
    second = b.ok("login", email=ids["member_email"], password=ids["member_password"])
    third = b.ok("login", email=ids["member_email"], password=ids["member_password"])
    for token in (first["access"], second["access"], third["access"]):
        assert b.ok("authenticate", token=token) == user
        assert a.ok("authenticate", token=token) == user

    a.ok("logout", user=user, session=first["session"])
    assert b.call("authenticate", token=first["access"])["error"] == "TokenRevoked"
    assert b.ok("authenticate", token=second["access"]) == user

    # a password change in B ends every other session, in A too
    new_password = "pw-" + secrets.token_urlsafe(18)
    b.ok(
        "change_password",
        user=user,
        current=ids["member_password"],
        new=new_password,
        keep=third["session"],
    )
    assert a.call("authenticate", token=second["access"])["error"] == "TokenRevoked"
    assert a.ok("authenticate", token=third["access"]) == user


def test_role_change_in_one_process_is_enforced_by_the_other(
    pair: tuple[Worker, Worker],
) -> None:
    a, b = pair
    ids = a.ok("setup")
    check = {"user": ids["member"], "org": ids["org"], "permission": "member:invite"}
    assert b.ok("has_permission", **check) is False  # B now has the answer cached in Redis
    assert b.ok("has_permission", **check) is False

    a.ok("update_roles", actor=ids["owner"], org=ids["org"], user=ids["member"], roles=["admin"])
    assert b.ok("has_permission", **check) is True
    assert a.ok("has_permission", **check) is True

    b.ok("update_roles", actor=ids["owner"], org=ids["org"], user=ids["member"], roles=["member"])
    assert a.ok("has_permission", **check) is False
    assert b.ok("has_permission", **check) is False


def test_the_lockout_counts_failures_in_both_processes_together(
    pair: tuple[Worker, Worker],
) -> None:
    a, b = pair
    ids = a.ok("setup")
    email, password = ids["member_email"], ids["member_password"]
    assert b.ok("login", email=email, password=password)["access"]
    for worker in (a, b, a):
        assert worker.call("login", email=email, password="wrong-" + password)["error"] == (
            "InvalidCredentials"
        )
    # three failures across two processes lock the account in both, even for the password
    assert b.call("login", email=email, password=password)["error"] == "InvalidCredentials"
    assert a.call("login", email=email, password=password)["error"] == "InvalidCredentials"


def test_the_global_rate_limit_counts_both_processes_together(
    pair: tuple[Worker, Worker],
) -> None:
    a, b = pair
    answers = [(a if i % 2 == 0 else b).ok("rate", client="203.0.113.7") for i in range(14)]
    assert [r["allowed"] for r in answers] == [True] * 10 + [False] * 4
    assert [r["remaining"] for r in answers[:10]] == list(range(9, -1, -1))
    # another client has its own budget, in either process
    assert b.ok("rate", client="203.0.113.8")["remaining"] == 9


def test_the_shared_state_is_in_redis(pair: tuple[Worker, Worker], redis_kind_url: str) -> None:
    """The answers come from Redis, not from either process."""
    from usermgmt.backends.redis import connect
    from usermgmt.config import Settings

    a, b = pair
    ids = a.ok("setup")
    b.ok("login", email=ids["member_email"], password=ids["member_password"])
    a.ok("has_permission", user=ids["member"], org=ids["org"], permission="member:read")
    connection: RedisConnection = connect(Settings.for_tests(redis_url=redis_kind_url))
    try:
        if connection.cluster:
            from redis.cluster import RedisCluster

            keys = connection.run(lambda c: c.keys("um:*", target_nodes=RedisCluster.PRIMARIES))
        else:
            keys = connection.run(lambda c: c.keys("um:*"))
    finally:
        connection.close()
    org_hex = ids["org"].replace("-", "")
    assert f"um:{{o:{org_hex}}}:v" in keys
    assert any(k.startswith("um:{o:") and ":u:" in k for k in keys)
