"""The composition root, the backend registry, ids, clocks and the permission registry."""

from __future__ import annotations

import importlib.util
import itertools
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.unit.core.support import make_secret
from usermgmt import Settings, UserManagement
from usermgmt.backends.memory import ConsoleEmailSender, MemoryEmailSender
from usermgmt.clock import FakeClock, SystemClock
from usermgmt.errors import ConfigurationError, MissingDependency, ValidationError
from usermgmt.ids import new_id
from usermgmt.permissions import SYSTEM_PERMISSIONS, PermissionRegistry

# --- registry and composition root ---------------------------------------------------------


@pytest.mark.parametrize("url", ["mysql://x", "mongodb://db/app", "oracle://x", "nonsense"])
def test_unknown_database_scheme_names_the_accepted_ones(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        UserManagement(Settings.for_tests(database_url=url))
    detail = info.value.detail
    assert "DATABASE_URL" in detail
    for scheme in ("postgresql://", "sqlite://", "memory://"):
        assert scheme in detail
    assert not isinstance(info.value, MissingDependency)


@pytest.fixture
def core_without_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``redis`` look uninstalled (whether it is or not)."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "redis" or name.startswith("redis."):
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.usefixtures("core_without_redis")
@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "redis+cluster://a:7000,b:7001"])
def test_redis_url_without_redis_installed_names_the_extra(url: str) -> None:
    with pytest.raises(MissingDependency) as info:
        UserManagement(Settings.for_tests(redis_url=url))
    assert 'pip install "usermgmt[redis]"' in info.value.detail
    assert info.value.extra_name == "redis"


def test_for_tests_ignores_redis_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # in_memory() promises no server and no network, whatever the developer's shell says
    monkeypatch.setenv("REDIS_URL", "redis://localhost:6379/0")
    monkeypatch.setenv("QUEUE_REDIS_URL", "redis://localhost:6379/1")
    settings = Settings.for_tests()
    assert settings.redis_url is None
    assert settings.queue_redis_url is None
    assert settings.queue_backend == "inline"
    um = UserManagement.in_memory()
    assert isinstance(um.outbox, MemoryEmailSender)


def test_in_memory_refuses_production_settings() -> None:
    settings = Settings(
        _env_file=None,
        environment="production",
        email_provider="smtp",
        smtp_url="smtp://mail.example.com:587",
        jwt_secret=make_secret(40, "a"),
        jwt_refresh_secret=make_secret(40, "b"),
    )
    with pytest.raises(ConfigurationError, match="production"):
        UserManagement.in_memory(settings)


def test_in_memory_forces_the_memory_database() -> None:
    um = UserManagement.in_memory(Settings.for_tests(database_url="sqlite:///never.db"))
    assert um.settings.database_url.startswith("memory:")
    assert not Path("never.db").exists()


def test_from_env_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, core_secrets: Any
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env; local storage lands here
    core_secrets()
    monkeypatch.setenv("ENVIRONMENT", "test")
    monkeypatch.setenv("DATABASE_URL", "memory://")
    monkeypatch.setenv("APP_NAME", "From Env")
    monkeypatch.setenv("APP_PERMISSIONS", "project:read,project:write")
    monkeypatch.setenv("PASSWORD_ARGON2_MEMORY_KIB", "1024")
    monkeypatch.setenv("PASSWORD_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("PASSWORD_ARGON2_PARALLELISM", "1")
    um = UserManagement.from_env(clock=FakeClock())
    assert um.settings.app_name == "From Env"
    assert um.settings.environment == "test"
    assert um.settings.secret("jwt_secret") == make_secret(40, "access")
    assert "project:write" in um.registry
    assert isinstance(um.clock, FakeClock)
    assert isinstance(um.outbox, MemoryEmailSender)


def test_from_env_raises_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NODE_ENV", "production")
    with pytest.raises(ConfigurationError, match="JWT_SECRET"):
        UserManagement.from_env()


def test_register_permission() -> None:
    um = UserManagement.in_memory()
    before = um.registry.fingerprint
    permission = um.register_permission("project:read", "Read projects")
    assert permission.name == "project:read"
    assert not permission.is_system
    assert "project:read" in um.registry
    assert um.registry.fingerprint != before


@pytest.mark.parametrize(
    "name", ["Project:Read", "project", "project:", ":read", "a:b:c", "pro ject:read", ""]
)
def test_register_permission_bad_name(name: str) -> None:
    um = UserManagement.in_memory()
    with pytest.raises(ValidationError):
        um.register_permission(name)
    assert name not in um.registry


def test_permissions_argument_and_env_are_registered() -> None:
    um = UserManagement.in_memory(
        Settings.for_tests(app_permissions=["billing:view"]),
        permissions=["project:read", ("project:write", "Change projects")],
    )
    names = {p.name for p in um.registry.all()}
    assert {"billing:view", "project:read", "project:write"} <= names


def test_run_task_unknown_name() -> None:
    um = UserManagement.in_memory()
    with pytest.raises(ConfigurationError, match=r"no\.such\.task"):
        um.run_task("no.such.task", {})


def test_run_task_registered() -> None:
    um = UserManagement.in_memory()
    seen: list[Any] = []
    um.register_task("app.ping", lambda payload: seen.append(dict(payload)))
    um.run_task("app.ping", {"n": 1})
    assert seen == [{"n": 1}]


def test_outbox_only_with_memory_email() -> None:
    um = UserManagement.in_memory(Settings.for_tests(email_provider="console"))
    assert isinstance(um.backends.email, ConsoleEmailSender)
    with pytest.raises(ConfigurationError, match="EMAIL_PROVIDER"):
        _ = um.outbox


def test_fake_clock_only_when_given() -> None:
    assert isinstance(UserManagement.in_memory(clock=FakeClock()).fake_clock, FakeClock)
    um = UserManagement.in_memory()
    assert isinstance(um.clock, SystemClock)
    with pytest.raises(ConfigurationError):
        _ = um.fake_clock


# --- ids -----------------------------------------------------------------------------------------


def test_new_id_is_uuid_version_7() -> None:
    before_ms = int(datetime.now(UTC).timestamp() * 1000)
    value = new_id()
    after_ms = int(datetime.now(UTC).timestamp() * 1000)
    assert isinstance(value, uuid.UUID)
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before_ms - 1 <= value.int >> 80 <= after_ms + 1  # 48-bit Unix milliseconds


def test_new_id_strictly_increasing_in_one_thread() -> None:
    ids = [new_id() for _ in range(100_000)]
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert all(i.version == 7 for i in ids[::997])
    # ordered as strings too (the form that lands in text columns and URLs)
    assert [str(i) for i in ids[::1001]] == sorted(str(i) for i in ids[::1001])


def test_new_id_unique_across_threads() -> None:
    results: list[list[uuid.UUID]] = [[] for _ in range(8)]
    barrier = threading.Barrier(8)

    def work(slot: int) -> None:
        barrier.wait(timeout=10)
        out = results[slot]
        for _ in range(10_000):
            out.append(new_id())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads)
    every = [i for chunk in results for i in chunk]
    assert len(every) == 80_000
    assert len(set(every)) == 80_000
    for chunk in results:  # each thread sees its own ids increase
        assert all(a < b for a, b in itertools.pairwise(chunk))


# --- clocks --------------------------------------------------------------------------------------


def test_system_clock_is_utc() -> None:
    now = SystemClock().now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)


def test_fake_clock_advances_only_when_told() -> None:
    clock = FakeClock()
    start = clock.now()
    assert clock.now() == start
    assert clock.advance(seconds=61) == start + timedelta(seconds=61)
    assert clock.advance(timedelta(minutes=1), seconds=1) == start + timedelta(seconds=122)
    assert clock.now().tzinfo is not None


def test_fake_clock_never_goes_backwards() -> None:
    clock = FakeClock()
    start = clock.now()
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(seconds=-1)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(timedelta(seconds=-5))
    with pytest.raises(ValueError, match="backwards"):
        clock.set(start - timedelta(microseconds=1))
    assert clock.now() == start
    clock.set(start)  # standing still is fine
    later = start + timedelta(days=3)
    clock.set(later)
    assert clock.now() == later


def test_fake_clock_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone"):
        FakeClock(datetime(2026, 1, 1, 12, 0))
    clock = FakeClock()
    with pytest.raises(ValueError, match="timezone"):
        clock.set(datetime(2030, 1, 1))


def test_fake_clock_custom_start() -> None:
    start = datetime(2030, 6, 1, tzinfo=UTC)
    assert FakeClock(start).now() == start


# --- permission registry ---------------------------------------------------------------------------


def test_fingerprint_changes_when_a_permission_is_registered() -> None:
    registry = PermissionRegistry()
    first = registry.fingerprint
    registry.register("project:read")
    second = registry.fingerprint
    assert second != first
    registry.register("project:read", "again")  # re-registering changes nothing
    assert registry.fingerprint == second
    registry.register("project:write")
    assert registry.fingerprint not in (first, second)


def test_fingerprint_equal_for_the_same_names() -> None:
    a = PermissionRegistry(["project:read", "project:write"])
    b = PermissionRegistry()
    b.register("project:write", "a description does not matter")
    b.register("project:read")
    assert a.fingerprint == b.fingerprint
    assert a.names() == b.names()
    assert PermissionRegistry().fingerprint == PermissionRegistry().fingerprint
    assert PermissionRegistry(["x:y"]).fingerprint != a.fingerprint


def test_registry_holds_the_system_permissions() -> None:
    registry = PermissionRegistry()
    assert registry.names() == frozenset(SYSTEM_PERMISSIONS)
    assert all(p.is_system for p in registry.all())
    assert registry.system_role_permissions("owner") == registry.names()
    registry.register("project:read")
    assert "project:read" in registry.system_role_permissions("owner")
    assert "project:read" in registry.system_role_permissions("admin")
    assert "organization:delete" not in registry.system_role_permissions("admin")
    assert "project:read" not in registry.system_role_permissions("member")


def test_registry_bad_name_rejected() -> None:
    with pytest.raises(ValidationError):
        PermissionRegistry(["Bad:Name"])
