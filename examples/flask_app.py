"""The whole usermgmt HTTP API on Flask, configured from the environment.

Serve it with any WSGI server once the database is migrated::

    usermgmt db migrate                       # or: python -m usermgmt db migrate
    gunicorn examples.flask_app:app

or run this file for a development server on http://127.0.0.1:8000 (``PORT`` to change
it) with the embedded defaults (SQLite in ``./usermgmt.db``, in-process cache and
queue, emails printed to the console); it migrates the database and seeds the
permission catalogue first::

    python examples/flask_app.py

Behind a reverse proxy, wrap the app in Werkzeug's ``ProxyFix`` so that HTTPS requests
get HSTS, and list the proxy in ``TRUSTED_PROXIES`` for client addresses.
"""

from __future__ import annotations

import atexit
import os

from flask import Flask

import usermgmt_flask
from usermgmt import UserManagement


def create_app(um: UserManagement) -> Flask:
    """A Flask application serving the usermgmt API for ``um``."""
    app = Flask("usermgmt", static_folder=None)
    usermgmt_flask.UserMgmt(app, um)
    return app


um = UserManagement.from_env()
app = create_app(um)
atexit.register(um.close)  # stop the in-process queue's worker after its current job


def main() -> None:
    """Migrate, seed and serve on 127.0.0.1:8000 (development only)."""
    from usermgmt.backends.sqlalchemy import migrate

    if not um.settings.database_url.startswith("memory:"):
        migrate.upgrade(um.settings.database_url)
    um.seed()
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))


if __name__ == "__main__":
    main()
