"""``/organizations``: organizations, members, roles, permissions; ``/permissions``; and
``require_permission`` guarding an application's own route."""

from __future__ import annotations

import pytest

from tests.http.conftest import DEMO_PATH, DEMO_PERMISSION

SYSTEM_PERMISSIONS = {
    "organization:read",
    "organization:update",
    "organization:delete",
    "member:read",
    "member:invite",
    "member:update",
    "member:remove",
    "role:read",
    "role:manage",
    "audit:read",
}


@pytest.fixture
def team(api):
    """An organization with an owner, an admin and a plain member."""
    owner, admin, member = api.account(), api.account(), api.account()
    org_id = api.org(owner, "Acme")
    api.add_member(org_id, owner, admin, roles=("admin",))
    api.add_member(org_id, owner, member)
    return org_id, owner, admin, member


# --- organizations ---------------------------------------------------------------------------


def test_create_organization_makes_the_caller_owner(api):
    user = api.account()

    response = api.post(
        "/organizations", json={"name": "Acme Corp", "metadata": {"plan": "pro"}}, token=user.token
    )

    assert response.status_code == 201
    org = response.json()
    assert org["name"] == "Acme Corp"
    assert org["slug"] == "acme-corp"
    assert org["metadata"] == {"plan": "pro"}
    perms = api.get(f"/organizations/{org['id']}/permissions/me", token=user.token).json()
    assert perms["roles"] == ["owner"]
    assert set(perms["permissions"]) >= SYSTEM_PERMISSIONS
    roles = api.get(f"/organizations/{org['id']}/roles", token=user.token).json()["items"]
    assert {r["name"] for r in roles} == {"owner", "admin", "member"}


def test_create_organization_with_a_taken_slug_is_409(api):
    user = api.account()
    api.post("/organizations", json={"name": "A", "slug": "acme"}, token=user.token)

    response = api.post("/organizations", json={"name": "B", "slug": "acme"}, token=user.token)

    assert response.status_code == 409
    assert response.json()["code"] == "slug_taken"


@pytest.mark.parametrize(
    "body", [{}, {"name": ""}, {"name": "A", "slug": "-bad-"}, {"name": "A", "owner": "x"}]
)
def test_create_organization_validates(api, body):
    user = api.account()

    response = api.post("/organizations", json=body, token=user.token)

    assert response.status_code == 422


def test_get_update_delete_organization(api, team):
    org_id, owner, admin, member = team

    got = api.get(f"/organizations/{org_id}", token=member.token)
    assert got.status_code == 200
    assert got.json()["id"] == org_id

    assert (
        api.patch(f"/organizations/{org_id}", json={"name": "No"}, token=member.token).status_code
        == 403
    )
    patched = api.patch(f"/organizations/{org_id}", json={"name": "Acme 2"}, token=admin.token)
    assert patched.status_code == 200
    assert patched.json()["name"] == "Acme 2"

    denied = api.delete(f"/organizations/{org_id}", token=admin.token)
    assert denied.status_code == 403
    assert denied.json()["code"] == "permission_denied"
    assert api.delete(f"/organizations/{org_id}", token=owner.token).status_code == 204
    assert api.get(f"/organizations/{org_id}", token=owner.token).status_code == 404


def test_outsider_gets_404_not_403(api, team):
    org_id = team[0]
    outsider = api.account()

    for path in (f"/organizations/{org_id}", f"/organizations/{org_id}/members"):
        response = api.get(path, token=outsider.token)
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


# --- members -----------------------------------------------------------------------------------


def test_members_list_with_pagination(api, team):
    org_id, owner, admin, member = team

    first = api.get(f"/organizations/{org_id}/members", params={"limit": "2"}, token=member.token)
    assert first.status_code == 200
    items = first.json()["items"]
    assert len(items) == 2
    rest = api.get(
        f"/organizations/{org_id}/members",
        params={"limit": "2", "cursor": first.json()["next_cursor"]},
        token=member.token,
    ).json()
    assert rest["next_cursor"] is None
    members = {m["user"]["id"]: m for m in items + rest["items"]}
    assert set(members) == {owner.id, admin.id, member.id}
    assert members[admin.id]["roles"] == ["admin"]
    assert set(members[owner.id]["user"]) == {"id", "email", "name"}
    assert "joined_at" in members[owner.id]


def test_get_one_member(api, team):
    org_id, owner, _, member = team

    response = api.get(f"/organizations/{org_id}/members/{member.id}", token=owner.token)

    assert response.status_code == 200
    assert response.json()["user"]["email"] == member.email
    assert response.json()["roles"] == ["member"]


def test_update_member_roles(api, team):
    org_id, owner, _, member = team

    response = api.patch(
        f"/organizations/{org_id}/members/{member.id}", json={"roles": ["admin"]}, token=owner.token
    )

    assert response.status_code == 200
    assert response.json()["roles"] == ["admin"]
    perms = api.get(f"/organizations/{org_id}/permissions/me", token=member.token).json()
    assert "member:invite" in perms["permissions"]


def test_update_member_roles_errors(api, team):
    org_id, owner, admin, member = team
    path = f"/organizations/{org_id}/members/{owner.id}"

    last = api.patch(path, json={"roles": ["member"]}, token=owner.token)
    assert last.status_code == 409
    assert last.json()["code"] == "last_owner"
    assert api.patch(path, json={"roles": []}, token=owner.token).status_code == 422
    unknown = api.patch(path, json={"roles": ["wizard"]}, token=owner.token)
    assert unknown.status_code == 422
    denied = api.patch(
        f"/organizations/{org_id}/members/{admin.id}",
        json={"roles": ["member"]},
        token=member.token,
    )
    assert denied.status_code == 403
    # an admin cannot make anyone owner (grants beyond their own permissions)
    escalate = api.patch(
        f"/organizations/{org_id}/members/{member.id}", json={"roles": ["owner"]}, token=admin.token
    )
    assert escalate.status_code == 403


def test_remove_member(api, team):
    org_id, _owner, admin, member = team

    assert (
        api.delete(f"/organizations/{org_id}/members/{admin.id}", token=member.token).status_code
        == 403
    )
    removed = api.delete(f"/organizations/{org_id}/members/{member.id}", token=admin.token)
    assert removed.status_code == 204
    assert api.get(f"/organizations/{org_id}", token=member.token).status_code == 404
    gone = api.delete(f"/organizations/{org_id}/members/{member.id}", token=admin.token)
    assert gone.status_code == 404


def test_remove_the_last_owner_is_409(api, team):
    org_id, owner, _, _ = team

    response = api.delete(f"/organizations/{org_id}/members/{owner.id}", token=owner.token)

    assert response.status_code == 409
    assert response.json()["code"] == "last_owner"


def test_leave(api, team):
    org_id, owner, _, member = team

    assert api.post(f"/organizations/{org_id}/leave", token=member.token).status_code == 204
    assert api.get(f"/organizations/{org_id}", token=member.token).status_code == 404
    assert api.post(f"/organizations/{org_id}/leave", token=member.token).status_code == 404
    last = api.post(f"/organizations/{org_id}/leave", token=owner.token)
    assert last.status_code == 409
    assert last.json()["code"] == "last_owner"


def test_permissions_me(api, team):
    org_id, _, _, member = team

    response = api.get(f"/organizations/{org_id}/permissions/me", token=member.token)

    assert response.status_code == 200
    assert response.json() == {
        "organization_id": org_id,
        "permissions": ["member:read", "organization:read", "role:read"],
        "roles": ["member"],
    }


# --- roles and the catalogue ------------------------------------------------------------------


def test_permission_catalogue(api):
    user = api.account()

    response = api.get("/permissions", token=user.token)

    assert response.status_code == 200
    names = {p["name"] for p in response.json()["items"]}
    assert names >= SYSTEM_PERMISSIONS | {DEMO_PERMISSION}
    assert api.get("/permissions").status_code == 401


def test_roles_crud(api, team):
    org_id, owner, _, member = team
    base = f"/organizations/{org_id}/roles"

    created = api.post(
        base,
        json={"name": "Auditor", "description": "Reads the trail", "permissions": ["audit:read"]},
        token=owner.token,
    )
    assert created.status_code == 201
    role = created.json()
    assert role["is_system"] is False
    assert role["permissions"] == ["audit:read"]

    assert api.get(f"{base}/{role['id']}", token=member.token).json()["name"] == "Auditor"
    assert role["id"] in {r["id"] for r in api.get(base, token=member.token).json()["items"]}

    patched = api.patch(
        f"{base}/{role['id']}",
        json={"permissions": ["audit:read", "member:read"]},
        token=owner.token,
    )
    assert patched.status_code == 200
    assert patched.json()["permissions"] == ["audit:read", "member:read"]
    assert patched.json()["name"] == "Auditor"

    assert api.delete(f"{base}/{role['id']}", token=owner.token).status_code == 204
    assert api.get(f"{base}/{role['id']}", token=owner.token).status_code == 404


def test_roles_errors(api, team):
    org_id, owner, admin, member = team
    base = f"/organizations/{org_id}/roles"
    system = {r["name"]: r["id"] for r in api.get(base, token=owner.token).json()["items"]}

    assert api.post(base, json={"name": "X"}, token=member.token).status_code == 403
    taken = api.post(base, json={"name": "owner"}, token=owner.token)
    assert taken.status_code == 409
    assert taken.json()["code"] == "role_name_taken"
    unknown = api.post(base, json={"name": "Y", "permissions": ["nope:nope"]}, token=owner.token)
    assert unknown.status_code == 422
    beyond = api.post(
        base, json={"name": "Z", "permissions": ["organization:delete"]}, token=admin.token
    )
    assert beyond.status_code == 403

    for method, body in (("PATCH", {"name": "boss"}), ("DELETE", None)):
        kwargs = {} if body is None else {"json": body}
        response = api.request(method, f"{base}/{system['member']}", token=owner.token, **kwargs)
        assert response.status_code == 409
        assert response.json()["code"] == "system_role"

    used = api.post(base, json={"name": "Used", "permissions": ["member:read"]}, token=owner.token)
    role_id = used.json()["id"]
    assign = api.patch(
        f"/organizations/{org_id}/members/{member.id}",
        json={"roles": ["member", role_id]},
        token=owner.token,
    )
    assert assign.status_code == 200
    in_use = api.delete(f"{base}/{role_id}", token=owner.token)
    assert in_use.status_code == 409
    assert in_use.json()["code"] == "role_in_use"


# --- the application's own routes ----------------------------------------------------------------


def test_require_permission_guards_an_app_route(api, team):
    org_id, owner, _, member = team
    outsider = api.account()
    path = DEMO_PATH.format(org_id=org_id)

    allowed = api.get(path, token=owner.token)
    assert allowed.status_code == 200
    assert allowed.json()["user_id"] == owner.id

    denied = api.get(path, token=member.token)
    assert denied.status_code == 403
    assert denied.json()["permission"] == DEMO_PERMISSION

    assert api.get(path, token=outsider.token).status_code == 404
    assert api.get(DEMO_PATH.format(org_id="junk"), token=owner.token).status_code == 404
    assert api.get(path).status_code == 401
