"""The blueprints, one factory per area, nested in one ``usermgmt`` blueprint (endpoints
``usermgmt.<area>.<view>``, e.g. ``url_for("usermgmt.auth.login")``).

:class:`usermgmt_flask.UserMgmt` registers :func:`usermgmt_blueprint` with its error
handlers and request hooks; the routes, methods, statuses and bodies are those of the
FastAPI routers.
"""

from __future__ import annotations

from flask import Blueprint

from usermgmt_flask.blueprints._common import no_store
from usermgmt_flask.blueprints.audit import audit_blueprint
from usermgmt_flask.blueprints.auth import auth_blueprint
from usermgmt_flask.blueprints.health import health_blueprint
from usermgmt_flask.blueprints.invitations import invitations_blueprint
from usermgmt_flask.blueprints.metrics import metrics_blueprint
from usermgmt_flask.blueprints.oauth import oauth_blueprint
from usermgmt_flask.blueprints.organizations import organizations_blueprint, permissions_blueprint
from usermgmt_flask.blueprints.users import users_blueprint
from usermgmt_flask.context import BLUEPRINT_NAME

__all__ = [
    "all_blueprints",
    "audit_blueprint",
    "auth_blueprint",
    "health_blueprint",
    "invitations_blueprint",
    "metrics_blueprint",
    "oauth_blueprint",
    "organizations_blueprint",
    "permissions_blueprint",
    "usermgmt_blueprint",
    "users_blueprint",
]


def all_blueprints(*, metrics: bool = True) -> list[Blueprint]:
    """A fresh instance of every area's blueprint, in registration order (``/metrics``
    last, unless ``metrics=False``)."""
    blueprints = [
        auth_blueprint(),
        oauth_blueprint(),
        users_blueprint(),
        organizations_blueprint(),
        invitations_blueprint(),
        permissions_blueprint(),
        audit_blueprint(),
        health_blueprint(),
    ]
    if metrics:
        blueprints.append(metrics_blueprint())
    return blueprints


def usermgmt_blueprint(*, metrics: bool = True) -> Blueprint:
    """Every usermgmt route in one new ``usermgmt`` blueprint; its responses are
    ``Cache-Control: no-store``."""
    parent = Blueprint(BLUEPRINT_NAME, __name__)
    parent.after_request(no_store)
    for child in all_blueprints(metrics=metrics):
        parent.register_blueprint(child)
    return parent
