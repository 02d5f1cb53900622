"""Fixtures for the SQL backend: a real PostgreSQL server and migrated databases.

``pg_server`` (session) is ``USERMGMT_TEST_DATABASE_URL`` when set; otherwise a private
server started with the newest ``/usr/lib/postgresql/*/bin`` binaries in a temporary
folder (as the ``postgres`` user when running as root) on a free loopback port below
32768, stopped and deleted at the end of the session. When no server can be had the
PostgreSQL tests skip, or fail when ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from usermgmt.backends.sqlalchemy import migrate

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
ENV_URL = "USERMGMT_TEST_DATABASE_URL"

#: Every table of the schema (TRUNCATE between PostgreSQL tests).
TABLES = (
    "users",
    "organizations",
    "permissions",
    "roles",
    "role_permissions",
    "organization_memberships",
    "membership_roles",
    "invitations",
    "invitation_roles",
    "sessions",
    "one_time_tokens",
    "oauth_accounts",
    "audit_logs",
    "audit_chain_heads",
    "audit_archive_batches",
    "lockout_counters",
)


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail under CI=true: a missing server must never pass silently in CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class PgServer:
    """A PostgreSQL server the tests may use; ``url`` reaches its maintenance database."""

    url: str
    version: str
    can_create_databases: bool = True

    def database(self, name: str) -> str:
        """The URL of a fresh, empty database ``name`` (dropped and created again).

        Without the right to create databases (an external server), the given database
        itself is returned: then the tests share it and clean it themselves.
        """
        if not self.can_create_databases:
            return self.url
        import psycopg
        from sqlalchemy.engine import make_url

        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{name}"')
        url = make_url(self.url).set(database=name)
        return url.render_as_string(hide_password=False)


def _free_port() -> int:
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32768")


def _pg_bin() -> Path | None:
    candidates = [Path(p) for p in Path("/").glob(PG_BIN_GLOB.lstrip("/"))]
    usable = [p for p in candidates if (p / "initdb").is_file() and (p / "pg_ctl").is_file()]
    if not usable:
        return None

    def major(path: Path) -> tuple[int, ...]:
        version = path.parent.name
        return tuple(int(part) for part in version.split(".") if part.isdigit())

    return max(usable, key=major)


def _run(command: list[str], *, as_postgres: bool) -> subprocess.CompletedProcess[str]:
    if as_postgres:
        command = ["runuser", "-u", "postgres", "--", *command]
    return subprocess.run(  # noqa: S603 - our own command lines
        command, capture_output=True, text=True, timeout=120, check=False
    )


@contextlib.contextmanager
def _private_server() -> Iterator[str]:
    """Start a throwaway PostgreSQL on loopback; yields its URL. Raises RuntimeError."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        raise RuntimeError(f"no PostgreSQL binaries in {PG_BIN_GLOB}")
    as_postgres = os.geteuid() == 0  # PostgreSQL refuses to run as root
    if as_postgres and shutil.which("runuser") is None:
        raise RuntimeError("running as root without runuser to switch to the postgres user")
    root = Path(tempfile.mkdtemp(prefix="usermgmt-pg-"))
    data = root / "data"
    try:
        if as_postgres:
            root.chmod(0o777)  # the postgres user writes the cluster, socket and log here
        initdb = _run(
            [
                str(bin_dir / "initdb"),
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
                "-U",
                "postgres",
                "-D",
                str(data),
            ],
            as_postgres=as_postgres,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {initdb.stderr.strip()[-500:]}")
        started = False
        last_error = ""
        for _ in range(5):
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            start = _run(
                [
                    str(bin_dir / "pg_ctl"),
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    str(data),
                    "-l",
                    str(root / "server.log"),
                    "-o",
                    options,
                    "start",
                ],
                as_postgres=as_postgres,
            )
            if start.returncode == 0:
                started = True
                break
            log = root / "server.log"
            last_error = log.read_text(errors="replace")[-500:] if log.exists() else start.stderr
        if not started:
            raise RuntimeError(f"pg_ctl start failed: {last_error.strip()}")
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            _run(
                [str(bin_dir / "pg_ctl"), "-w", "-D", str(data), "-m", "immediate", "stop"],
                as_postgres=as_postgres,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _server_version(url: str, *, wait: float = 0.0) -> str:
    """``SELECT version()``, retrying for ``wait`` seconds while the server starts."""
    import psycopg

    deadline = time.monotonic() + wait
    while True:
        try:
            with psycopg.connect(url, connect_timeout=5) as connection:
                row = connection.execute("SELECT version()").fetchone()
                return "" if row is None else str(row[0])
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _announce(config: pytest.Config, message: str) -> None:
    """Print once, past pytest's output capture (the server version belongs in the log)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line(message)


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[PgServer]:
    """A real PostgreSQL server for the session (see the module docstring)."""
    try:
        import psycopg
    except ImportError:
        unavailable('psycopg is not installed (pip install "usermgmt[postgres]")')

    given = os.environ.get(ENV_URL)
    if given:
        url = given.replace("postgresql+psycopg://", "postgresql://", 1)
        try:
            version = _server_version(url)
        except psycopg.Error as exc:
            unavailable(f"{ENV_URL} cannot be reached: {exc}")
        with psycopg.connect(url) as connection:
            row = connection.execute(
                "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
        _announce(request.config, f"\nPostgreSQL (from {ENV_URL}): {version}")
        yield PgServer(url, version, can_create_databases=bool(row and row[0]))
        return

    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(_private_server())
            version = _server_version(url, wait=10)
        except (RuntimeError, OSError, subprocess.SubprocessError, psycopg.Error) as exc:
            stack.close()
            unavailable(f"could not start a PostgreSQL server: {exc}")
        _announce(request.config, f"\nPostgreSQL (private server, {url}): {version}")
        yield PgServer(url, version)


@pytest.fixture(scope="session")
def pg_contracts_url(pg_server: PgServer) -> str:
    """A database migrated to head once per session, shared by the PostgreSQL tests
    (which TRUNCATE every table before they run)."""
    url = pg_server.database("usermgmt_contracts")
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once; tests copy it to get a fresh database."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


def fresh_sqlite_url(template: Path, directory: Path) -> str:
    """A copy of the migrated template in ``directory``: an empty, migrated database."""
    target = directory / "usermgmt.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


def truncate_all(url: str) -> None:
    """Empty every table of the PostgreSQL database at ``url``."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as connection:
        connection.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
