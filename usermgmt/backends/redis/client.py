"""One Redis connection for every Redis backend: the client from ``REDIS_URL``, the key
prefix, Lua scripts, error translation and a circuit breaker.

URLs:

* ``redis://[user:password@]host:port[/db]`` and ``rediss://…`` (TLS): a standalone server;
* ``redis+cluster://[user:password@]host:port,host:port,…`` (``rediss+cluster://`` for TLS),
  or a ``redis://`` URL with ``REDIS_CLUSTER=true``: a Redis Cluster, discovered from
  these startup nodes.

Every call has short socket and connect timeouts (``REDIS_SOCKET_TIMEOUT_SECONDS``) and
no client-side retries: a Redis that is down or hangs costs one timeout, then the
backends take their fallback paths (SECURITY.md §4A, F1-F5). After a failure the
circuit breaker answers "unavailable" at once for ``breaker_cooldown_seconds``; then
one caller probes the server again while the others keep failing fast.

Every exception of the driver becomes :class:`~usermgmt.errors.BackendUnavailable`
(chained with ``from``), so the services only ever see that one error.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import SplitResult, urlsplit, urlunsplit

from usermgmt.errors import BackendUnavailable, ConfigurationError

if TYPE_CHECKING:
    from redis import Redis
    from redis.cluster import RedisCluster

    from usermgmt.config import Settings

__all__ = [
    "DEFAULT_PREFIX",
    "CircuitBreaker",
    "RedisConnection",
    "WrongValue",
    "clean_url",
    "connect",
    "hash_tag",
    "make_client",
]

try:  # metrics: the observability hooks (standard library only), when present
    from usermgmt.observability import hooks as _hooks
except ImportError:  # pragma: no cover - an install without the observability package
    _hooks = None  # type: ignore[assignment]

T = TypeVar("T")

logger = logging.getLogger("usermgmt.redis")

#: Every key usermgmt writes starts with this.
DEFAULT_PREFIX = "um:"

#: How long the breaker keeps answering "unavailable" without touching the network.
DEFAULT_BREAKER_COOLDOWN_SECONDS = 1.0

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def hash_tag(value: str) -> str:
    """``value`` as a Redis Cluster hash tag: braces are replaced so the tag stays whole."""
    return "{" + value.replace("{", "(").replace("}", ")") + "}"


class CircuitBreaker:
    """Fail fast for a while after a failure, then let one probe through.

    ``allow()`` says whether a call may touch the network; callers report the outcome
    with ``success()`` or ``failure()``. Thread-safe; time is ``time.monotonic``
    (an operational timer, not the application clock).
    """

    def __init__(self, cooldown_seconds: float = DEFAULT_BREAKER_COOLDOWN_SECONDS) -> None:
        self.cooldown_seconds = cooldown_seconds
        self._open_until = 0.0
        self._probing = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        """True while failures keep the breaker from calling Redis."""
        return self._open_until > 0.0

    def allow(self) -> bool:
        if self._open_until == 0.0:
            return True  # closed: the common path takes no lock
        with self._lock:
            if self._open_until == 0.0:
                return True
            if time.monotonic() < self._open_until or self._probing:
                return False
            self._probing = True  # half-open: this caller probes, the others fail fast
            return True

    def success(self) -> None:
        if self._open_until != 0.0 or self._probing:
            with self._lock:
                self._open_until = 0.0
                self._probing = False

    def failure(self) -> None:
        with self._lock:
            self._open_until = time.monotonic() + self.cooldown_seconds
            self._probing = False

    def reset(self) -> None:
        """Close the breaker (tests, or after an operator fixed Redis)."""
        self.success()


class WrongValue(ValueError):
    """Redis answered, but the stored value does not fit the operation (not a failure)."""


class RedisConnection:
    """A Redis or Redis Cluster client shared by the Redis backends.

    ``factory`` builds the driver client; it is called lazily, on first use, so an
    application starts (degraded) while Redis is down, and a Cluster whose discovery
    failed is discovered again on a later call.
    """

    def __init__(
        self,
        factory: Callable[[], Redis | RedisCluster],
        *,
        cluster: bool,
        prefix: str = DEFAULT_PREFIX,
        breaker: CircuitBreaker | None = None,
        description: str = "redis",
    ) -> None:
        self._factory = factory
        self.cluster = cluster
        self.prefix = prefix
        self.breaker = breaker or CircuitBreaker()
        self.description = description
        self._client: Redis | RedisCluster | None = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        kind = "cluster" if self.cluster else "standalone"
        return f"RedisConnection({self.description!r}, {kind}, prefix={self.prefix!r})"

    # --- keys -----------------------------------------------------------------------------

    def key(self, namespace: str, name: str) -> str:
        """``<prefix><namespace>:{<name>}``: one hash slot per ``name``."""
        return f"{self.prefix}{namespace}:{hash_tag(name)}"

    # --- calls ----------------------------------------------------------------------------

    @property
    def client(self) -> Redis | RedisCluster:
        """The driver client, built on first use (may raise a driver error)."""
        client = self._client
        if client is None:
            with self._client_lock:
                client = self._client
                if client is None:
                    client = self._client = self._factory()
        return client

    def run(
        self, operation: Callable[[Any], T], *, command: str = "OTHER", use_breaker: bool = True
    ) -> T:
        """``operation(client)``; any driver error becomes BackendUnavailable.

        While the breaker is open this raises at once, without touching the network.
        ``command`` names the operation for the ``redis_operation_duration_seconds`` metric.
        """
        if use_breaker and not self.breaker.allow():
            raise BackendUnavailable("Redis is unavailable (circuit open).")
        answered = False
        started = time.perf_counter()
        try:
            result = operation(self.client)
            answered = True
        except WrongValue:
            answered = True  # the server answered; the stored value was wrong
            raise
        except BackendUnavailable:
            raise
        except Exception as exc:
            raise BackendUnavailable(f"Redis is unavailable ({type(exc).__name__}).") from exc
        finally:
            # anything else, even an interrupt, counts as a failure: a half-open probe
            # must always be answered or the breaker would stay shut
            if answered:
                self.breaker.success()
            else:
                self.breaker.failure()
            if _hooks is not None:
                _hooks.observe_redis(command, time.perf_counter() - started)
        return result

    def script(self, source: str) -> LuaScript:
        """A Lua script run with EVALSHA (EVAL when the server does not know it yet)."""
        return LuaScript(source)

    def eval(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run ``script`` on the keys' node (all keys must share a hash slot on a Cluster)."""
        return self.run(lambda client: script.call(client, keys, args), command="EVALSHA")

    def ping(self) -> None:
        """One round trip; bypasses the breaker and closes it on success. Raises BackendUnavailable."""
        self.run(lambda client: client.ping(), command="PING", use_breaker=False)

    def server_version(self) -> str:
        """``redis_version`` of the server (of one node on a Cluster)."""

        def version(client: Any) -> str:
            if self.cluster:
                node = client.get_default_node()
                info = client.info("server", target_nodes=node)
            else:
                info = client.info("server")
            return str(info["redis_version"])

        return self.run(version, command="INFO", use_breaker=False)

    def close(self) -> None:
        """Close the connections (the connection can be used again afterwards)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing a broken client must not fail
                client.close()


class LuaScript:
    """A Lua script and its SHA1; runs with EVALSHA, falling back to EVAL on NOSCRIPT
    (after a server restart or failover, or on a Cluster node that never saw it)."""

    def __init__(self, source: str) -> None:
        import hashlib

        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def call(self, client: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        from redis.exceptions import NoScriptError

        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)


# --- clients from settings -------------------------------------------------------------------

#: Query options that REDIS_SOCKET_TIMEOUT_SECONDS and the no-retry policy own.
_OWNED_OPTIONS = frozenset(
    {"socket_timeout", "socket_connect_timeout", "retry", "retry_on_timeout", "retry_on_error"}
)


def _connection_options() -> frozenset[str]:
    """The query options redis-py understands (keyword arguments of its connections)."""
    import inspect

    from redis.connection import Connection, SSLConnection

    names = {"db"}
    for cls in (Connection, SSLConnection):
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is not None:
                names.update(inspect.signature(init).parameters)
    return frozenset(names - {"self", "args", "kwargs"} - _OWNED_OPTIONS)


def clean_url(url: str) -> tuple[str, list[str]]:
    """``url`` without the query options redis-py would refuse or that we own; the names
    of the options dropped. The seed's ioredis options (``maxRetriesPerRequest``,
    ``retryStrategy``) mean nothing here: timeouts come from REDIS_SOCKET_TIMEOUT_SECONDS
    and there are no client retries (the fallbacks take over at once)."""
    parts = urlsplit(url)
    if not parts.query:
        return url, []
    from urllib.parse import parse_qsl, urlencode

    known = _connection_options()
    kept: list[tuple[str, str]] = []
    dropped: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        (kept if name in known else dropped).append((name, value))
    cleaned = urlunsplit(parts._replace(query=urlencode(kept)))
    return cleaned, sorted({name for name, _ in dropped})


def _cluster_startup(url: str) -> tuple[str, list[tuple[str, int]]]:
    """``redis+cluster://u:p@h1:p1,h2:p2/?q`` → (``redis://u:p@h1:p1/?q``, [(h1, p1), (h2, p2)])."""
    parts = urlsplit(url)
    scheme = _CLUSTER_SCHEMES[parts.scheme]
    userinfo, _, hosts = parts.netloc.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            host, port = item, "6379"
        nodes.append((host.strip("[]"), int(port)))
    if not nodes:
        raise ConfigurationError("REDIS_URL: a redis+cluster:// URL needs at least one host:port")
    first_host, first_port = nodes[0]
    host = f"[{first_host}]" if ":" in first_host else first_host
    netloc = f"{userinfo}@{host}:{first_port}" if userinfo else f"{host}:{first_port}"
    single = urlunsplit(SplitResult(scheme, netloc, parts.path, parts.query, ""))
    return single, nodes


def make_client(
    url: str,
    *,
    cluster: bool = False,
    socket_timeout: float = 0.25,
    connect_timeout: float | None = None,
) -> Redis | RedisCluster:
    """A redis-py client for ``url`` with short timeouts and no client-side retries."""
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.retry import Retry

    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", *_CLUSTER_SCHEMES):
        raise ConfigurationError(
            "REDIS_URL must start with redis://, rediss://, redis+cluster:// or rediss+cluster://"
        )
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout or socket_timeout,
        "decode_responses": True,
        "health_check_interval": 0,
    }
    if scheme in _CLUSTER_SCHEMES or cluster:
        startup: list[tuple[str, int]] = []
        if scheme in _CLUSTER_SCHEMES:
            url, startup = _cluster_startup(url)
        return RedisCluster(
            url=url,
            startup_nodes=[
                ClusterNode(host, port)  # type: ignore[no-untyped-call]
                for host, port in startup[1:]
            ],
            retry=Retry(NoBackoff(), 0),
            require_full_coverage=True,
            **options,
        )
    return Redis.from_url(url, retry=Retry(NoBackoff(), 0), **options)


def connect(settings: Settings, *, prefix: str = DEFAULT_PREFIX) -> RedisConnection:
    """The shared connection for ``REDIS_URL`` (built lazily; never touches the network here)."""
    url = settings.redis_url
    if not url:
        raise ConfigurationError("REDIS_URL is not set")
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", *_CLUSTER_SCHEMES):
        raise ConfigurationError(
            "REDIS_URL must start with redis://, rediss://, redis+cluster:// or rediss+cluster://"
        )
    cluster = settings.redis_cluster or scheme in _CLUSTER_SCHEMES
    timeout = settings.redis_socket_timeout_seconds
    url, dropped = clean_url(url)
    if dropped:
        logger.warning(
            "REDIS_URL: ignoring the query options %s (timeouts come from "
            "REDIS_SOCKET_TIMEOUT_SECONDS; Redis calls are never retried)",
            ", ".join(dropped),
        )
    parts = urlsplit(url)
    safe = parts.hostname or "?"
    return RedisConnection(
        lambda: make_client(url, cluster=cluster, socket_timeout=timeout),
        cluster=cluster,
        prefix=prefix,
        description=f"{parts.scheme}://{safe}",
    )
