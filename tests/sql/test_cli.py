"""The ``usermgmt`` database commands, run as ``python -m usermgmt`` in subprocesses
against SQLite files and the PostgreSQL server: migrate, current, seed, rollback,
create-superuser, and one readable error line (exit status 2) for every failure."""

from __future__ import annotations

import contextlib
import getpass
import io
import itertools
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

import usermgmt
from tests.sql.conftest import PgServer
from tests.sql.test_migrations import EXPECTED_SEED_INDEXES, SEED_INDEX_QUERY
from usermgmt.app import UserManagement
from usermgmt.backends.sqlalchemy import SqlUnitOfWorkFactory, build_engine, migrate
from usermgmt.cli import PASSWORD_ENV, main
from usermgmt.config import Settings
from usermgmt.permissions import SYSTEM_ROLES
from usermgmt.testing import random_password
from usermgmt.testing.contracts import make_organization, transact

pytestmark = pytest.mark.sql

REPO_ROOT = Path(usermgmt.__file__).resolve().parent.parent
HEAD = migrate.heads()[0]
SEED_TABLES = {"users", "organizations", "roles", "permissions", "organization_memberships"}
JWT = {
    "JWT_SECRET": "cli-tests-access-Secret-0123456789-abcdefghij",
    "JWT_REFRESH_SECRET": "cli-tests-refresh-Secret-9876543210-klmnopqrst",
}

Run = Callable[..., subprocess.CompletedProcess[str]]

#: Environment names the settings read (removed before an in-process run).
_SETTINGS_NAMES = {name.upper() for name in Settings.model_fields} | {"NODE_ENV", PASSWORD_ENV}


def _environment(url: str, **extra: str) -> dict[str, str]:
    """A minimal environment: nothing from the caller's shell reaches the settings;
    an ``extra`` value of ``""`` leaves that variable unset."""
    env = {key: os.environ[key] for key in ("PATH", "LANG", "LC_ALL", "HOME") if key in os.environ}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        ENVIRONMENT="test",
        DATABASE_URL=url,
        EMAIL_PROVIDER="memory",
        STORAGE_BACKEND="memory",
        QUEUE_BACKEND="inline",
        PASSWORD_ARGON2_MEMORY_KIB="1024",
        PASSWORD_ARGON2_TIME_COST="1",
        PASSWORD_ARGON2_PARALLELISM="1",
        APP_PERMISSIONS="project:create,project:archive",
        **JWT,
    )
    env.update(extra)
    return {key: value for key, value in env.items() if value != ""}  # "": unset it


@dataclass
class Target:
    """An empty database and how the command line is run against it."""

    url: str
    run: Run

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.run(self.url, *args, **env)


@pytest.fixture
def cli(tmp_path: Path) -> Run:
    """``cli(url, *args, **env)``: run ``python -m usermgmt`` in ``tmp_path`` (no .env)."""

    def run(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - fixed arguments
            [sys.executable, "-m", "usermgmt", *args],
            capture_output=True,
            text=True,
            env=_environment(url, **env),
            cwd=tmp_path,
            timeout=120,
            check=False,
        )

    return run


def _use_environment(patch: pytest.MonkeyPatch, cwd: Path, url: str, **env: str) -> None:
    """Give this process the environment :func:`_environment` gives a subprocess."""
    patch.chdir(cwd)
    for key in [k for k in os.environ if k.upper() in _SETTINGS_NAMES]:
        patch.delenv(key)
    for key, value in _environment(url, **env).items():
        if key not in ("PATH", "LANG", "LC_ALL", "HOME", "PYTHONPATH"):
            patch.setenv(key, value)


@pytest.fixture
def cli_here(tmp_path: Path) -> Run:
    """The same as :func:`cli` but calling ``main()`` in this process (much faster); an
    exception escaping ``main()`` fails the test as a traceback would."""

    def run(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        out, err = io.StringIO(), io.StringIO()
        with pytest.MonkeyPatch.context() as patch:
            _use_environment(patch, tmp_path, url, **env)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(list(args))
                except SystemExit as exit_:  # argparse usage errors
                    code = int(exit_.code or 0)
        return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())

    return run


def _pg(request: pytest.FixtureRequest) -> str:
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.database("usermgmt_cli")
    if not server.can_create_databases:
        migrate.downgrade(url, "base")
    return url


@pytest.fixture(params=["sqlite-in-process", "postgresql-subprocess"])
def target(request: pytest.FixtureRequest, tmp_path: Path, cli: Run, cli_here: Run) -> Target:
    """An empty (never migrated) database: SQLite driven through ``main()`` in this
    process, PostgreSQL through ``python -m usermgmt`` in a subprocess."""
    if request.param.startswith("sqlite"):
        return Target(f"sqlite:///{tmp_path / 'cli.db'}", cli_here)
    return Target(_pg(request), cli)


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    return _pg(request)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``usermgmt: error: …`` line of a failed command (exit status 2)."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("usermgmt: error: ")
    return lines[0]


def count(url: str, table: str) -> int:
    engine = build_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = build_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


# --- migrate, current, rollback ----------------------------------------------------------


def test_migrate_then_current_prints_the_head(target: Target) -> None:
    assert ok(target("db", "current")).strip() == "none"
    out = ok(target("db", "migrate"))
    assert f"none -> {HEAD}" in out
    assert ok(target("db", "current")).strip() == HEAD
    assert "nothing to migrate" in ok(target("db", "migrate"))
    assert tables(target.url) >= SEED_TABLES


def test_seed_guide_index_query_lists_the_indexes(cli: Run, pg_url: str) -> None:
    ok(cli(pg_url, "db", "migrate"))
    engine = build_engine(pg_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text(SEED_INDEX_QUERY)).all()
            indexed = connection.execute(
                text(
                    "SELECT DISTINCT tablename FROM pg_indexes WHERE tablename IN "
                    "('users', 'organizations', 'roles', 'permissions', "
                    "'organization_memberships')"
                )
            ).scalars()
            indexed_tables = set(indexed)
    finally:
        engine.dispose()
    names = {row[0] for row in rows}
    assert names >= EXPECTED_SEED_INDEXES
    assert indexed_tables == SEED_TABLES
    lower_email = next(row[1] for row in rows if row[0] == "uq_users_lower_email")
    assert "UNIQUE" in lower_email
    assert "lower" in lower_email


def test_rollback_then_migrate_again(target: Target) -> None:
    migrate.upgrade(target.url)
    chain = [*reversed(migrate.revisions()), "none"]  # HEAD, ..., 0001, none
    for newer, older in itertools.pairwise(chain):
        assert f"{newer} -> {older}" in ok(target("db", "rollback"))  # one revision at a time
    assert migrate.current(target.url) is None
    assert tables(target.url) == set()
    assert "nothing to roll back" in one_error_line(target("db", "rollback"))

    ok(target("db", "migrate", "--to", HEAD))
    assert migrate.current(target.url) == HEAD
    assert "-> none" in ok(target("db", "rollback", "--to", "base"))
    migrate.upgrade(target.url)
    assert tables(target.url) >= SEED_TABLES


def test_unknown_revision_is_one_line(target: Target) -> None:
    migrate.upgrade(target.url)
    for command in ("migrate", "rollback"):
        line = one_error_line(target("db", command, "--to", "no-such-revision"))
        assert "no-such-revision" in line
    assert migrate.current(target.url) == HEAD  # nothing changed


# --- seed ------------------------------------------------------------------------------------


def test_seed_is_idempotent_and_completes_existing_organizations(target: Target) -> None:
    assert "db migrate" in one_error_line(target("db", "seed"))  # no schema yet
    migrate.upgrade(target.url)
    factory = SqlUnitOfWorkFactory(target.url)
    orgs = [make_organization() for _ in range(2)]  # organizations without any role
    try:
        for org in orgs:
            transact(factory, lambda uow, org=org: uow.organizations.add(org))
    finally:
        factory.dispose()

    first = ok(target("db", "seed"))
    assert "added permission project:create" in first
    assert "added permission project:archive" in first
    assert "added permission member:invite" in first
    assert f"added {len(orgs) * len(SYSTEM_ROLES)} system role(s)" in first
    counts = {t: count(target.url, t) for t in ("permissions", "roles", "role_permissions")}
    assert counts["roles"] == len(orgs) * len(SYSTEM_ROLES)
    assert counts["permissions"] >= 12

    second = ok(target("db", "seed"))
    assert "nothing to seed" in second
    assert "added" not in second
    assert {t: count(target.url, t) for t in counts} == counts

    # a new application permission is added, nothing else
    third = ok(target("db", "seed", APP_PERMISSIONS="project:create,report:export"))
    assert third.splitlines()[0] == "added permission report:export"
    assert count(target.url, "permissions") == counts["permissions"] + 1
    assert count(target.url, "roles") == counts["roles"]


# --- create-superuser ------------------------------------------------------------------------


def test_create_superuser(target: Target) -> None:
    password = random_password()
    no_schema = one_error_line(
        target("create-superuser", "--email", "root@example.com", **{PASSWORD_ENV: password})
    )
    assert "db migrate" in no_schema
    migrate.upgrade(target.url)
    line = one_error_line(target("create-superuser", "--email", "root@example.com"))
    assert PASSWORD_ENV in line  # no terminal and no variable: refused, nothing asked

    out = ok(
        target(
            "create-superuser",
            "--email",
            "Root@Example.com",
            "--name",
            "Root",
            **{PASSWORD_ENV: password},
        )
    )
    assert "created superuser root@example.com" in out.lower()
    assert password not in out

    um = UserManagement(Settings.for_tests(database_url=target.url))
    try:
        user = um.users.get_by_email("root@example.com")
        assert user is not None
        assert user.is_superuser
        assert user.is_verified
        assert user.email_verified_at is not None
        assert user.is_active
        assert user.name == "Root"
        pair = um.auth.login("ROOT@example.com", password)
        assert um.auth.authenticate(pair.access_token).id == user.id
    finally:
        um.close()

    taken = one_error_line(
        target("create-superuser", "--email", "ROOT@example.com", **{PASSWORD_ENV: password})
    )
    assert "registered" in taken.lower()
    weak = one_error_line(
        target("create-superuser", "--email", "weak@example.com", **{PASSWORD_ENV: "Tr0ub4dor"})
    )
    assert "15 characters" in weak
    assert "Tr0ub4dor" not in weak  # the password itself is never echoed
    bad = one_error_line(
        target("create-superuser", "--email", "not-an-email", **{PASSWORD_ENV: password})
    )
    assert "email" in bad
    assert count(target.url, "users") == 1


def test_the_password_is_never_an_argument(cli_here: Run, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = cli_here(url, "create-superuser", "--email", "a@example.com", "--password", "x" * 20)
    assert result.returncode == 2
    assert "unrecognized arguments: --password" in result.stderr


# --- failures ----------------------------------------------------------------------------------

UNREACHABLE = "postgresql://u:hunter2-Secret@127.0.0.1:1/x"


def _assert_unreachable(line: str) -> None:
    assert "cannot reach the database at postgresql://u:***@127.0.0.1:1/x" in line
    assert "refused" in line.lower()
    assert "hunter2" not in line


def test_unreachable_database_is_one_readable_line(cli: Run) -> None:
    _assert_unreachable(one_error_line(cli(UNREACHABLE, "db", "migrate")))


@pytest.mark.parametrize(
    "command",
    [
        ["db", "current"],
        ["db", "migrate"],
        ["db", "rollback"],
        ["db", "seed"],
        ["create-superuser", "--email", "a@example.com"],
    ],
)
def test_unreachable_database_for_every_command(cli_here: Run, command: list[str]) -> None:
    result = cli_here(UNREACHABLE, *command, **{PASSWORD_ENV: random_password()})
    _assert_unreachable(one_error_line(result))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://u@localhost/x", "unsupported database"),
        ("not a url", "not a valid URL"),
        ("memory://", "need PostgreSQL or SQLite"),
        ("sqlite:///./x.db?connection_limit=0", "connection_limit"),
        ("redis://localhost", "unsupported database: redis"),
    ],
)
def test_bad_database_url_is_one_line(cli_here: Run, url: str, expected: str) -> None:
    assert expected in one_error_line(cli_here(url, "db", "migrate"))


def test_invalid_settings_are_one_line(cli_here: Run, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    line = one_error_line(cli_here(url, "db", "current", ENVIRONMENT="production", JWT_SECRET=""))
    assert "JWT_SECRET" in line


def test_missing_subcommand_is_a_usage_error(cli_here: Run, tmp_path: Path) -> None:
    result = cli_here(f"sqlite:///{tmp_path / 'x.db'}", "db")
    assert result.returncode == 2
    assert "usage: usermgmt db" in result.stderr


def test_no_random_jwt_secret_warning_from_database_commands(cli_here: Run, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = cli_here(url, "db", "current", JWT_SECRET="", JWT_REFRESH_SECRET="")
    assert ok(result).strip() == "none"


def test_cli_module_imports_no_sqlalchemy() -> None:
    code = (
        "import sys, usermgmt.cli\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic')]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(  # noqa: S603 - fixed arguments
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": os.environ.get("PATH", "")},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- the terminal prompt (in process) ----------------------------------------------------------


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A migrated SQLite database configured through the environment of this process."""
    url = f"sqlite:///{tmp_path / 'prompt.db'}"
    _use_environment(monkeypatch, tmp_path, url)
    migrate.upgrade(url)
    return url


def _prompts(monkeypatch: pytest.MonkeyPatch, *answers: str) -> list[str]:
    asked: list[str] = []
    replies = iter(answers)

    def fake_getpass(prompt: str = "Password: ", stream: Any = None) -> str:
        asked.append(prompt)
        return next(replies)

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    return asked


def test_prompt_twice_on_a_terminal(
    in_process: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    password = random_password()
    asked = _prompts(monkeypatch, password, password)
    assert main(["create-superuser", "--email", "tty@example.com"]) == 0
    assert len(asked) == 2
    out, err = capsys.readouterr()
    assert "created superuser tty@example.com" in out
    assert password not in out + err
    assert count(in_process, "users") == 1


def test_prompt_mismatch_is_refused(
    in_process: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _prompts(monkeypatch, random_password(), random_password())
    assert main(["create-superuser", "--email", "tty@example.com"]) == 2
    assert capsys.readouterr().err.strip() == "usermgmt: error: the passwords do not match"
    assert count(in_process, "users") == 0
