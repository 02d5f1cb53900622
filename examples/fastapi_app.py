"""The whole usermgmt HTTP API on FastAPI, configured from the environment.

Serve it with any ASGI server::

    uvicorn examples.fastapi_app:app

or run this file for a development server on http://127.0.0.1:8000 with the embedded
defaults (SQLite in ``./usermgmt.db``, in-process cache and queue, emails printed to
the console)::

    python examples/fastapi_app.py

On import the example migrates the database and seeds the permission catalogue
(``USERMGMT_AUTO_MIGRATE=false`` to leave that to ``usermgmt db migrate`` in your
deployment), and sends every log record to stderr as one JSON object per line
(``LOG_LEVEL``, ``LOG_FORMAT=console``). The interactive API documentation is at
/docs, Prometheus metrics at /metrics (with ``uvicorn --workers N``, set
``PROMETHEUS_MULTIPROC_DIR``: see :mod:`usermgmt.observability.metrics`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import usermgmt_fastapi
from usermgmt import UserManagement, configure_logging


def create_app(um: UserManagement) -> FastAPI:
    """A FastAPI application serving the usermgmt API for ``um``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        um.close()  # stop the in-process queue's worker after its current job

    app = FastAPI(title="usermgmt", version="0.1", lifespan=lifespan)
    usermgmt_fastapi.mount(app, um)
    add_sign_in_pages(app, um)
    return app


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><main><h1>{title}</h1>{body}</main></body></html>"""

#: Trades the one-time ``?code=`` for tokens (POST /auth/oauth/exchange), then shows who
#: signed in. A real front end keeps the tokens in memory, not in storage.
_COMPLETE_SCRIPT = """<p id="status">Signing you in…</p>
<script>
(async () => {
  const status = document.getElementById("status");
  const params = new URLSearchParams(location.search);
  history.replaceState(null, "", location.pathname);  // the code leaves the address bar
  if (params.get("linked")) { status.textContent = "Linked " + params.get("linked"); return; }
  const exchanged = await fetch("/auth/oauth/exchange", {
    method: "POST", headers: {"Content-Type": "application/json"},
    credentials: "same-origin",  // the um_oauth cookie binds the code to this browser
    body: JSON.stringify({code: params.get("code") || ""}),
  });
  if (!exchanged.ok) { status.textContent = "Sign-in failed"; return; }
  const tokens = await exchanged.json();
  const me = await fetch("/users/me", {headers: {Authorization: "Bearer " + tokens.access_token}});
  const user = await me.json();
  status.textContent = "Signed in as " + user.email;
})();
</script>"""


def add_sign_in_pages(app: FastAPI, um: UserManagement) -> None:
    """Two small pages for trying the OAuth / OpenID Connect sign-in in a browser:
    ``/`` (one button per configured provider) and ``/oauth/complete`` (the default
    post-login target, ``OAUTH_REDIRECT_URLS``)."""
    from html import escape

    from fastapi.responses import HTMLResponse

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home() -> str:
        buttons = "".join(
            f'<p><a role="button" href="/auth/oauth/{escape(p.name)}/authorize">'
            f"Sign in with {escape(p.display_name)}</a></p>"
            for p in um.oauth.providers()
        )
        body = buttons or "<p>No sign-in provider is configured (OIDC_PROVIDERS).</p>"
        return _PAGE.format(title="usermgmt example", body=body)

    @app.get("/oauth/complete", response_class=HTMLResponse, include_in_schema=False)
    def oauth_complete() -> str:
        return _PAGE.format(title="usermgmt example", body=_COMPLETE_SCRIPT)


def prepare(um: UserManagement) -> None:
    """Migrate the database (a no-op when it is up to date; safe in several workers at
    once on SQLite) and store the permission catalogue."""
    from usermgmt.backends.sqlalchemy import migrate

    if not um.settings.database_url.startswith("memory:"):
        migrate.upgrade(um.settings.database_url)
    um.seed()


um = UserManagement.from_env()
configure_logging(um.settings)
app = create_app(um)
if os.environ.get("USERMGMT_AUTO_MIGRATE", "true").strip().lower() not in ("0", "false", "no"):
    prepare(um)


def main() -> None:
    """Serve on 127.0.0.1:8000 (development only)."""
    import uvicorn

    prepare(um)
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), log_config=None)


if __name__ == "__main__":
    main()
