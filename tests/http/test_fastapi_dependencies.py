"""FastAPI only: ``current_user`` and ``require_permission(...)`` are security-scheme
objects FastAPI resolves in one call each; what users write with them keeps working."""

# No ``from __future__ import annotations``: the annotations of the routes defined in
# the fixture are evaluated where they are written, with its local imports (the
# framework stays out of the module's imports, as in the rest of tests/http).
from collections.abc import Iterator
from typing import Annotated, Any

import pytest

from tests.http.conftest import DEMO_PATH, DEMO_PERMISSION, OPENAPI_ADAPTERS
from usermgmt.errors import ValidationError
from usermgmt.models import Access, EffectivePermissions, User


@pytest.fixture(params=OPENAPI_ADAPTERS)
def adapter(request):
    """Only FastAPI (overrides conftest's)."""
    return request.param


@pytest.fixture
def own_app(api_factory) -> Iterator[tuple[Any, Any, Any]]:
    """An application of its own with usermgmt mounted and routes using the dependencies
    the ways the documentation shows; yields (api, app, client)."""
    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    import usermgmt_fastapi

    api = api_factory()
    app = FastAPI()
    usermgmt_fastapi.mount(app, api.um)

    @app.get(
        "/teams/{team}/things",
        dependencies=[Depends(usermgmt_fastapi.require_permission(DEMO_PERMISSION))],
    )
    def misconfigured(team: str) -> dict[str, Any]:
        return {}

    @app.get("/orgs/{org_id}/dashboard")
    async def dashboard(
        org_id: str,
        access: Annotated[
            EffectivePermissions, Depends(usermgmt_fastapi.require_permission(DEMO_PERMISSION))
        ],
        user: Annotated[User, Depends(usermgmt_fastapi.current_user)],
    ) -> dict[str, Any]:
        return {"roles": sorted(access.roles), "email": user.email}

    @app.get("/me/email")
    def my_email(user: usermgmt_fastapi.CurrentUser) -> dict[str, str]:
        return {"email": user.email}

    @app.get("/orgs/{org_id}/projects")
    async def projects(
        org_id: str,
        access: Annotated[Access, Depends(usermgmt_fastapi.require_permission(DEMO_PERMISSION))],
    ) -> dict[str, Any]:
        # the one dependency gives the caller and the permissions (no current_user)
        return {
            "email": access.user.email,
            "user_id": str(access.user_id),
            "same_user": access.user.id == access.user_id,
            "organization_id": str(access.organization_id),
            "is_effective_permissions": isinstance(access, EffectivePermissions),
            "holds": DEMO_PERMISSION in access.permissions,
            "roles": sorted(access.roles),
        }

    with TestClient(app, raise_server_exceptions=False) as client:
        yield api, app, client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_dependencies_declare_the_bearer_scheme_in_the_openapi_document(api):
    spec = api.openapi()
    assert spec is not None
    guarded = spec["paths"][DEMO_PATH]["get"]
    assert guarded["security"] == [{"bearer": []}]
    assert [p["name"] for p in guarded["parameters"]] == ["org_id"]
    assert spec["paths"]["/users/me"]["get"]["security"] == [{"bearer": []}]
    assert spec["paths"]["/auth/login"]["post"].get("security") is None
    assert spec["components"]["securitySchemes"] == {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An access token from POST /auth/login or /auth/refresh.",
        }
    }


def test_require_permission_is_introspectable_and_checks_the_name_at_once():
    import usermgmt_fastapi

    dependency = usermgmt_fastapi.require_permission("project:read")
    assert dependency.usermgmt_permission == "project:read"
    assert "project:read" in repr(dependency)
    with pytest.raises(ValidationError):
        usermgmt_fastapi.require_permission("not a permission")


def test_annotated_dependencies_return_the_permissions_and_the_caller(own_app):
    api, _, client = own_app
    owner, outsider = api.account(), api.account()
    org_id = api.org(owner)

    answer = client.get(f"/orgs/{org_id}/dashboard", headers=_bearer(owner.token))
    assert answer.status_code == 200
    assert answer.json() == {"roles": ["owner"], "email": owner.email}
    assert (
        client.get(f"/orgs/{org_id}/dashboard", headers=_bearer(outsider.token)).status_code == 404
    )
    assert client.get(f"/orgs/{org_id}/dashboard").status_code == 401
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    refused = client.get(f"/orgs/{org_id}/dashboard", headers=basic)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert client.get("/me/email", headers=_bearer(owner.token)).json() == {"email": owner.email}


def test_a_route_without_the_org_id_parameter_is_a_server_error_not_a_leak(own_app):
    api, _, client = own_app
    owner = api.account()

    response = client.get("/teams/x/things", headers=_bearer(owner.token))
    assert response.status_code == 500
    problem = response.json()
    assert problem["request_id"] == response.headers["x-request-id"]
    assert "org_id" not in problem["detail"]


def test_dependency_overrides_still_replace_current_user(own_app):
    import usermgmt_fastapi

    api, app, client = own_app
    someone = api.account()
    app.dependency_overrides[usermgmt_fastapi.current_user] = lambda: someone.user
    try:
        assert client.get("/me/email").json() == {"email": someone.email}
    finally:
        app.dependency_overrides.clear()
    assert client.get("/me/email").status_code == 401


def test_one_require_permission_dependency_gives_the_caller_and_the_permissions(own_app):
    api, app, client = own_app
    owner, member, outsider = api.account(), api.account(), api.account()
    org_id = api.org(owner)
    api.add_member(org_id, owner, member)

    answer = client.get(f"/orgs/{org_id}/projects", headers=_bearer(owner.token))
    assert answer.status_code == 200
    assert answer.json() == {
        "email": owner.email,
        "user_id": str(owner.user.id),
        "same_user": True,
        "organization_id": str(org_id),
        "is_effective_permissions": True,
        "holds": True,
        "roles": ["owner"],
    }
    # a plain member does not hold the demo permission; an outsider does not see the org
    assert client.get(f"/orgs/{org_id}/projects", headers=_bearer(member.token)).status_code == 403
    assert (
        client.get(f"/orgs/{org_id}/projects", headers=_bearer(outsider.token)).status_code == 404
    )
    assert client.get(f"/orgs/{org_id}/projects").status_code == 401
    # the OpenAPI document still lists the path parameter and the bearer scheme
    operation = app.openapi()["paths"]["/orgs/{org_id}/projects"]["get"]
    assert [p["name"] for p in operation["parameters"]] == ["org_id"]
    assert operation["security"] == [{"bearer": []}]


def test_rejected_authorization_headers_are_not_kept_in_memory(own_app):
    """The dependencies remember the token of an ``Authorization`` header only once it
    was accepted, and only in its plain form: a client sending garbage or padded
    headers (each up to the server's header limit) makes nothing stay in the process,
    while the caller's own header still works, padded or not."""
    from usermgmt_fastapi import dependencies

    api, _app, client = own_app
    owner = api.account()
    org_id = api.org(owner)
    dependencies._tokens.clear()
    garbage = [f"Bearer {n:04d}{'x' * 6000}" for n in range(20)]
    for header in garbage:
        answer = client.get("/me/email", headers={"Authorization": header})
        assert answer.status_code == 401
        answer = client.get(f"/orgs/{org_id}/projects", headers={"Authorization": header})
        assert answer.status_code == 401
    padded = f"Bearer {owner.token}{' ' * 6000}"
    assert client.get("/me/email", headers={"Authorization": padded}).json() == {
        "email": owner.email
    }
    projects = client.get(f"/orgs/{org_id}/projects", headers={"Authorization": padded})
    assert projects.json()["holds"]
    assert not any(header in dependencies._tokens for header in [*garbage, padded])
    plain = f"Bearer {owner.token}"
    assert client.get("/me/email", headers={"Authorization": plain}).status_code == 200
    assert dependencies._tokens == {plain: owner.token}  # the accepted one is remembered
    assert client.get(f"/orgs/{org_id}/projects", headers=_bearer(owner.token)).json()["holds"]
    assert client.get("/me/email", headers={"Authorization": plain}).status_code == 200
