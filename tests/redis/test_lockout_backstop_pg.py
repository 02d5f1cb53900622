"""SECURITY.md F1: while Redis is down the login lockout is counted in PostgreSQL, which
every application instance shares, so failures on several instances add up and lock the
account on all of them (instead of each instance allowing the threshold). Only when the
database fails too is the lockout counted in the process. Against a real redis-server
that the tests stop, and a real PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select

from tests.redis.conftest import RedisProcess
from tests.sql.conftest import PgServer, pg_server, truncate_all
from usermgmt.app import UserManagement
from usermgmt.backends.memory import MemoryAttemptCounter
from usermgmt.backends.redis import (
    FailoverAttemptCounter,
    RedisAttemptCounter,
    connect,
    degradations,
    monitor,
)
from usermgmt.backends.sqlalchemy import SqlAttemptCounter, build_engine, migrate
from usermgmt.backends.sqlalchemy.attempts import LOCKOUT_COUNTERS, counter_key
from usermgmt.clock import FakeClock
from usermgmt.config import Settings
from usermgmt.errors import BackendUnavailable, InvalidCredentials
from usermgmt.ports import AttemptCounter
from usermgmt.services.auth import lockout_key
from usermgmt.testing import create_user
from usermgmt.testing.contracts import AttemptCounterContract

pytestmark = [pytest.mark.redis, pytest.mark.sql]

__all__ = ["pg_server"]  # the PostgreSQL fixture of tests/sql, used here

# REDIS_SOCKET_TIMEOUT_SECONDS in these tests: Redis is stopped (killed: connections are
# refused at once), never paused, so a generous timeout costs nothing and a live Redis
# slowed by a loaded machine is not mistaken for a failed one.
TIMEOUT = 2.0
LIMITS: dict[str, Any] = {"max_failures": 3, "lockout_seconds": 60, "max_lockout_seconds": 3600}
UNREACHABLE_PG = "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=2"


@pytest.fixture(scope="module")
def backstop_database(pg_server: PgServer) -> str:
    url = pg_server.database("usermgmt_lockout_backstop")
    migrate.upgrade(url)
    return url


@pytest.fixture
def database(backstop_database: str) -> str:
    truncate_all(backstop_database)
    return backstop_database


@pytest.fixture
def engine(database: str) -> Iterator[Engine]:
    engine = build_engine(database)
    yield engine
    engine.dispose()


@pytest.fixture
def make_um(database: str) -> Iterator[Callable[..., UserManagement]]:
    made: list[UserManagement] = []

    def make(redis_url: str, **settings: Any) -> UserManagement:
        values: dict[str, Any] = {
            "database_url": database,
            "redis_url": redis_url,
            "redis_socket_timeout_seconds": TIMEOUT,
            "login_max_failures": 3,
        }
        values.update(settings)
        um = UserManagement(Settings.for_tests(**values))
        made.append(um)
        return um

    yield make
    for um in made:
        um.close()


def _rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(select(LOCKOUT_COUNTERS))]


def _redis_state(url: str, key: str) -> dict[str, str]:
    """The lockout hash of ``key`` in Redis (field -> value, as text)."""
    connection = connect(Settings.for_tests(redis_url=url, redis_socket_timeout_seconds=5))
    try:
        full = connection.key("la", key)
        state: dict[Any, Any] = connection.run(lambda client: client.hgetall(full))
    finally:
        connection.close()

    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    return {text(field): text(value) for field, value in state.items()}


def _cooldown(um: UserManagement) -> None:
    """Let the circuit breaker probe Redis again."""
    attempts = um.backends.attempts
    assert isinstance(attempts, FailoverAttemptCounter)
    primary = attempts.primary
    assert isinstance(primary, RedisAttemptCounter)
    time.sleep(primary._redis.breaker.cooldown_seconds + 0.1)


class _NeverCounts:
    """An in-process fallback that fails the test when the failover counts in it (a
    success or reset clears every store: those are no-ops here)."""

    def _used(self, *_: Any) -> Any:
        raise AssertionError("counted in the process, not in the backstop")

    def _cleared(self, *_: Any) -> None:
        return None

    acquire = record_failure = release = _used
    record_success = reset = _cleared


class TestContractWhileRedisIsDown(AttemptCounterContract):
    """The shared contract, unchanged, through the failover counter with Redis stopped:
    every rule holds in the backstop (reservations, backoff, decay, release, reset), and
    nothing is counted in the process."""

    @pytest.fixture
    def attempt_counter(
        self, redis_process: RedisProcess, engine: Engine, clock: FakeClock
    ) -> Iterator[AttemptCounter]:
        connection = connect(
            Settings.for_tests(redis_url=redis_process.url, redis_socket_timeout_seconds=TIMEOUT)
        )
        redis_process.stop()
        try:
            yield FailoverAttemptCounter(
                RedisAttemptCounter(connection, clock, **LIMITS),
                _NeverCounts(),  # type: ignore[arg-type]
                backstop=SqlAttemptCounter(engine, clock, **LIMITS),
            )
            assert degradations["lockout_backend_down"] >= 1
            assert degradations["lockout_backstop_backend_down"] == 0
        finally:
            connection.close()


def test_registry_makes_the_sql_counter_the_backstop(
    redis_process: RedisProcess, make_um: Callable[..., UserManagement]
) -> None:
    um = make_um(redis_process.url)
    attempts = um.backends.attempts
    assert isinstance(attempts, FailoverAttemptCounter)
    assert isinstance(attempts.primary, RedisAttemptCounter)
    assert isinstance(attempts.backstop, SqlAttemptCounter)
    assert isinstance(attempts.fallback, MemoryAttemptCounter)
    assert attempts.backstop.max_failures == 3


def test_redis_stopped_failures_on_two_instances_add_up_and_lock_both(
    redis_process: RedisProcess, make_um: Callable[..., UserManagement], engine: Engine
) -> None:
    a, b = make_um(redis_process.url), make_um(redis_process.url)
    a.seed()
    user, password = create_user(a)
    key = lockout_key(user.email)

    # Redis up: the normal path, nothing in the database
    with pytest.raises(InvalidCredentials):
        b.auth.login(user.email, "wrong-password-123")
    assert _redis_state(redis_process.url, key)["count"] == "1"
    assert _rows(engine) == []

    redis_process.stop()
    # one failure on A, one on B, one on A: three in all, counted in PostgreSQL
    for instance in (a, b, a):
        with pytest.raises(InvalidCredentials):
            instance.auth.login(user.email, "wrong-password-123")
    (row,) = _rows(engine)
    assert row["key"] == counter_key(key)
    assert (row["count"], row["level"]) == (0, 1)  # locked once
    for instance in (b, a):  # the right password is refused on both instances
        with pytest.raises(InvalidCredentials):
            instance.auth.login(user.email, password)
    assert degradations["lockout_backend_down"] >= 5
    assert degradations["lockout_backstop_backend_down"] == 0
    assert monitor.is_degraded("lockout")


def test_without_the_backstop_each_instance_would_allow_the_threshold(
    redis_process: RedisProcess, make_um: Callable[..., UserManagement]
) -> None:
    """The failure F1's backstop removes: in-process counting gives N x threshold."""
    a, b = make_um(redis_process.url), make_um(redis_process.url)
    a.seed()
    user, password = create_user(a)
    for instance in (a, b):
        attempts = instance.backends.attempts
        assert isinstance(attempts, FailoverAttemptCounter)
        attempts.backstop = None  # as before migration 0003
    redis_process.stop()
    for instance in (a, b, a):
        with pytest.raises(InvalidCredentials):
            instance.auth.login(user.email, "wrong-password-123")
    assert b.auth.login(user.email, password).access_token  # B counted only one failure


def test_redis_back_takes_the_normal_path_and_a_success_clears_the_backstop(
    redis_process: RedisProcess, make_um: Callable[..., UserManagement], engine: Engine
) -> None:
    a, b = make_um(redis_process.url), make_um(redis_process.url)
    a.seed()
    user, password = create_user(a)
    key = lockout_key(user.email)
    redis_process.stop()
    for instance in (a, b):
        with pytest.raises(InvalidCredentials):
            instance.auth.login(user.email, "wrong-password-123")
    (during,) = _rows(engine)
    assert during["count"] == 2

    redis_process.start()  # the same port, empty
    _cooldown(a)
    with pytest.raises(InvalidCredentials):
        b.auth.login(user.email, "wrong-password-123")
    assert _redis_state(redis_process.url, key)["count"] == "1"  # counted in Redis
    assert _rows(engine) == [during]  # and not in the database
    assert not monitor.is_degraded("lockout")

    assert a.auth.login(user.email, password).access_token
    assert _redis_state(redis_process.url, key) == {}
    assert _rows(engine) == []  # A counted in the backstop today: its success clears it


def test_database_down_too_counts_in_the_process_never_unlimited(
    redis_process: RedisProcess,
) -> None:
    clock = FakeClock()
    settings = Settings.for_tests(redis_url=redis_process.url, redis_socket_timeout_seconds=TIMEOUT)
    connection = connect(settings)
    down = build_engine(UNREACHABLE_PG)
    try:
        counter = FailoverAttemptCounter(
            RedisAttemptCounter(connection, clock, **LIMITS),
            MemoryAttemptCounter(clock, **LIMITS),
            backstop=SqlAttemptCounter(down, clock, **LIMITS),
        )
        redis_process.stop()
        for _ in range(2):
            assert counter.acquire("k").allowed
            assert counter.record_failure("k") is None
        assert counter.acquire("k").allowed
        assert counter.record_failure("k") == pytest.approx(60)
        assert not counter.acquire("k").allowed
        assert degradations["lockout_backstop_backend_down"] >= 4
        assert monitor.is_degraded("lockout_backstop")
    finally:
        connection.close()
        down.dispose()


def test_closed_mode_counts_in_the_backstop_and_refuses_without_it(
    redis_process: RedisProcess, engine: Engine
) -> None:
    clock = FakeClock()
    settings = Settings.for_tests(redis_url=redis_process.url, redis_socket_timeout_seconds=TIMEOUT)
    connection = connect(settings)
    down = build_engine(UNREACHABLE_PG)
    try:
        shared = FailoverAttemptCounter(
            RedisAttemptCounter(connection, clock, **LIMITS),
            MemoryAttemptCounter(clock, **LIMITS),
            backstop=SqlAttemptCounter(engine, clock, **LIMITS),
            mode="closed",
        )
        alone = FailoverAttemptCounter(
            RedisAttemptCounter(connection, clock, **LIMITS),
            MemoryAttemptCounter(clock, **LIMITS),
            backstop=SqlAttemptCounter(down, clock, **LIMITS),
            mode="closed",
        )
        redis_process.stop()
        assert shared.acquire("k").allowed  # shared by every process: still allowed
        assert shared.record_failure("k") is None
        assert _rows(engine)[0]["count"] == 1
        with pytest.raises(BackendUnavailable):
            alone.acquire("k")  # never counted in one process alone
    finally:
        connection.close()
        down.dispose()


def test_a_failure_reserved_in_redis_is_counted_in_the_backstop_when_redis_dies(
    redis_process: RedisProcess, engine: Engine
) -> None:
    clock = FakeClock()
    settings = Settings.for_tests(redis_url=redis_process.url, redis_socket_timeout_seconds=TIMEOUT)
    connection = connect(settings)
    try:
        counter = FailoverAttemptCounter(
            RedisAttemptCounter(connection, clock, **LIMITS),
            MemoryAttemptCounter(clock, **LIMITS),
            backstop=SqlAttemptCounter(engine, clock, **LIMITS),
        )
        assert counter.acquire("k").allowed  # reserved in Redis
        redis_process.stop()
        assert counter.record_failure("k") is None  # counted in the database instead
        assert _rows(engine)[0]["count"] == 1
        for expected in (None, pytest.approx(60)):
            assert counter.acquire("k").allowed
            assert counter.record_failure("k") == expected
        assert not counter.acquire("k").allowed
        counter.reset("k")
        assert _rows(engine) == []
    finally:
        connection.close()


def test_a_lock_taken_in_the_backstop_holds_when_redis_comes_back(
    redis_process: RedisProcess, engine: Engine
) -> None:
    """Review R1: the account locked in PostgreSQL while Redis was down stays locked once
    Redis (which never saw those failures) answers again; no fresh threshold of guesses."""
    clock = FakeClock()
    settings = Settings.for_tests(redis_url=redis_process.url, redis_socket_timeout_seconds=TIMEOUT)
    connection = connect(settings)
    try:
        counter = FailoverAttemptCounter(
            RedisAttemptCounter(connection, clock, **LIMITS),
            MemoryAttemptCounter(clock, **LIMITS),
            backstop=SqlAttemptCounter(engine, clock, **LIMITS),
        )
        redis_process.stop()
        for expected in (None, None, pytest.approx(60)):
            assert counter.acquire("k").allowed
            assert counter.record_failure("k") == expected
        assert _rows(engine)[0]["level"] == 1  # locked in the database

        redis_process.start()  # the same port, empty
        connection.breaker.reset()
        clock.advance(seconds=10)
        refused = counter.acquire("k")
        assert not refused.allowed
        assert refused.retry_after == pytest.approx(50)
        assert not monitor.is_degraded("lockout")  # Redis answered
        assert _redis_state(redis_process.url, "k").get("count", "0") == "0"  # given back
        clock.advance(seconds=50)  # the lock is over: Redis counts again
        assert counter.acquire("k").allowed
        assert _redis_state(redis_process.url, "k")["count"] == "1"
    finally:
        connection.close()


def test_while_redis_answers_and_never_failed_the_backstop_runs_no_statement(
    redis_process: RedisProcess, engine: Engine
) -> None:
    """The check of a backstop lock after an outage costs nothing on the normal path."""
    from sqlalchemy import event

    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    clock = FakeClock()
    settings = Settings.for_tests(redis_url=redis_process.url, redis_socket_timeout_seconds=TIMEOUT)
    connection = connect(settings)
    event.listen(engine, "before_cursor_execute", count)
    try:
        counter = FailoverAttemptCounter(
            RedisAttemptCounter(connection, clock, **LIMITS),
            MemoryAttemptCounter(clock, **LIMITS),
            backstop=SqlAttemptCounter(engine, clock, **LIMITS),
        )
        assert counter.acquire("k").allowed
        assert counter.record_failure("k") is None
        assert counter.acquire("k").allowed
        counter.record_success("k")
        assert statements == []
    finally:
        event.remove(engine, "before_cursor_execute", count)
        connection.close()
