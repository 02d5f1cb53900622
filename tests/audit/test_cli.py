"""``usermgmt audit archive|verify|export``: in this process on SQLite, and as
``python -m usermgmt`` on PostgreSQL; exit codes 0 / 1 (a problem) / 2 (bad input)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.audit.conftest import T0, Tamper, append, hours
from tests.sql.test_cli import Run, _pg, cli, cli_here  # noqa: F401 - fixtures
from usermgmt.backends.sqlalchemy import SqlUnitOfWorkFactory, migrate
from usermgmt.cli_audit import ProgressBar
from usermgmt.ids import new_id
from usermgmt.services.archive import archive_key

pytestmark = pytest.mark.sql


@pytest.fixture
def scene(tmp_path: Path) -> tuple[str, dict[str, str], list, list]:
    """A migrated SQLite database with an old (archivable) and a young organization
    trail, and the environment selecting local archive storage."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    migrate.upgrade(url)
    factory = SqlUnitOfWorkFactory(url)
    org, young = new_id(), new_id()
    old_events = append(factory, org, hours(T0, 6, step=12))  # 3 days of January 2026
    now = datetime.now(UTC).replace(microsecond=0)
    young_events = append(factory, org, [now - timedelta(days=1)])
    young_events += append(factory, young, [now - timedelta(hours=1)])
    factory.dispose()
    env = {"STORAGE_BACKEND": "local", "STORAGE_LOCAL_PATH": str(tmp_path / "archive")}
    return url, env, old_events, young_events


def test_archive_verify_export(cli_here: Run, scene, tmp_path: Path) -> None:  # noqa: F811
    url, env, old, young = scene
    org = str(old[0].organization_id)

    dry = cli_here(url, "audit", "archive", "--dry-run", **env)
    assert dry.returncode == 0, dry.stderr
    assert "would archive 6 event(s)" in dry.stdout
    assert "in 3 object(s)" in dry.stdout
    assert not (tmp_path / "archive" / "audit").exists()
    assert "\r" not in dry.stderr  # no progress bar when stderr is not a terminal

    done = cli_here(url, "audit", "archive", **env)
    assert done.returncode == 0, done.stderr
    assert "archived 6 event(s)" in done.stdout
    key = archive_key(org, T0.date(), 1, 2)
    assert (tmp_path / "archive" / key).is_file()

    verified = cli_here(url, "audit", "verify", **env)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout == ""
    assert "2 chain(s) checked, intact: 6 archived and 2 database event(s)" in verified.stderr

    exported = cli_here(url, "audit", "export", "--org", org, **env)
    assert exported.returncode == 0, exported.stderr
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [r["seq"] for r in records] == list(range(1, 8))
    assert [r["id"] for r in records] == [str(e.id) for e in old + young[:1]]

    window = cli_here(
        url,
        "audit",
        "export",
        "--org",
        org,
        "--since",
        "2026-01-02T00:00:00Z",
        "--until",
        "2026-01-03T00:00:00+00:00",
        **env,
    )
    assert window.returncode == 0, window.stderr
    assert [json.loads(x)["seq"] for x in window.stdout.splitlines()] == [3, 4]


def test_verify_exits_1_with_one_line_per_broken_chain(cli_here: Run, scene) -> None:  # noqa: F811
    url, env, old, young = scene
    factory = SqlUnitOfWorkFactory(url)
    Tamper(factory).modify(old[2], "forged")
    Tamper(factory).delete(young[1])
    factory.dispose()

    result = cli_here(url, "audit", "verify", **env)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert any(f"seq 3: event {old[2].id} was modified" in line for line in lines)
    assert any("chain ends at seq 0 but its head says 1" in line for line in lines)
    assert "2 broken" in result.stderr

    one = cli_here(url, "audit", "verify", "--org", str(old[0].organization_id), **env)
    assert one.returncode == 1
    assert len(one.stdout.splitlines()) == 1
    clean = cli_here(url, "audit", "verify", "--org", "platform", **env)
    assert clean.returncode == 0

    refused = cli_here(url, "audit", "archive", **env)
    assert refused.returncode == 1
    assert "broken chain, not archived" in refused.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["verify", "--org", "nope"], "not an organization id"),
        (["export", "--org", "nope"], "not an organization id"),
        (["export", "--org", "platform", "--since", "2026-01-01"], "needs a timezone"),
        (["export", "--org", "platform", "--until", "tomorrow"], "not an ISO 8601 time"),
        (
            [
                "export",
                "--org",
                "platform",
                "--since",
                "2026-02-01T00:00Z",
                "--until",
                "2026-01-01T00:00Z",
            ],
            "--since must be before --until",
        ),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    cli_here: Run,  # noqa: F811
    scene,
    args: list[str],
    message: str,
) -> None:
    url, env, _, _ = scene
    result = cli_here(url, "audit", *args, **env)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("usermgmt: error: ")
    assert message in line


def test_archive_needs_a_migrated_database(cli_here: Run, tmp_path: Path) -> None:  # noqa: F811
    result = cli_here(f"sqlite:///{tmp_path / 'empty.db'}", "audit", "archive")
    assert result.returncode == 2
    assert "run 'usermgmt db migrate' first" in result.stderr


def test_a_foreign_object_under_the_key_fails_the_run(
    cli_here: Run,  # noqa: F811
    scene,
    tmp_path: Path,
) -> None:
    url, env, old, _ = scene
    key = archive_key(str(old[0].organization_id), T0.date(), 1, 2)
    path = tmp_path / "archive" / key
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not ours")
    result = cli_here(url, "audit", "archive", **env)
    assert result.returncode == 1
    assert "refusing to archive over it" in result.stderr
    assert path.read_bytes() == b"not ours"


def test_python_m_usermgmt_on_postgresql(
    request: pytest.FixtureRequest,
    cli: Run,  # noqa: F811
    tmp_path: Path,
) -> None:
    url = _pg(request)
    migrate.upgrade(url)
    factory = SqlUnitOfWorkFactory(url)
    org = new_id()
    append(factory, org, hours(T0, 3))
    factory.dispose()
    env = {"STORAGE_BACKEND": "local", "STORAGE_LOCAL_PATH": str(tmp_path / "archive")}
    archived = cli(url, "audit", "archive", **env)
    assert archived.returncode == 0, archived.stderr
    assert "archived 3 event(s)" in archived.stdout
    verified = cli(url, "audit", "verify", "--org", str(org), **env)
    assert verified.returncode == 0, verified.stderr
    exported = cli(url, "audit", "export", "--org", str(org), **env)
    assert len(exported.stdout.splitlines()) == 3


def test_progress_bar() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, width=10)
    bar(0, 200)
    bar(50, 200)
    bar(200, 200)
    bar.close()
    assert out.getvalue() == (
        "\r[..........]   0%  0/200 events"
        "\r[##........]  25%  50/200 events"
        "\r[##########] 100%  200/200 events\n"
    )
    empty = io.StringIO()
    ProgressBar(empty).close()
    assert empty.getvalue() == ""
