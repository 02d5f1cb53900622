"""The examples as real servers: ``examples/fastapi_app.py`` under uvicorn and
``examples/flask_app.py`` under gunicorn with two workers, each in its own subprocess
on a temporary SQLite database, migrated at start. Both answer ``/health``; under
gunicorn ``/metrics`` merges the counts of both workers (prometheus multiprocess mode).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
STARTUP_TIMEOUT = 30.0

pytestmark = pytest.mark.integration


def _require(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        if os.environ.get("CI") == "true":  # under CI a missing server fails, never skips
            pytest.fail(f"{module} is not installed (pip install -e .[{extra}])")
        pytest.skip(f"needs {module}")


def _free_port() -> int:
    """A free loopback port below 32768 (the kernel's outgoing range starts there)."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32768")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, bytes, str]:
        request = urllib.request.Request(  # noqa: S310 - http on loopback
            self.base + path, headers={"Connection": "close"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
                return response.status, response.read(), response.headers["Content-Type"]
        except urllib.error.HTTPError as error:
            return error.code, error.read(), error.headers["Content-Type"]

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def _wait_healthy(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last: object = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"the server exited with {server.process.returncode}:\n{server.output()}")
        try:
            status, _, _ = server.get("/health")
        except OSError as error:  # not listening yet
            last = error
        else:
            if status == 200:
                return
            last = status
        time.sleep(0.2)
    pytest.fail(f"/health did not answer 200 within {STARTUP_TIMEOUT:.0f} s ({last!r}):\n"
                f"{server.output()}")  # fmt: skip


@contextlib.contextmanager
def serve(args: list[str], tmp_path: Path, **env: str) -> Iterator[Server]:
    port = _free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'usermgmt.db'}",
        "JWT_SECRET": secrets.token_urlsafe(48),  # one for every worker
        "JWT_REFRESH_SECRET": secrets.token_urlsafe(48),
        "ENVIRONMENT": "development",
        "EMAIL_PROVIDER": "console",
        "QUEUE_BACKEND": "inline",
        "USERMGMT_AUTO_MIGRATE": "true",
        "LOG_LEVEL": "info",
        "PYTHONDONTWRITEBYTECODE": "1",
        **env,
    }
    for name in ("REDIS_URL", "QUEUE_REDIS_URL", PROMETHEUS_ENV):
        if name not in env:
            environment.pop(name, None)
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
            [sys.executable, "-m", *[a.format(port=port) for a in args]],
            cwd=ROOT,
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, port, log)
    try:
        _wait_healthy(server)
        yield server
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)  # by PID: the server and only it
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


PROMETHEUS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _counter(exposition: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def _json_lines(text: str) -> list[dict[str, object]]:
    documents = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            document = json.loads(line)
            if isinstance(document, dict):
                documents.append(document)
    return documents


def test_the_fastapi_example_under_uvicorn(tmp_path):
    _require("uvicorn", "fastapi")
    args = ["uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1", "--port", "{port}"]
    with serve(args, tmp_path) as server:
        status, body, _ = server.get("/health")
        assert status == 200
        assert json.loads(body)["services"] == {"database": "connected",
                                                "redis": "not_configured"}  # fmt: skip
        status, metrics, content_type = server.get("/metrics")
        assert status == 200
        assert content_type.startswith("text/plain")
        assert b"# TYPE http_requests_total counter" in metrics
        assert b'db_query_duration_seconds_count{operation="SELECT"}' in metrics
    # the server's own records went through usermgmt's JSON formatter
    records = _json_lines(server.output())
    assert any(r.get("logger", "").startswith("uvicorn") for r in records), server.output()
    assert all({"timestamp", "level", "message", "request_id"} <= set(r) for r in records)
    assert server.process.returncode is not None


def test_the_flask_example_under_gunicorn_merges_metrics_of_both_workers(tmp_path):
    _require("gunicorn", "dev")
    _require("prometheus_client", "metrics")
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"stale")  # emptied by the config's on_starting
    args = [
        "gunicorn",
        "-c",
        "examples/gunicorn_conf.py",
        "-w",
        "2",
        "-b",
        "127.0.0.1:{port}",
        "examples.flask_app:app",
    ]
    requests = 40
    # HOME: gunicorn 27 opens a control socket in ~/.gunicorn; keep it in the test's folder
    env = {PROMETHEUS_ENV: str(directory), "HOME": str(tmp_path)}
    with serve(args, tmp_path, **env) as server:
        for _ in range(requests):
            assert server.get("/health/live")[0] == 200
        totals = set()
        for _ in range(6):  # whichever worker answers, it reports every worker's requests
            status, body, content_type = server.get("/metrics")
            assert status == 200
            assert content_type.startswith("text/plain")
            totals.add(
                _counter(
                    body.decode(),
                    "http_requests_total",
                    method="GET",
                    route="/health/live",
                    status="200",
                )
            )
    # read once the server has stopped: a worker may create its files after the last answer
    workers = {path.stem.rsplit("_", 1)[-1] for path in directory.glob("*.db")}
    assert totals == {float(requests)}
    assert "1" not in workers  # the stale file is gone
    assert len(workers) >= 2, sorted(directory.iterdir())  # both workers wrote samples
