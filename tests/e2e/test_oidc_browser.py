"""A real browser signs in with OpenID Connect on the FastAPI example.

The example (``examples/fastapi_app.py``) runs under uvicorn in a subprocess on a
temporary SQLite database, with ``OIDC_PROVIDERS`` naming oidc-provider-mock (another
subprocess). Headless Debian chromium, driven by Playwright, opens the example's home
page, clicks "Sign in with the test provider", signs in on the provider's own page and
must end on ``/oauth/complete`` showing "Signed in as <email>" (the page exchanged the
one-time code with ``fetch()``). Requests to anything but loopback are aborted (the
provider's page links a CDN stylesheet), so the test needs no network.

The screenshot of the final page is kept under ``$USERMGMT_TEST_ARTIFACTS`` (default
``test-artifacts/`` in the repository).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.email import free_port
from tests.oauth.conftest import MockProvider, running_mock_provider

ROOT = Path(__file__).resolve().parent.parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.integration


def _require() -> None:
    missing = [m for m in ("playwright", "uvicorn") if importlib.util.find_spec(m) is None]
    if shutil.which(CHROMIUM) is None:
        missing.append(CHROMIUM)
    if missing:
        if os.environ.get("CI") == "true":  # under CI a missing browser fails, never skips
            pytest.fail(f"not installed: {', '.join(missing)}")
        pytest.skip(f"needs {', '.join(missing)}")


def artifacts_dir() -> Path:
    path = Path(os.environ.get("USERMGMT_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def example_server(tmp_path: Path, mock: MockProvider) -> Iterator[str]:
    """The FastAPI example under uvicorn; its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    provider = {**mock.settings_entry("test-provider"), "display_name": "the test provider"}
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'usermgmt.db'}",
        "JWT_SECRET": secrets.token_urlsafe(48),
        "JWT_REFRESH_SECRET": secrets.token_urlsafe(48),
        "ENVIRONMENT": "development",
        "EMAIL_PROVIDER": "console",
        "QUEUE_BACKEND": "inline",
        "APP_URL": base,
        "OIDC_PROVIDERS": json.dumps([provider]),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for name in ("REDIS_URL", "QUEUE_REDIS_URL", "OAUTH_REDIRECT_URLS", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
            [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"the example exited:\n{log.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(base + "/health/live", timeout=5) as r:  # noqa: S310
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the example did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)
        yield base
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)  # by PID: the server and only it
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


def test_a_browser_signs_in_with_the_test_provider(tmp_path: Path) -> None:
    _require()
    from playwright.sync_api import Route, sync_playwright

    def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            route.abort()

    with running_mock_provider() as mock, example_server(tmp_path, mock) as base:
        mock.set_user("e2e-user", email="e2e.user@example.com", email_verified=True, name="E2E")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_context().new_page()
                page.route("**/*", loopback_only)
                page.goto(base + "/")
                page.get_by_text("Sign in with the test provider").click()
                page.wait_for_url(mock.issuer + "/oauth2/authorize*")
                page.fill("input[name=sub]", "e2e-user")
                page.get_by_role("button", name="Authorize").click()
                page.wait_for_url(base + "/oauth/complete*")
                status = page.locator("#status")
                status.filter(has_text="Signed in as").wait_for(timeout=15_000)
                text = status.inner_text()
                page.screenshot(path=str(artifacts_dir() / "oidc-signed-in.png"), full_page=True)
                cookies = {c["name"]: c for c in page.context.cookies()}
                final_url = page.url
            finally:
                browser.close()
    assert text == "Signed in as e2e.user@example.com"
    assert final_url == base + "/oauth/complete"  # the page dropped the code from the URL
    assert "um_oauth" not in cookies  # the binding cookie was cleared by the callback
    assert (artifacts_dir() / "oidc-signed-in.png").stat().st_size > 1000
