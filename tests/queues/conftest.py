"""Fixtures for the queue tests: a private redis-server (emptied for each test), a
migrated SQLite file database, an SMTP sink that can go down and come back on the same
port, and ``usermgmt worker`` / ``usermgmt schedule`` subprocesses (stopped with
SIGTERM, killed only if they hang)."""

from __future__ import annotations

import email
import email.policy
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage as MimeMessage
from pathlib import Path
from typing import Any

import pytest

from tests.email import free_port
from tests.redis.conftest import RedisProcess, private_redis, unavailable

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.queues._app:make"

#: Settings shared by the test process and its subprocesses (as environment variables).
BASE = {
    "ENVIRONMENT": "test",
    "STORAGE_BACKEND": "memory",
    "QUEUE_BACKEND": "rq",
    "EMAIL_PROVIDER": "smtp",
    "EMAIL_FROM": "Example <no-reply@example.com>",
    "PASSWORD_ARGON2_MEMORY_KIB": "1024",
    "PASSWORD_ARGON2_TIME_COST": "1",
    "PASSWORD_ARGON2_PARALLELISM": "1",
    "QUEUE_RETRY_MAX_ATTEMPTS": "10",
    "QUEUE_RETRY_BACKOFF_SECONDS": "1",
    "QUEUE_WORKER_TTL_SECONDS": "20",
    "QUEUE_EMAIL_FAILED_THRESHOLD": "1",
    "LOG_FORMAT": "console",
}


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


# --- redis ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def queue_redis() -> Iterator[RedisProcess]:
    try:
        import redis  # noqa: F401
        import rq  # noqa: F401
    except ImportError:
        unavailable('rq and redis are needed (pip install "usermgmt[rq]")')
    try:
        with private_redis() as server:
            yield server
    except RuntimeError as exc:
        unavailable(f"could not start redis-server: {exc}")


@pytest.fixture
def redis_url(queue_redis: RedisProcess) -> str:
    import redis

    client = redis.Redis.from_url(queue_redis.url, socket_timeout=5)
    client.flushall()
    client.close()
    return queue_redis.url


@pytest.fixture
def client(redis_url: str) -> Iterator[Any]:
    import redis

    connection = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield connection
    connection.close()


# --- smtp ----------------------------------------------------------------------------------


@dataclass
class SmtpSink:
    """An aiosmtpd server on a fixed port that the test stops and starts again."""

    port: int
    messages: list[MimeMessage] = field(default_factory=list)
    controller: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, MimeMessage)
        self.messages.append(parsed)
        return "250 OK"

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?timeout=5"

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        controller, self.controller = self.controller, None
        if controller is not None:
            controller.stop()

    def wait(self, count: int = 1, timeout: float = 15.0) -> list[MimeMessage]:
        wait_for(lambda: len(self.messages) >= count, timeout, f"{count} message(s)")
        return self.messages


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A running sink (``stop()`` it to simulate an outage)."""
    sink = SmtpSink(free_port())
    sink.start()
    yield sink
    sink.stop()


# --- database and settings -----------------------------------------------------------------


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    from usermgmt.backends.sqlalchemy import migrate

    url = f"sqlite:///{tmp_path / 'usermgmt.db'}"
    migrate.upgrade(url, "head")
    return url


@pytest.fixture
def env(redis_url: str, database_url: str, smtp_sink: SmtpSink) -> dict[str, str]:
    """The settings of this test, as environment variables (tests may change them)."""
    values = dict(BASE)
    values.update(
        {
            "DATABASE_URL": database_url,
            "QUEUE_REDIS_URL": redis_url,
            "SMTP_URL": smtp_sink.url,
            "JWT_SECRET": secrets.token_urlsafe(48),
            "JWT_REFRESH_SECRET": secrets.token_urlsafe(48),
        }
    )
    return values


def settings_from(env: dict[str, str], **overrides: Any) -> Any:
    from usermgmt.config import Settings

    values: dict[str, Any] = {name.lower(): value for name, value in env.items()}
    values.update(overrides)
    return Settings.for_tests(**values)


@pytest.fixture
def make_um(env: dict[str, str]) -> Iterator[Callable[..., Any]]:
    """``make_um(**overrides)``: a UserManagement in this process on the test's settings."""
    from usermgmt import UserManagement

    made: list[Any] = []

    def make(**overrides: Any) -> Any:
        um = UserManagement(settings_from(env, **overrides))
        um.seed()
        made.append(um)
        return um

    yield make
    for um in made:
        um.close()


# --- subprocesses ----------------------------------------------------------------------------


def child_env(env: dict[str, str], extra: dict[str, str] | None = None) -> dict[str, str]:
    values = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("REDIS", "QUEUE_", "DATABASE", "SMTP", "EMAIL", "PROMETHEUS"))
    }
    values.update(env)
    values.update(extra or {})
    values["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), values.get("PYTHONPATH")]))
    return values


@dataclass
class Child:
    """A ``python -m usermgmt …`` subprocess; its output goes to a file."""

    process: subprocess.Popen[bytes]
    log: Path

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise AssertionError(f"did not stop on SIGTERM:\n{self.output[-3000:]}") from None


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """``spawn(env, *args)``: start ``python -m usermgmt *args``; stopped after the test."""
    children: list[Child] = []

    def start(env: dict[str, str], *args: str, extra: dict[str, str] | None = None) -> Child:
        log = tmp_path / f"child-{len(children)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 - our own command line
                [sys.executable, "-m", "usermgmt", *args],
                env=child_env(env, extra),
                cwd=tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        child = Child(process, log)
        children.append(child)
        return child

    yield start
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(10)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait(5)


def workers_alive(redis_url: str, queue: str) -> int:
    from usermgmt.backends.queue.rq import close_client, make_client

    client = make_client(redis_url, socket_timeout=5)
    try:
        from rq import Queue, worker_registration

        keys = worker_registration.get_keys(queue=Queue(queue, connection=client))
        return sum(1 for key in keys if client.exists(key))
    finally:
        close_client(client)


@pytest.fixture
def start_worker(
    env: dict[str, str], spawn: Callable[..., Child], redis_url: str
) -> Callable[..., Child]:
    """``start_worker("email")``: a worker subprocess, returned once it listens."""

    def start(queue: str = "email", *args: str, extra: dict[str, str] | None = None) -> Child:
        child = spawn(env, "worker", queue, "--app", APP, *args, extra=extra)
        name = "email" if queue == "all" else queue

        def ready() -> bool:
            if child.process.poll() is not None:
                raise AssertionError(f"the worker exited:\n{child.output[-3000:]}")
            return workers_alive(redis_url, name) > 0

        wait_for(ready, 30, "the worker to register")
        return child

    return start


@pytest.fixture
def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> Callable[..., tuple[int, str]]:
    """``run_cli(env, *args)``: ``usermgmt *args`` in this process (for quick error paths);
    returns the exit status and what it printed."""
    from usermgmt.cli import main

    def run(env: dict[str, str], *args: str) -> tuple[int, str]:
        for name in list(os.environ):
            if name.startswith(("REDIS", "QUEUE_", "DATABASE", "SMTP", "EMAIL")):
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)  # no .env file
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return run
