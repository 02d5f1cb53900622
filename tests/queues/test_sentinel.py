"""Queues on a Sentinel-managed Redis: ``QUEUE_REDIS_URL=redis+sentinel://…`` for the
application and for a real worker subprocess (a real redis-sentinel on loopback)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.queues.conftest import Child, SmtpSink, wait_for
from tests.redis.conftest import RedisProcess, free_port, unavailable
from usermgmt.backends.queue import rq as rq_backend
from usermgmt.backends.queue.rq import RQQueue
from usermgmt.config import Settings
from usermgmt.errors import ConfigurationError

SERVICE = "queues"


@pytest.fixture
def sentinel_url(queue_redis: RedisProcess, redis_url: str) -> Iterator[str]:
    """A redis-sentinel watching the test's redis-server as ``queues``."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed")
    directory = Path(tempfile.mkdtemp(prefix="usermgmt-sentinel-"))
    port = free_port()
    config = directory / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {queue_redis.port} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 5000\n"
    )
    process = subprocess.Popen(  # noqa: S603 - our own command line
        [binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    try:

        def knows_primary() -> Any:
            try:
                return client.sentinel_get_master_addr_by_name(SERVICE)
            except redis.RedisError:
                return None

        wait_for(knows_primary, 15, "the sentinel")
        yield f"redis+sentinel://127.0.0.1:{port}/{SERVICE}/0"
    finally:
        client.close()
        process.kill()
        process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def test_mail_goes_through_a_sentinel_managed_redis(
    sentinel_url: str,
    env: dict[str, str],
    start_worker: Callable[..., Child],
    make_um: Callable[..., Any],
    smtp_sink: SmtpSink,
    client: Any,
) -> None:
    env["QUEUE_REDIS_URL"] = sentinel_url
    start_worker("email")
    um = make_um()
    queue = um.backends.queue
    assert isinstance(queue, RQQueue)

    um.users.register("ines@example.com", "correct horse battery staple")

    (message,) = smtp_sink.wait(1)
    assert message["To"] == "ines@example.com"
    assert queue.health()["email"] is True
    assert queue.description == f"the queue Redis at {sentinel_url}"
    assert client.exists("rq:queue:email") == 0  # drained, on the primary the sentinel named
    assert client.exists("rq:workers:email") == 1


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://127.0.0.1:26379",  # no service name
        "redis+sentinel://127.0.0.1/queues",  # no port
        "redis+sentinel://127.0.0.1:26379/queues/x",  # db not a number
    ],
)
def test_malformed_sentinel_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="redis\\+sentinel://"):
        rq_backend.build(Settings.for_tests(queue_redis_url=url))


def test_sentinel_url_parts() -> None:
    assert rq_backend.sentinel_parts("rediss+sentinel://u:p%40ss@a:1,b:2/svc/3") == (
        [("a", 1), ("b", 2)],
        "svc",
        3,
        "u",
        "p@ss",
        True,
    )
    assert rq_backend.redact("redis+sentinel://:secret@a:1,b:2/svc/0") == (
        "redis+sentinel://a:1,b:2/svc/0"
    )
