"""Guard your own Flask views with usermgmt's permissions.

The application registers its permission ``project:read``; organization owners and
admins hold it at once, and custom roles can grant it. A member of the organization
without it gets 403, anyone else 404 (the organization's existence is not revealed),
a request without a valid bearer token 401::

    gunicorn examples.flask_protect_route:app

    curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/orgs/$ORG_ID/projects

The decorators go below the route decorator; the organization id comes from the path
parameter ``org_id``.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

import usermgmt_flask
from usermgmt import UserManagement

um = UserManagement.from_env(permissions=[("project:read", "See the organization's projects")])
app = Flask("projects", static_folder=None)
usermgmt_flask.UserMgmt(app, um)


@app.get("/orgs/<org_id>/projects")
@usermgmt_flask.permission_required("project:read")
def list_projects(org_id: str) -> dict[str, Any]:
    """Only members holding ``project:read`` in this organization get here."""
    user = usermgmt_flask.current_user()
    return {"organization_id": org_id, "requested_by": user.email, "projects": []}


@app.get("/orgs/<org_id>/dashboard")
@usermgmt_flask.permission_required("organization:read")
def dashboard(org_id: str) -> dict[str, Any]:
    """The caller's permissions there, checked by the decorator, tailor the answer."""
    access = usermgmt_flask.current_permissions()
    return {
        "organization_id": org_id,
        "can_see_projects": "project:read" in access.permissions,
        "roles": sorted(access.roles),
    }


@app.get("/me/greeting")
@usermgmt_flask.login_required
def greeting() -> dict[str, str]:
    """Any signed-in user: no organization involved."""
    user = usermgmt_flask.current_user()
    return {"hello": user.name or user.email}


if __name__ == "__main__":
    from usermgmt.backends.sqlalchemy import migrate

    if not um.settings.database_url.startswith("memory:"):
        migrate.upgrade(um.settings.database_url)
    um.seed()
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
