"""SECURITY.md §4A F6 and F7: PostgreSQL down, serialization failures, an exhausted pool.

F6 runs against a closed port and against a private PostgreSQL server of its own that
the test stops and starts again (the session's shared server is never touched). F7
injects the retryable failure twice: by making a repository raise TransactionConflict
(SQLite and PostgreSQL), and by a trigger that makes PostgreSQL itself fail with
SQLSTATE 40001 / 40P01 / 55P03.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.sql.conftest import (
    PG_BIN_GLOB,
    PgServer,
    _free_port,
    _pg_bin,
    _run,
    fresh_sqlite_url,
    truncate_all,
    unavailable,
)
from usermgmt.app import UserManagement
from usermgmt.backends.sqlalchemy import SqlUnitOfWorkFactory, migrate
from usermgmt.backends.sqlalchemy.repositories import SqlSessionRepository
from usermgmt.config import Settings
from usermgmt.errors import BackendUnavailable, InvalidCredentials, TransactionConflict
from usermgmt.models import Session
from usermgmt.services.auth import lockout_key
from usermgmt.services.base import TRANSACTION_ATTEMPTS
from usermgmt.testing import create_user, random_password

pytestmark = pytest.mark.sql

MAX_FAILURES = 3
CLOSED_PORT_URL = "postgresql://usermgmt@127.0.0.1:1/usermgmt"


def sql(um: UserManagement, statement: str, **params: Any) -> Any:
    factory = um.backends.uow
    assert isinstance(factory, SqlUnitOfWorkFactory)
    with factory.engine.connect() as connection:
        return connection.execute(text(statement), params).scalar_one()


def sessions_of(um: UserManagement, user_id: UUID) -> int:
    return len(
        um.kernel.read(lambda uow: uow.sessions.list_active_for_user(user_id, um.clock.now()))
    )


def assert_nothing_counted(um: UserManagement, email: str) -> None:
    """The lockout counter holds no failure (nor a leaked reservation) for ``email``."""
    key = lockout_key(email)
    for _ in range(MAX_FAILURES):  # a single counted failure would refuse the last one
        decision = um.backends.attempts.acquire(key)
        assert decision.allowed
    for _ in range(MAX_FAILURES):
        um.backends.attempts.release(key)


# --- a private server the test may stop --------------------------------------------------------


class StoppableServer:
    """A throwaway PostgreSQL in a temporary folder, stopped and started at will."""

    def __init__(self) -> None:
        bin_dir = _pg_bin()
        if bin_dir is None:
            raise RuntimeError(f"no PostgreSQL binaries in {PG_BIN_GLOB}")
        self.bin = bin_dir
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres and shutil.which("runuser") is None:
            raise RuntimeError("running as root without runuser")
        self.root = Path(tempfile.mkdtemp(prefix="usermgmt-pg-faults-"))
        if self.as_postgres:
            self.root.chmod(0o777)
        self.data = self.root / "data"
        self.port = _free_port()
        initdb = self._pg("initdb", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8")
        initdb += ["--no-sync", "-U", "postgres", "-D", str(self.data)]
        result = _run(initdb, as_postgres=self.as_postgres)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr.strip()[-300:]}")

    def _pg(self, program: str, *args: str) -> list[str]:
        return [str(self.bin / program), *args]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        command = self._pg("pg_ctl", "-w", "-t", "60", "-D", str(self.data))
        command += ["-l", str(self.root / "server.log"), "-o", options, "start"]
        result = _run(command, as_postgres=self.as_postgres)
        if result.returncode != 0:
            log = self.root / "server.log"
            raise RuntimeError(log.read_text(errors="replace")[-300:] if log.exists() else "")

    def stop(self, mode: str = "fast") -> None:
        """Stop; ``fast`` (a clean shutdown) keeps what was committed even with this
        server's ``synchronous_commit=off``, ``immediate`` is a crash."""
        command = self._pg("pg_ctl", "-w", "-D", str(self.data), "-m", mode, "stop")
        _run(command, as_postgres=self.as_postgres)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def stoppable() -> Iterator[StoppableServer]:
    try:
        server = StoppableServer()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        unavailable(f"could not create a private PostgreSQL server: {exc}")
    try:
        try:
            server.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            unavailable(f"could not start a private PostgreSQL server: {exc}")
        yield server
    finally:
        server.remove()


def _wait_until_up(um: UserManagement, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            um.backends.uow.check()
        except BackendUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        else:
            return


# --- F6: PostgreSQL down -----------------------------------------------------------------------


def test_f6_closed_port_login_is_unavailable_never_invalid_credentials() -> None:
    settings = Settings.for_tests(database_url=CLOSED_PORT_URL, login_max_failures=MAX_FAILURES)
    um = UserManagement(settings)
    try:
        with pytest.raises(BackendUnavailable):
            um.backends.uow.check()
        for password in ["the right one, maybe", "a wrong one"] * MAX_FAILURES:
            with pytest.raises(BackendUnavailable) as info:
                um.auth.login("ada@example.com", password)
            assert not isinstance(info.value, InvalidCredentials)
        # the lockout counter lives in the database too (F1, migration 0003): it cannot
        # count anything either, and no process counts on its own
        with pytest.raises(BackendUnavailable):
            um.backends.attempts.acquire(lockout_key("ada@example.com"))
        with pytest.raises(BackendUnavailable):
            um.users.register(email="new@example.com", password=random_password())
    finally:
        um.close()


def test_f6_stopped_server_then_back(stoppable: StoppableServer) -> None:
    migrate.upgrade(stoppable.url)
    settings = Settings.for_tests(database_url=stoppable.url, login_max_failures=MAX_FAILURES)
    um = UserManagement(settings)
    try:
        um.seed()
        user, password = create_user(um)
        pair = um.auth.login(user.email, password)  # a pooled connection now exists

        stoppable.stop()
        with pytest.raises(BackendUnavailable):
            um.backends.uow.check()
        for attempt in [password, "wrong password, twice as long"] * MAX_FAILURES:
            with pytest.raises(BackendUnavailable) as info:
                um.auth.login(user.email, attempt)
            assert not isinstance(info.value, InvalidCredentials)
        # an access token is never taken as valid when its session cannot be checked
        with pytest.raises(BackendUnavailable):
            um.auth.verify_access_token(pair.access_token)
        with pytest.raises(BackendUnavailable):
            um.auth.refresh(pair.refresh_token)

        stoppable.start()
        _wait_until_up(um)
        assert_nothing_counted(um, user.email)  # (the counter is in the database: F1)
        assert um.auth.verify_access_token(pair.access_token).session_id == pair.session_id
        again = um.auth.login(user.email, password)  # not locked out by the outage
        assert again.session_id != pair.session_id
        failed = "SELECT count(*) FROM audit_logs WHERE action = 'user.login_failed'"
        assert sql(um, failed) == 0
    finally:
        um.close()
        with contextlib.suppress(RuntimeError, OSError, subprocess.SubprocessError):
            stoppable.start()  # leave it running for the fixture's teardown


# --- F7: serialization failures and deadlocks --------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def um(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[UserManagement]:
    if request.param == "sqlite":
        url = fresh_sqlite_url(request.getfixturevalue("sqlite_template"), tmp_path)
    else:
        url = request.getfixturevalue("pg_contracts_url")
        truncate_all(url)
    um = UserManagement(Settings.for_tests(database_url=url))
    um.seed()
    yield um
    um.close()


class FlakyAdd:
    """Replaces ``SqlSessionRepository.add`` by one failing ``times`` times with
    TransactionConflict before it behaves."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, times: int) -> None:
        self.times = times
        self.calls = 0
        original = SqlSessionRepository.add

        def add(repository: SqlSessionRepository, session: Session) -> None:
            self.calls += 1
            if self.calls <= self.times:
                raise TransactionConflict("injected")
            original(repository, session)

        monkeypatch.setattr(SqlSessionRepository, "add", add)


def test_f7_one_conflict_is_retried(um: UserManagement, monkeypatch: pytest.MonkeyPatch) -> None:
    user, password = create_user(um)
    flaky = FlakyAdd(monkeypatch, times=1)
    pair = um.auth.login(user.email, password)
    assert flaky.calls == 2
    assert sessions_of(um, user.id) == 1  # the first attempt was rolled back entirely
    logins = "SELECT count(*) FROM audit_logs WHERE action = 'user.login'"
    assert sql(um, logins) == 1
    assert um.auth.authenticate(pair.access_token).id == user.id


def test_f7_persistent_conflicts_end_unavailable(
    um: UserManagement, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, password = create_user(um)
    flaky = FlakyAdd(monkeypatch, times=10**6)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        um.auth.login(user.email, password)
    assert flaky.calls == TRANSACTION_ATTEMPTS
    assert time.monotonic() - started < 5  # bounded: a few short backoffs
    assert sessions_of(um, user.id) == 0


# --- F7 with the real SQLSTATE from PostgreSQL ---------------------------------------------------


@pytest.fixture(scope="module")
def faults_url(pg_server: PgServer) -> str:
    url = pg_server.database("usermgmt_faults")
    migrate.upgrade(url)
    return url


@pytest.fixture
def pg_um(faults_url: str) -> Iterator[UserManagement]:
    truncate_all(faults_url)
    um = UserManagement(Settings.for_tests(database_url=faults_url))
    um.seed()
    yield um
    um.close()


@contextlib.contextmanager
def failing_session_inserts(um: UserManagement, errcode: str, times: int) -> Iterator[None]:
    """Make PostgreSQL fail the next ``times`` INSERTs into sessions with SQLSTATE
    ``errcode`` (a sequence counts them: sequences ignore rollbacks)."""
    setup = [
        "CREATE SEQUENCE fault_counter",
        f"""CREATE FUNCTION inject_fault() RETURNS trigger AS $$
        BEGIN
            IF nextval('fault_counter') <= {int(times)} THEN
                RAISE EXCEPTION 'injected fault' USING ERRCODE = '{errcode}';
            END IF;
            RETURN NEW;
        END $$ LANGUAGE plpgsql""",
        (
            "CREATE TRIGGER inject_fault BEFORE INSERT ON sessions "
            "FOR EACH ROW EXECUTE FUNCTION inject_fault()"
        ),
    ]
    teardown = [
        "DROP TRIGGER IF EXISTS inject_fault ON sessions",
        "DROP FUNCTION IF EXISTS inject_fault()",
        "DROP SEQUENCE IF EXISTS fault_counter",
    ]
    factory = um.backends.uow
    assert isinstance(factory, SqlUnitOfWorkFactory)
    with factory.engine.begin() as connection:
        for statement in teardown + setup:
            connection.execute(text(statement))
    try:
        yield
    finally:
        with factory.engine.begin() as connection:
            for statement in teardown:
                connection.execute(text(statement))


@pytest.mark.parametrize("errcode", ["40001", "40P01", "55P03"])
def test_f7_postgresql_failure_once_is_retried(pg_um: UserManagement, errcode: str) -> None:
    user, password = create_user(pg_um)
    with failing_session_inserts(pg_um, errcode, times=1):
        pair = pg_um.auth.login(user.email, password)
    assert sessions_of(pg_um, user.id) == 1
    assert pg_um.auth.authenticate(pair.access_token).id == user.id


def test_f7_postgresql_failure_always_is_unavailable(pg_um: UserManagement) -> None:
    user, password = create_user(pg_um)
    with failing_session_inserts(pg_um, "40001", times=10**6):
        with pytest.raises(BackendUnavailable):
            pg_um.auth.login(user.email, password)
        tries = sql(pg_um, "SELECT last_value FROM fault_counter")
    assert tries == TRANSACTION_ATTEMPTS
    assert sessions_of(pg_um, user.id) == 0


# --- F7: pool exhausted --------------------------------------------------------------------------


def test_f7_exhausted_pool_waits_briefly_then_unavailable(faults_url: str) -> None:
    truncate_all(faults_url)
    url = (
        make_url(faults_url)
        .update_query_dict({"connection_limit": "1", "pool_timeout": "0.5"})
        .render_as_string(hide_password=False)
    )
    um = UserManagement(Settings.for_tests(database_url=url))
    try:
        um.seed()
        user, password = create_user(um)
        factory = um.backends.uow
        assert isinstance(factory, SqlUnitOfWorkFactory)
        with factory.engine.connect():  # the only connection of the pool, held
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                um.auth.login(user.email, password)
            waited = time.monotonic() - started
        assert 0.4 <= waited < 5
        assert_nothing_counted(um, user.email)
        assert um.auth.login(user.email, password).access_token  # free again
    finally:
        um.close()
