"""Instructions per request of the applications in ``apps.py``, in process, under
callgrind: a count that, unlike req/s and CPU time, does not depend on what else the
machine is doing. No server and no sockets: each request is one call of the ASGI or
WSGI application, so the numbers leave out the server's own work (HTTP parsing, the
event loop's I/O), which is the same for the bare app and usermgmt's.

    python benchmarks/http/instructions.py [--requests 100]

needs ``valgrind`` (Debian: ``apt-get install -y valgrind``) and takes several minutes
(Python runs ~50 times slower under callgrind). Each measurement is one ctypes call that
runs the requests: callgrind counts only inside it (``--toggle-collect=ffi_call``) and
writes one dump per call (``--dump-after``); the garbage collector is off meanwhile.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NAMES = (
    "fastapi bare /hello",
    "fastapi /hello",
    "fastapi /users/me",
    "fastapi protected",
    "fastapi protected 2 deps",
    "flask bare /hello",
    "flask /hello",
    "flask /users/me",
    "flask protected",
)


def _asgi(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> Callable[[], int]:
    import asyncio

    loop = asyncio.new_event_loop()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 8000),
    }

    async def once() -> int:
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(dict(scope), receive, send)
        return status[0]

    return lambda: loop.run_until_complete(once())


def _wsgi(app: Any, path: str, token: str | None) -> Callable[[], int]:
    def once() -> int:
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "bench",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "bench",
        }
        if token:
            environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        status: list[int] = []

        def start_response(line: str, headers: Any, exc_info: Any = None) -> None:
            status.append(int(line[:3]))

        body = app(environ, start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
        return status[0]

    return once


def _measure(call: Callable[[], int], requests: int) -> None:
    for _ in range(50):  # warm: caches, the remembered token signature
        if call() != 200:
            raise SystemExit("a warm-up request did not answer 200")

    def block() -> None:
        for _ in range(requests):
            call()

    counted = ctypes.CFUNCTYPE(None)(block)
    gc.collect()
    gc.disable()
    counted()  # the one place where callgrind counts
    gc.enable()


def _seeded(factory: Callable[[], Any]) -> tuple[Any, dict[str, str]]:
    seed = Path(tempfile.mkdtemp()) / "seed.json"
    os.environ["BENCH_SEED_FILE"] = str(seed)
    app = factory()
    return app, json.loads(seed.read_text())


def measure(requests: int) -> None:
    """Under callgrind: one counted call per entry of NAMES, in that order."""
    sys.path.insert(0, str(HERE))
    import apps

    _measure(_asgi(apps.fastapi_bare(), "/hello", []), requests)
    app, seed = _seeded(apps.fastapi_usermgmt)
    bearer = [(b"authorization", f"Bearer {seed['token']}".encode())]
    two = apps.TWO_DEPENDENCIES_ROUTE.replace("{org_id}", seed["org_id"])
    for path in ("/hello", "/users/me", f"/orgs/{seed['org_id']}/projects", two):
        _measure(_asgi(app, path, bearer), requests)
    _measure(_wsgi(apps.flask_bare(), "/hello", None), requests)
    app, seed = _seeded(apps.flask_usermgmt)
    for path in ("/hello", "/users/me", f"/orgs/{seed['org_id']}/projects"):
        _measure(_wsgi(app, path, seed["token"]), requests)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="requests per measurement")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.requests)
        return 0
    out = Path(tempfile.mkdtemp(prefix="usermgmt-callgrind-"))
    command = [
        "valgrind",
        "--tool=callgrind",
        "--collect-atstart=no",
        "--toggle-collect=ffi_call",
        "--dump-after=ffi_call",
        f"--callgrind-out-file={out}/cg.%p",
        sys.executable,
        __file__,
        "--measure",
        f"--requests={args.requests}",
    ]
    subprocess.run(command, check=True, capture_output=True)  # noqa: S603
    dumps = sorted(out.glob("cg.*.*"), key=lambda p: int(p.suffix[1:]))
    totals = []
    for dump in dumps:
        found = re.search(r"^totals: (\d+)", dump.read_text(), re.MULTILINE)
        if found and int(found.group(1)) > 0:
            totals.append(int(found.group(1)) / args.requests)
    per_request = dict(zip(NAMES, totals, strict=True))
    for name, count in per_request.items():
        print(f"{name:<22} {count / 1000:8.0f} k instructions / request")
    for framework in ("fastapi", "flask"):
        bare = per_request[f"{framework} bare /hello"]
        for route in ("/hello", "/users/me", "protected", "protected 2 deps"):
            if f"{framework} {route}" not in per_request:
                continue
            ratio = bare / per_request[f"{framework} {route}"]
            print(f"{framework}: bare /hello / {route}: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
