"""Guard your own FastAPI routes with usermgmt's permissions.

The application registers its permission ``project:read``; organization owners and
admins hold it at once, and custom roles can grant it. A member of the organization
without it gets 403, anyone else 404 (the organization's existence is not revealed),
a request without a valid bearer token 401::

    uvicorn examples.fastapi_protect_route:app

    curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/orgs/$ORG_ID/projects
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI

import usermgmt_fastapi
from usermgmt import Access, User, UserManagement

um = UserManagement.from_env(permissions=[("project:read", "See the organization's projects")])
app = FastAPI(title="Projects")
usermgmt_fastapi.mount(app, um)

#: A caller holding ``project:read`` in the organization of the path: the dependency
#: checks the bearer token and the permission, and gives the caller (``access.user``)
#: with their permissions and roles there. One dependency is all a route needs.
CanReadProjects = Annotated[Access, Depends(usermgmt_fastapi.require_permission("project:read"))]
#: Any signed-in caller (no organization involved).
CurrentUser = Annotated[User, Depends(usermgmt_fastapi.current_user)]


@app.get("/orgs/{org_id}/projects")
def list_projects(org_id: str, access: CanReadProjects) -> dict[str, Any]:
    """Only members holding ``project:read`` in this organization get here."""
    return {"organization_id": org_id, "requested_by": access.user.email, "projects": []}


@app.get("/orgs/{org_id}/dashboard")
def dashboard(
    org_id: str,
    access: Annotated[Access, Depends(usermgmt_fastapi.require_permission("organization:read"))],
) -> dict[str, Any]:
    """The caller's permissions there tailor the answer."""
    return {
        "organization_id": org_id,
        "can_see_projects": "project:read" in access.permissions,
        "roles": sorted(access.roles),
    }


@app.get("/me/greeting")
def greeting(user: CurrentUser) -> dict[str, str]:
    """Routes outside an organization only need the caller."""
    return {"greeting": f"Hello, {user.name or user.email}"}


if __name__ == "__main__":
    import uvicorn

    from usermgmt.backends.sqlalchemy import migrate

    if not um.settings.database_url.startswith("memory:"):
        migrate.upgrade(um.settings.database_url)
    um.seed()
    uvicorn.run(app, host="127.0.0.1", port=8000)
