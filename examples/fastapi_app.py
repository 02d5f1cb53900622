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
    return app


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
