"""Fixtures for the Redis backends: a real redis-server and a real Redis Cluster.

``redis_server`` (session) is ``USERMGMT_TEST_REDIS_URL`` when set; otherwise a private
``redis-server`` on a free loopback port below 32768, without persistence.
``redis_cluster`` (session) is ``USERMGMT_TEST_REDIS_CLUSTER_URL`` when set; otherwise six
private nodes (three primaries, three replicas) on loopback ports below 22768 (a node's
cluster bus is its port + 10000) joined with ``redis-cli --cluster create``, ready when
every node reports ``cluster_state:ok``. ``redis_process`` starts a throwaway server the
test may stop, pause (SIGSTOP) or put behind a slow proxy.

When a server cannot be had the tests skip, or fail under ``CI=true``. Each test starts
on empty servers (FLUSHALL on every primary), and with the degradation counters cleared.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from usermgmt.backends.redis import RedisConnection, connect, monitor
from usermgmt.clock import FakeClock
from usermgmt.config import Settings
from usermgmt.testing.contracts import AdvanceTime

ENV_URL = "USERMGMT_TEST_REDIS_URL"
ENV_CLUSTER_URL = "USERMGMT_TEST_REDIS_CLUSTER_URL"


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail under CI=true: a missing server must never pass silently in CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"Redis is required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(low: int = 20000, high: int = 32000, *, bus: bool = False) -> int:
    """A free loopback port in [low, high]; with ``bus`` also port + 10000 (cluster nodes)."""
    for _ in range(300):
        port = random.randint(low, high)
        if _port_free(port) and (not bus or _port_free(port + 10000)):
            return port
    raise RuntimeError(f"no free port in {low}-{high}")


def _redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    return binary


def _ping(port: int, timeout: float) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return True
            except redis.RedisError:
                time.sleep(0.02)
        return False
    finally:
        client.close()


@dataclass
class RedisProcess:
    """A redis-server this test session started; it can be stopped, paused and restarted."""

    port: int
    directory: Path
    extra: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    paused: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            _redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.directory / "redis.log"),
            *self.extra,
        ]
        self.process = subprocess.Popen(  # noqa: S603 - our own command line
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.paused = False
        if not _ping(self.port, 10):
            self.stop()
            log = self.directory / "redis.log"
            tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
            raise RuntimeError(f"redis-server on port {self.port} did not start: {tail}")

    def stop(self) -> None:
        """Kill the server (it is gone: connections are refused)."""
        process, self.process = self.process, None
        if process is None:
            return
        if self.paused:
            process.send_signal(signal.SIGCONT)
            self.paused = False
        process.kill()
        process.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def private_redis(*extra: str) -> Iterator[RedisProcess]:
    directory = Path(tempfile.mkdtemp(prefix="usermgmt-redis-"))
    server: RedisProcess | None = None
    try:
        last: Exception | None = None
        for _ in range(5):
            candidate = RedisProcess(free_port(), directory, extra)
            try:
                candidate.start()
            except RuntimeError as exc:  # the port was taken in between: try another one
                last = exc
                continue
            server = candidate
            break
        if server is None:
            raise RuntimeError(str(last))
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class RedisCluster:
    """A Redis Cluster the tests may use; ``url`` is a ``redis+cluster://`` URL."""

    url: str
    version: str
    nodes: list[RedisProcess] = field(default_factory=list)


@contextlib.contextmanager
def private_cluster(size: int = 6) -> Iterator[RedisCluster]:
    redis_cli = shutil.which("redis-cli")
    if redis_cli is None:
        raise RuntimeError("redis-cli is not installed (apt-get install redis-server)")
    root = Path(tempfile.mkdtemp(prefix="usermgmt-redis-cluster-"))
    nodes: list[RedisProcess] = []
    try:
        for index in range(size):
            directory = root / f"node{index}"
            directory.mkdir()
            for _ in range(5):
                used = {n.port for n in nodes}
                port = free_port(12000, 22000, bus=True)
                if port in used:
                    continue
                node = RedisProcess(
                    port,
                    directory,
                    (
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(directory / "nodes.conf"),
                        "--cluster-node-timeout",
                        "2000",
                    ),
                )
                try:
                    node.start()
                except RuntimeError:
                    continue
                nodes.append(node)
                break
            else:
                raise RuntimeError("could not start a cluster node")
        create = subprocess.run(  # noqa: S603 - our own command line
            [
                redis_cli,
                "--cluster",
                "create",
                *[f"127.0.0.1:{node.port}" for node in nodes],
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {create.stdout[-500:]}")
        _wait_cluster_ok([node.port for node in nodes], timeout=30)
        url = "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in nodes[:3])
        yield RedisCluster(url=url, version=_version(url), nodes=nodes)
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(root, ignore_errors=True)


def _wait_cluster_ok(ports: list[int], timeout: float) -> None:
    import redis

    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        port = pending[0]
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        try:
            state = str(client.cluster("INFO").get("cluster_state", ""))
        except redis.RedisError:
            state = ""
        finally:
            client.close()
        if state == "ok":
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            raise RuntimeError(f"cluster node {port} never reached cluster_state:ok")
        time.sleep(0.1)


def _version(url: str) -> str:
    connection = connect(Settings.for_tests(redis_url=url, redis_socket_timeout_seconds=2))
    try:
        return connection.server_version()
    finally:
        connection.close()


def _announce(config: pytest.Config, message: str) -> None:
    """Print once, past pytest's output capture (the server version belongs in the log)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line(message)


def _require_driver() -> None:
    try:
        import redis  # noqa: F401
    except ImportError:
        unavailable('the redis package is not installed (pip install "usermgmt[redis]")')


# --- session servers ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a real standalone Redis for the session (see the module docstring)."""
    _require_driver()
    given = os.environ.get(ENV_URL)
    if given:
        try:
            version = _version(given)
        except Exception as exc:
            unavailable(f"{ENV_URL} cannot be reached: {exc}")
        _announce(request.config, f"\nRedis (from {ENV_URL}): {version}")
        yield given
        return
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(private_redis())
            version = _version(server.url)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            stack.close()
            unavailable(f"could not start redis-server: {exc}")
        _announce(request.config, f"\nRedis (private server, {server.url}): {version}")
        yield server.url


@pytest.fixture(scope="session")
def redis_cluster(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a real Redis Cluster (3 primaries, 3 replicas) for the session."""
    _require_driver()
    given = os.environ.get(ENV_CLUSTER_URL)
    if given:
        try:
            version = _version(given)
        except Exception as exc:
            unavailable(f"{ENV_CLUSTER_URL} cannot be reached: {exc}")
        _announce(request.config, f"\nRedis Cluster (from {ENV_CLUSTER_URL}): {version}")
        yield given
        return
    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        try:
            cluster = stack.enter_context(private_cluster())
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            stack.close()
            unavailable(f"could not start a Redis Cluster: {exc}")
        _announce(
            request.config,
            f"\nRedis Cluster (6 private nodes, 3 primaries, ready in "
            f"{time.monotonic() - started:.1f}s, {cluster.url}): {cluster.version}",
        )
        yield cluster.url


def flush(url: str) -> None:
    """Empty a standalone server or every primary of a Cluster."""
    connection = connect(Settings.for_tests(redis_url=url, redis_socket_timeout_seconds=5))
    try:
        if connection.cluster:
            from redis.cluster import RedisCluster as Cluster

            connection.run(lambda client: client.flushall(target_nodes=Cluster.PRIMARIES))
        else:
            connection.run(lambda client: client.flushall())
    finally:
        connection.close()


# --- per test -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_monitor() -> Iterator[None]:
    monitor.clear()
    yield
    monitor.clear()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def advance_time(clock: FakeClock) -> AdvanceTime:
    """Redis expires keys in real time: sleep, and move the fake clock along."""

    def advance(seconds: float) -> None:
        time.sleep(seconds)
        clock.advance(seconds=seconds)

    return advance


BACKENDS = [
    pytest.param("standalone", id="standalone"),
    pytest.param("cluster", id="cluster"),
]


@pytest.fixture(params=BACKENDS)
def redis_url(request: pytest.FixtureRequest) -> str:
    """Each Redis kind in turn, emptied for the test."""
    name = "redis_server" if request.param == "standalone" else "redis_cluster"
    url: str = request.getfixturevalue(name)
    flush(url)
    return url


@pytest.fixture
def connection_factory() -> Iterator[Callable[..., RedisConnection]]:
    """``connection_factory(url, **settings)``: a RedisConnection closed after the test."""
    made: list[RedisConnection] = []

    def make(url: str, **settings: Any) -> RedisConnection:
        settings.setdefault("redis_socket_timeout_seconds", 2.0)
        connection = connect(Settings.for_tests(redis_url=url, **settings))
        made.append(connection)
        return connection

    yield make
    for connection in made:
        connection.close()


@pytest.fixture
def redis_connection(
    redis_url: str, connection_factory: Callable[..., RedisConnection]
) -> RedisConnection:
    """A connection to an empty standalone server, then to an empty Cluster."""
    return connection_factory(redis_url)


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    """A throwaway redis-server this test may stop, pause or restart."""
    _require_driver()
    try:
        with private_redis() as server:
            yield server
    except RuntimeError as exc:
        unavailable(f"could not start redis-server: {exc}")


# --- a slow network -------------------------------------------------------------------------


class DelayProxy:
    """A loopback TCP proxy; set ``delay`` (seconds) to hold every chunk that long."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.delay = 0.0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while not self._closed.is_set():
                data = source.recv(65536)
                if not data:
                    break
                if self.delay:
                    time.sleep(self.delay)
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()


@pytest.fixture
def delay_proxy(redis_process: RedisProcess) -> Iterator[DelayProxy]:
    """A proxy in front of ``redis_process`` whose ``delay`` the test sets."""
    proxy = DelayProxy(redis_process.port)
    yield proxy
    proxy.close()
