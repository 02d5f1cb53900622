"""Flask adapter for usermgmt: the HTTP API of the spec as blueprints, plus decorators
for the application's own views.

::

    from flask import Flask
    import usermgmt_flask
    from usermgmt import UserManagement

    app = Flask(__name__)
    um = UserManagement.from_env()
    usermgmt_flask.UserMgmt(app, um)     # every route, error handler and request hook

    @app.get("/orgs/<org_id>/projects")
    @usermgmt_flask.permission_required("project:read")
    def projects(org_id: str):
        user = usermgmt_flask.current_user()
        ...

or, with an application factory::

    users = usermgmt_flask.UserMgmt()

    def create_app() -> Flask:
        app = Flask(__name__)
        users.init_app(app, UserManagement.from_env())
        return app

The routes, status codes, JSON bodies, headers, problem documents and rate limits are
those of ``usermgmt_fastapi``: both serve :mod:`usermgmt.http`'s contract, Prometheus
metrics at ``/metrics`` included (:func:`~usermgmt_flask.blueprints.metrics_blueprint`,
see :mod:`usermgmt.observability.metrics`; ``metrics=False`` leaves them out).
Logging is the application's to configure (``usermgmt.configure_logging(um.settings)``).
"""

from __future__ import annotations

import logging

from flask import Flask

from usermgmt.app import UserManagement
from usermgmt.errors import ConfigurationError, MissingDependency
from usermgmt.http import DEFAULT_MAX_BODY_BYTES, STATUS_BY_ERROR, status_for
from usermgmt_flask.blueprints import usermgmt_blueprint
from usermgmt_flask.context import (
    EXTENSION_KEY,
    UserMgmtState,
    current_claims,
    current_permissions,
    current_user,
    get_state,
    get_um,
    request_context,
    request_id,
)
from usermgmt_flask.decorators import login_required, permission_required
from usermgmt_flask.errors import install_error_handlers
from usermgmt_flask.middleware import install_hooks

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "EXTENSION_KEY",
    "STATUS_BY_ERROR",
    "UserMgmt",
    "UserMgmtState",
    "current_claims",
    "current_permissions",
    "current_user",
    "get_state",
    "get_um",
    "login_required",
    "permission_required",
    "request_context",
    "request_id",
    "status_for",
]

logger = logging.getLogger("usermgmt.http")


class UserMgmt:
    """The Flask extension: ``UserMgmt(app, um)``, or ``UserMgmt()`` then
    :meth:`init_app` per application (each app may get its own UserManagement).

    ``url_prefix`` mounts every route below it (health and metrics included);
    ``max_body_bytes`` caps request bodies (413 above it); ``metrics=False`` serves no
    ``/metrics`` and records no HTTP metrics.
    """

    def __init__(
        self,
        app: Flask | None = None,
        um: UserManagement | None = None,
        *,
        url_prefix: str = "",
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        metrics: bool = True,
    ) -> None:
        self.um = um
        self.url_prefix = url_prefix
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        if app is not None:
            self.init_app(app, um)

    def init_app(
        self,
        app: Flask,
        um: UserManagement | None = None,
        *,
        url_prefix: str | None = None,
        max_body_bytes: int | None = None,
    ) -> None:
        """Serve the whole usermgmt HTTP API on ``app`` with ``um`` (default: the one
        given to the constructor): the blueprint, the error handlers and the request
        hooks (request id, security headers, global rate limit, body size limit).
        Call it once per app, before the app serves requests.

        Raises ConfigurationError without a UserManagement, or if ``app`` already has
        the extension.
        """
        um = um if um is not None else self.um
        if not isinstance(um, UserManagement):
            raise ConfigurationError("UserMgmt.init_app(app, um) needs a UserManagement")
        if EXTENSION_KEY in app.extensions:
            raise ConfigurationError("this Flask app already has the usermgmt extension")
        prefix = (self.url_prefix if url_prefix is None else url_prefix).rstrip("/")
        limit = self.max_body_bytes if max_body_bytes is None else max_body_bytes
        if limit < 0:
            raise ConfigurationError("max_body_bytes must not be negative")
        app.extensions[EXTENSION_KEY] = UserMgmtState(
            um=um,
            url_prefix=prefix,
            max_body_bytes=limit,
            rate_limit_exempt=(f"{prefix}/health", f"{prefix}/metrics"),
            metrics=self.metrics,
        )
        install_error_handlers(app)
        install_hooks(app)
        app.register_blueprint(usermgmt_blueprint(metrics=self.metrics), url_prefix=prefix or None)
        if self.metrics:
            try:
                um.metrics  # noqa: B018 - starts the instruments now, not at the first scrape
            except MissingDependency:
                logger.warning(
                    "prometheus-client is not installed: /metrics answers 503"
                    ' (pip install "usermgmt[metrics]")'
                )

    @staticmethod
    def state(app: Flask) -> UserMgmtState:
        """The extension's state for ``app`` (``app.extensions["usermgmt"]``).

        Raises ConfigurationError if ``app`` does not have the extension.
        """
        state = app.extensions.get(EXTENSION_KEY)
        if not isinstance(state, UserMgmtState):
            raise ConfigurationError("this Flask app does not have the usermgmt extension")
        return state
