"""The whole usermgmt HTTP API on FastAPI, configured from the environment.

Serve it with any ASGI server once the database is migrated::

    usermgmt db migrate                       # or: python -m usermgmt db migrate
    uvicorn examples.fastapi_app:app

or run this file for a development server on http://127.0.0.1:8000 with the embedded
defaults (SQLite in ``./usermgmt.db``, in-process cache and queue, emails printed to
the console); it migrates the database and seeds the permission catalogue first::

    python examples/fastapi_app.py

The interactive API documentation is at /docs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import usermgmt_fastapi
from usermgmt import UserManagement


def create_app(um: UserManagement) -> FastAPI:
    """A FastAPI application serving the usermgmt API for ``um``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        um.close()  # stop the in-process queue's worker after its current job

    app = FastAPI(title="usermgmt", version="0.1", lifespan=lifespan)
    usermgmt_fastapi.mount(app, um)
    return app


um = UserManagement.from_env()
app = create_app(um)


def main() -> None:
    """Migrate, seed and serve on 127.0.0.1:8000 (development only)."""
    import uvicorn

    from usermgmt.backends.sqlalchemy import migrate

    if not um.settings.database_url.startswith("memory:"):
        migrate.upgrade(um.settings.database_url)
    um.seed()
    uvicorn.run(app, host="127.0.0.1", port=8000)


if __name__ == "__main__":
    main()
