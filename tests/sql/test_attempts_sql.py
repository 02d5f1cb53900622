"""The login lockout counter in the SQL database (SECURITY.md F1, SEC-RL-01…06), on SQLite
and a real PostgreSQL: the shared contract, unchanged; races between threads and between
processes; what the table holds; and the wiring that makes it the counter of every
process on one database when there is no Redis."""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from tests.sql.conftest import fresh_sqlite_url, truncate_all
from usermgmt.app import UserManagement
from usermgmt.backends.memory import MemoryAttemptCounter
from usermgmt.backends.sqlalchemy import SqlAttemptCounter, build_engine
from usermgmt.backends.sqlalchemy.attempts import LOCKOUT_COUNTERS, counter_key
from usermgmt.clock import FakeClock
from usermgmt.config import Settings
from usermgmt.errors import BackendUnavailable, InvalidCredentials
from usermgmt.ports import AttemptCounter
from usermgmt.services.auth import lockout_key
from usermgmt.testing import create_user
from usermgmt.testing.contracts import AttemptCounterContract, race

pytestmark = pytest.mark.sql

LIMITS: dict[str, Any] = {"max_failures": 3, "lockout_seconds": 60, "max_lockout_seconds": 3600}


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database: a fresh SQLite file, or the truncated PostgreSQL one."""
    if request.param == "sqlite":
        return fresh_sqlite_url(request.getfixturevalue("sqlite_template"), tmp_path)
    url: str = request.getfixturevalue("pg_contracts_url")
    truncate_all(url)
    return url


@pytest.fixture
def engine(sql_url: str) -> Iterator[Engine]:
    engine = build_engine(sql_url)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def attempt_counter(engine: Engine, clock: FakeClock) -> AttemptCounter:
    return SqlAttemptCounter(engine, clock, **LIMITS)


class TestSqlAttemptCounter(AttemptCounterContract):
    """Every rule the memory and Redis counters follow (reservations, backoff, decay)."""


def _rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(select(LOCKOUT_COUNTERS))]


def test_rows_are_keyed_by_a_hash_never_the_address(engine: Engine) -> None:
    counter = SqlAttemptCounter(engine, FakeClock(), **LIMITS)
    key = lockout_key("Alice@Example.com")
    assert counter.acquire(key).allowed
    assert counter.record_failure(key) is None
    rows = _rows(engine)
    assert len(rows) == 1
    assert rows[0]["key"] == hashlib.sha256(b"login:alice@example.com").hexdigest()
    assert rows[0]["key"] == counter_key(key)
    assert "alice" not in repr(rows).lower()
    assert (rows[0]["count"], rows[0]["level"]) == (1, 0)


def test_lock_is_stored_with_its_level_and_success_deletes_the_row(engine: Engine) -> None:
    clock = FakeClock()
    counter = SqlAttemptCounter(engine, clock, **LIMITS)
    for _ in range(3):
        assert counter.acquire("k").allowed
    assert [counter.record_failure("k") for _ in range(3)] == [60.0, None, None]
    (row,) = _rows(engine)
    now = clock.now().timestamp()
    assert (row["count"], row["level"]) == (0, 1)
    assert row["locked_until"] == pytest.approx(now + 60)
    clock.advance(seconds=60)
    assert counter.acquire("k").allowed
    counter.record_success("k")
    assert _rows(engine) == []


def test_concurrent_acquires_across_counters_share_one_threshold(engine: Engine) -> None:
    """Two counters (two processes' worth of pools) on one database: 50 racing threads,
    half on each, get exactly the threshold of reservations between them."""
    other_engine = build_engine(engine.url.render_as_string(hide_password=False))
    try:
        counters = [
            SqlAttemptCounter(engine, max_failures=5),
            SqlAttemptCounter(other_engine, max_failures=5),
        ]
        results = race(50, lambda i: counters[i % 2].acquire("login:victim@example.com"))
        assert not [r for r in results if isinstance(r, Exception)]
        assert sum(1 for r in results if not isinstance(r, Exception) and r.allowed) == 5
        locks = [counters[i % 2].record_failure("login:victim@example.com") for i in range(5)]
        assert locks[0] == pytest.approx(60)  # the first answered failure locks
        assert not counters[1].acquire("login:victim@example.com").allowed
    finally:
        other_engine.dispose()


def _acquire_in_a_process(
    url: str, ready: Any, go: Any, results: Any, threads: int
) -> None:  # pragma: no cover - runs in a child process
    engine = build_engine(url)
    try:
        counter = SqlAttemptCounter(engine, max_failures=4)
        counter.acquire("login:warm-up@example.com")  # connect before the start
        ready.put(True)
        go.wait(60)
        decisions = race(threads, lambda _: counter.acquire("login:shared@example.com"))
        results.put(sum(1 for d in decisions if not isinstance(d, Exception) and d.allowed))
    finally:
        engine.dispose()


def test_two_processes_never_exceed_the_threshold(sql_url: str, engine: Engine) -> None:
    """CVE-2024-4629 across processes: two real processes, 25 racing threads each."""
    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    processes = [
        context.Process(target=_acquire_in_a_process, args=(sql_url, ready, go, results, 25))
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            assert ready.get(timeout=120)
        go.set()
        allowed = [results.get(timeout=120) for _ in processes]
    finally:
        for process in processes:
            process.join(60)
            if process.is_alive():  # pragma: no cover - a hung child
                process.kill()
    assert sum(allowed) == 4
    assert all(p.exitcode == 0 for p in processes)
    assert not SqlAttemptCounter(engine, max_failures=4).acquire("login:shared@example.com").allowed


def test_sweep_deletes_only_forgotten_states(engine: Engine) -> None:
    clock = FakeClock()
    counter = SqlAttemptCounter(engine, clock, **LIMITS)
    assert counter.acquire("old").allowed
    for _ in range(3):
        assert counter.acquire("locked-long-ago").allowed
    for _ in range(3):
        counter.record_failure("locked-long-ago")
    clock.advance(seconds=24 * 3600 + 61)
    assert counter.acquire("recent").allowed
    assert counter.sweep() == 2  # "old" and the expired lock, untouched for a day
    assert [row["key"] for row in _rows(engine)] == [counter_key("recent")]


def test_sweep_runs_every_1024th_acquire(engine: Engine) -> None:
    clock = FakeClock()
    counter = SqlAttemptCounter(engine, clock, **LIMITS)
    assert counter.acquire("forgotten").allowed
    clock.advance(seconds=24 * 3600)
    for i in range(1022):
        counter.acquire(f"key-{i % 7}")
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(LOCKOUT_COUNTERS)).scalar() == 8
    counter.acquire("key-0")  # the 1024th
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(LOCKOUT_COUNTERS)).scalar() == 7


def test_runs_outside_the_callers_transaction(sql_url: str, engine: Engine) -> None:
    """A reservation is committed at once, whatever the caller's unit of work does: a
    rolled-back transaction of the caller (or another process) cannot undo it."""
    um = UserManagement(Settings.for_tests(database_url=sql_url, **_lockout(3)))
    try:
        counter = um.backends.attempts
        assert isinstance(counter, SqlAttemptCounter)
        with um.backends.uow(read_only=True) as uow:
            uow.users.get_by_email("nobody@example.com")  # a transaction is open
            assert counter.acquire("k").allowed
        with engine.connect() as connection:
            count = connection.execute(text("SELECT count FROM lockout_counters")).scalar()
        assert count == 1
    finally:
        um.close()


def test_unreachable_database_raises_backend_unavailable_but_release_does_not() -> None:
    engine = build_engine("postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=2")
    try:
        counter = SqlAttemptCounter(engine, FakeClock(), **LIMITS)
        with pytest.raises(BackendUnavailable):
            counter.acquire("k")
        with pytest.raises(BackendUnavailable):
            counter.record_failure("k")
        with pytest.raises(BackendUnavailable):
            counter.reset("k")
        counter.release("k")  # best effort on error paths: logged, not raised
        assert counter.sweep() == 0
    finally:
        engine.dispose()


def test_bad_limits_are_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="max_failures"):
        SqlAttemptCounter(engine, max_failures=0)
    with pytest.raises(ValueError, match="lockout_seconds"):
        SqlAttemptCounter(engine, lockout_seconds=60, max_lockout_seconds=30)


# --- the wiring: several processes on one SQL database, no Redis -----------------------------


def _lockout(threshold: int) -> dict[str, Any]:
    return {"login_max_failures": threshold}


@pytest.fixture
def make_um(sql_url: str) -> Iterator[Callable[..., UserManagement]]:
    made: list[UserManagement] = []

    def make(**settings: Any) -> UserManagement:
        um = UserManagement(Settings.for_tests(database_url=sql_url, **settings))
        made.append(um)
        return um

    yield make
    for um in made:
        um.close()


def test_without_redis_the_sql_database_holds_the_lockout(
    make_um: Callable[..., UserManagement],
) -> None:
    um = make_um()
    assert isinstance(um.backends.attempts, SqlAttemptCounter)
    assert um.backends.attempts.max_failures == um.settings.login_max_failures
    memory_um = UserManagement(Settings.for_tests())
    try:
        assert isinstance(memory_um.backends.attempts, MemoryAttemptCounter)
    finally:
        memory_um.close()


def test_failures_on_two_instances_add_up_and_lock_both(
    make_um: Callable[..., UserManagement],
) -> None:
    """Two application instances (two processes' worth) on one database, no Redis: their
    failures count together, so the lock holds on both (F1: no N x threshold)."""
    a, b = make_um(**_lockout(3)), make_um(**_lockout(3))
    a.seed()
    user, password = create_user(a)
    for instance in (a, b, a):
        with pytest.raises(InvalidCredentials):
            instance.auth.login(user.email.upper(), "wrong-password-123")
    for instance in (a, b):
        with pytest.raises(InvalidCredentials):  # locked: the right password is refused
            instance.auth.login(user.email, password)


class _CountingHasher:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.verifications = 0
        self._lock = threading.Lock()

    def _count(self) -> None:
        with self._lock:
            self.verifications += 1

    def verify(self, password: str, hashed: str) -> bool:
        self._count()
        return bool(self.inner.verify(password, hashed))

    def dummy_verify(self, password: str) -> None:
        self._count()
        self.inner.dummy_verify(password)

    def hash(self, password: str) -> str:
        return str(self.inner.hash(password))

    def needs_rehash(self, hashed: str) -> bool:
        return bool(self.inner.needs_rehash(hashed))


def test_concurrent_wrong_logins_on_two_instances_verify_at_most_the_threshold(
    make_um: Callable[..., UserManagement],
) -> None:
    """SEC-RL-03 across instances: 50 wrong logins released together, alternating
    between two instances, run at most 3 password verifications in all."""
    a, b = make_um(**_lockout(3)), make_um(**_lockout(3))
    a.seed()
    user, password = create_user(a)
    spies = [_CountingHasher(a.kernel.hasher), _CountingHasher(b.kernel.hasher)]
    a.kernel.hasher, b.kernel.hasher = spies
    instances = (a, b)

    def wrong(i: int) -> None:
        instances[i % 2].auth.login(user.email, f"wrong-{i}-password!")

    results = race(50, wrong)
    assert all(isinstance(r, InvalidCredentials) for r in results), results
    assert 1 <= sum(s.verifications for s in spies) <= 3
    with pytest.raises(InvalidCredentials):
        b.auth.login(user.email, password)
    assert sum(s.verifications for s in spies) <= 3


def test_the_application_role_of_the_documented_grants_can_count(
    request: pytest.FixtureRequest,
) -> None:
    """The GRANTs of audit_roles give the application's role what the counter needs."""
    import psycopg
    from sqlalchemy.engine import make_url

    from tests.sql.conftest import PgServer
    from usermgmt.backends.sqlalchemy import migrate
    from usermgmt.backends.sqlalchemy.audit_roles import grant_statements

    server: PgServer = request.getfixturevalue("pg_server")
    if not server.can_create_databases:
        pytest.fail("this test needs a private PostgreSQL server (it creates roles)")
    owner_url = server.database("usermgmt_lockout_roles")
    migrate.upgrade(owner_url)
    plain = owner_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True) as connection:
        for role in ("um_lockout_app", "um_lockout_archiver"):
            connection.execute(f"DROP ROLE IF EXISTS {role}")
            connection.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'")
        for statement in grant_statements("um_lockout_app", "um_lockout_archiver"):
            connection.execute(statement)
    app_url = (
        make_url(owner_url)
        .set(username="um_lockout_app", password="pw-um_lockout_app")
        .render_as_string(hide_password=False)
    )
    engine = build_engine(app_url)
    try:
        counter = SqlAttemptCounter(engine, FakeClock(), **LIMITS)
        for _ in range(3):
            assert counter.acquire("k").allowed
        assert counter.record_failure("k") == pytest.approx(60)
        counter.release("k")
        assert counter.sweep() == 0
        counter.record_success("k")
        assert _rows(engine) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_database_without_the_table_raises_backend_unavailable(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Review R1: any database error of the counter (here migration 0003 not applied:
    PostgreSQL's UndefinedTable is a ProgrammingError) is BackendUnavailable, which the
    Redis failover answers in-process and the adapters as 503, never a raw SQLAlchemy
    error (a 500)."""
    if dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'unmigrated.db'}"
    else:
        server = request.getfixturevalue("pg_server")
        if not server.can_create_databases:
            pytest.fail("this test needs a private PostgreSQL server (it creates a database)")
        url = server.database("usermgmt_lockout_unmigrated")
    engine = build_engine(url)
    try:
        counter = SqlAttemptCounter(engine, FakeClock(), **LIMITS)
        with pytest.raises(BackendUnavailable):
            counter.acquire("k")
        with pytest.raises(BackendUnavailable):
            counter.record_failure("k")
        with pytest.raises(BackendUnavailable):
            counter.reset("k")
        counter.release("k")
        assert counter.sweep() == 0
    finally:
        engine.dispose()


def test_a_pooled_connection_the_server_dropped_is_retried_and_returned(
    pg_contracts_url: str,
) -> None:
    """A pooled connection PostgreSQL closed (restart, idle timeout) fails the counter's
    first statement: the reservation is taken once, on a fresh connection, and every
    connection goes back to the pool (none leaked)."""
    import psycopg

    truncate_all(pg_contracts_url)
    engine = build_engine(pg_contracts_url)
    try:
        counter = SqlAttemptCounter(engine, FakeClock(), **LIMITS)
        assert counter.acquire("k").allowed  # the pool now holds one connection
        with engine.connect() as connection:
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        plain = pg_contracts_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(plain, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert counter.acquire("k").allowed
        assert engine.pool.checkedout() == 0
        (row,) = _rows(engine)
        assert row["count"] == 2  # taken once, not lost nor doubled
    finally:
        engine.dispose()
