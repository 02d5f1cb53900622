"""The whole usermgmt HTTP API on Flask, configured from the environment.

Serve it with any WSGI server, e.g. gunicorn with two workers and merged metrics::

    export PROMETHEUS_MULTIPROC_DIR=/tmp/usermgmt-metrics   # empty, writable
    gunicorn -c examples/gunicorn_conf.py -w 2 examples.flask_app:app

or run this file for a development server on http://127.0.0.1:8000 (``PORT`` to change
it) with the embedded defaults (SQLite in ``./usermgmt.db``, in-process cache and
queue, emails printed to the console)::

    python examples/flask_app.py

On import the example migrates the database and seeds the permission catalogue
(``USERMGMT_AUTO_MIGRATE=false`` to leave that to ``usermgmt db migrate`` in your
deployment), and sends every log record to stderr as one JSON object per line
(``LOG_LEVEL``, ``LOG_FORMAT=console``). Prometheus metrics are at /metrics.

Behind a reverse proxy, wrap the app in Werkzeug's ``ProxyFix`` so that HTTPS requests
get HSTS, and list the proxy in ``TRUSTED_PROXIES`` for client addresses.
"""

from __future__ import annotations

import atexit
import os

from flask import Flask

import usermgmt_flask
from usermgmt import UserManagement, configure_logging


def create_app(um: UserManagement) -> Flask:
    """A Flask application serving the usermgmt API for ``um``."""
    app = Flask("usermgmt", static_folder=None)
    usermgmt_flask.UserMgmt(app, um)
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
atexit.register(um.close)  # stop the in-process queue's worker after its current job
if os.environ.get("USERMGMT_AUTO_MIGRATE", "true").strip().lower() not in ("0", "false", "no"):
    prepare(um)


def main() -> None:
    """Serve on 127.0.0.1:8000 (development only)."""
    prepare(um)
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))


if __name__ == "__main__":
    main()
