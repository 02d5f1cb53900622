"""``/users``: the caller's account, sessions and memberships; the superuser admin API."""

from __future__ import annotations

import pytest

NEW_PASSWORD = "another long passphrase for tests"


# --- profile --------------------------------------------------------------------------------


def test_get_me(api):
    account = api.account(email="ada@example.com", name="Ada")

    response = api.get("/users/me", token=account.token)

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == account.id
    assert body["email"] == "ada@example.com"
    assert body["name"] == "Ada"
    assert body["created_at"].endswith("Z")
    assert response.headers["cache-control"] == "no-store"


def test_get_me_needs_a_valid_token(api):
    assert api.get("/users/me").status_code == 401
    assert api.get("/users/me", headers={"Authorization": "Basic YTpi"}).status_code == 401
    expired = api.account()
    api.clock.advance(seconds=api.um.settings.access_token_ttl_seconds + 120)
    response = api.get("/users/me", token=expired.token)
    assert response.status_code == 401
    assert response.json()["code"] == "token_expired"


def test_patch_me_changes_name_and_metadata(api):
    account = api.account()

    response = api.patch(
        "/users/me", json={"name": "  Grace  ", "metadata": {"theme": "dark"}}, token=account.token
    )

    assert response.status_code == 200
    assert response.json()["name"] == "Grace"
    assert response.json()["metadata"] == {"theme": "dark"}
    assert api.get("/users/me", token=account.token).json()["name"] == "Grace"


@pytest.mark.parametrize(
    "body",
    [
        {"email": "new@example.com"},
        {"is_superuser": True},
        {"is_verified": True},
        {"password_hash": "x"},
        {"name": "ok", "role": "owner"},
    ],
)
def test_patch_me_refuses_unknown_fields_and_changes_nothing(api, body):
    account = api.account(name="Before")

    response = api.patch("/users/me", json=body, token=account.token)

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert any(e["type"] == "extra_forbidden" for e in response.json()["errors"])
    me = api.get("/users/me", token=account.token).json()
    assert me["name"] == "Before"
    assert me["is_superuser"] is False


# --- password --------------------------------------------------------------------------------


def test_change_password_keeps_this_session_and_ends_the_others(api):
    account = api.account()
    other = api.relogin(account)

    response = api.post(
        "/users/me/password",
        json={"current_password": account.password, "new_password": NEW_PASSWORD},
        token=account.token,
    )

    assert response.status_code == 204
    assert api.get("/users/me", token=account.token).status_code == 200
    assert api.get("/users/me", token=other.token).status_code == 401
    login = api.post("/auth/login", json={"email": account.email, "password": NEW_PASSWORD})
    assert login.status_code == 200


def test_change_password_with_a_wrong_current_password_is_400(api):
    account = api.account()

    response = api.post(
        "/users/me/password",
        json={"current_password": "not the current one", "new_password": NEW_PASSWORD},
        token=account.token,
    )

    assert response.status_code == 400
    assert response.json()["code"] == "wrong_password"
    login = api.post("/auth/login", json={"email": account.email, "password": account.password})
    assert login.status_code == 200


def test_change_password_refuses_a_weak_new_password(api):
    account = api.account()

    response = api.post(
        "/users/me/password",
        json={"current_password": account.password, "new_password": "short"},
        token=account.token,
    )

    assert response.status_code == 422
    assert response.json()["code"] == "password_too_short"


# --- sessions and memberships ------------------------------------------------------------------


def test_sessions_list_marks_the_current_one(api):
    account = api.account()
    other = api.relogin(account)

    response = api.get("/users/me/sessions", token=account.token)

    assert response.status_code == 200
    body = response.json()
    assert body["next_cursor"] is None
    by_id = {s["id"]: s for s in body["items"]}
    assert set(by_id) == {account.session_id, other.session_id}
    assert by_id[account.session_id]["current"] is True
    assert by_id[other.session_id]["current"] is False
    assert {"created_at", "last_used_at", "ip", "user_agent"} <= set(by_id[other.session_id])


def test_delete_session_ends_it(api):
    account = api.account()
    other = api.relogin(account)

    response = api.delete(f"/users/me/sessions/{other.session_id}", token=account.token)

    assert response.status_code == 204
    assert api.get("/users/me", token=other.token).status_code == 401
    assert api.get("/users/me", token=account.token).status_code == 200


@pytest.mark.parametrize("kind", ["someone_else", "unknown", "malformed"])
def test_delete_session_of_someone_else_is_404(api, kind):
    account = api.account()
    stranger = api.account()
    session_id = {
        "someone_else": stranger.session_id,
        "unknown": "01900000-0000-7000-8000-000000000000",
        "malformed": "not-a-uuid",
    }[kind]

    response = api.delete(f"/users/me/sessions/{session_id}", token=account.token)

    assert response.status_code == 404
    assert api.get("/users/me", token=stranger.token).status_code == 200


def test_my_organizations_lists_memberships_with_roles(api):
    owner = api.account()
    member = api.account()
    org_id = api.org(owner, "Acme")
    api.add_member(org_id, owner, member, roles=("admin",))

    response = api.get("/users/me/organizations", token=member.token)

    assert response.status_code == 200
    [item] = response.json()["items"]
    assert item["organization"]["id"] == org_id
    assert item["organization"]["name"] == "Acme"
    assert item["roles"] == ["admin"]
    assert "joined_at" in item


# --- deactivation -------------------------------------------------------------------------------


def test_delete_me_deactivates_and_ends_sessions(api):
    account = api.account()

    response = api.delete("/users/me", token=account.token)

    assert response.status_code == 204
    assert api.get("/users/me", token=account.token).status_code == 401
    login = api.post("/auth/login", json={"email": account.email, "password": account.password})
    assert login.status_code == 401


def test_delete_me_as_sole_owner_is_409(api):
    owner = api.account()
    org_id = api.org(owner)

    response = api.delete("/users/me", token=owner.token)

    assert response.status_code == 409
    assert response.json()["code"] == "last_owner"
    assert response.json()["organizations"] == [org_id]
    assert api.get("/users/me", token=owner.token).status_code == 200


# --- admin API --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("GET", "/{id}", None),
        ("PATCH", "/{id}", {"name": "x"}),
        ("DELETE", "/{id}", None),
    ],
)
def test_admin_api_is_403_for_non_superusers(api, method, suffix, body):
    user = api.account()
    target = api.account()
    path = "/users" + suffix.replace("{id}", target.id)

    kwargs = {} if body is None else {"json": body}
    response = api.request(method, path, token=user.token, **kwargs)

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert api.get("/users/me", token=target.token).json()["name"] is None


def test_admin_lists_users_by_email_prefix_with_pagination(api):
    admin = api.account(email="root@admin.example.com", superuser=True)
    for n in range(5):
        api.account(email=f"alice{n}@example.com")
    api.account(email="bob@example.com")

    first = api.get("/users", params={"email_prefix": "ALICE", "limit": "2"}, token=admin.token)
    assert first.status_code == 200
    emails = [u["email"] for u in first.json()["items"]]
    cursor = first.json()["next_cursor"]
    assert len(emails) == 2
    while cursor:
        page = api.get(
            "/users",
            params={"email_prefix": "alice", "limit": "2", "cursor": cursor},
            token=admin.token,
        )
        assert page.status_code == 200
        emails += [u["email"] for u in page.json()["items"]]
        cursor = page.json()["next_cursor"]

    assert sorted(emails) == [f"alice{n}@example.com" for n in range(5)]
    everyone = api.get("/users", token=admin.token).json()["items"]
    assert len(everyone) == 7


def test_admin_list_refuses_a_bad_cursor_and_limit(api):
    admin = api.account(superuser=True)

    assert api.get("/users", params={"cursor": "%%%"}, token=admin.token).status_code == 422
    assert api.get("/users", params={"limit": "0"}, token=admin.token).status_code == 422
    assert api.get("/users", params={"limit": "abc"}, token=admin.token).status_code == 422


def test_admin_gets_updates_and_deletes_a_user(api):
    admin = api.account(superuser=True)
    target = api.account(verified=False)

    got = api.get(f"/users/{target.id}", token=admin.token)
    assert got.status_code == 200
    assert got.json()["email"] == target.email

    patched = api.patch(
        f"/users/{target.id}", json={"is_verified": True, "name": "Checked"}, token=admin.token
    )
    assert patched.status_code == 200
    assert patched.json()["is_verified"] is True
    assert patched.json()["name"] == "Checked"

    bad = api.patch(f"/users/{target.id}", json={"email": "x@example.com"}, token=admin.token)
    assert bad.status_code == 422

    assert api.delete(f"/users/{target.id}", token=admin.token).status_code == 204
    assert api.get("/users/me", token=target.token).status_code == 401
    assert api.get(f"/users/{target.id}", token=admin.token).json()["is_active"] is False


def test_admin_deactivating_through_patch_ends_sessions(api):
    admin = api.account(superuser=True)
    target = api.account()

    response = api.patch(f"/users/{target.id}", json={"is_active": False}, token=admin.token)

    assert response.status_code == 200
    assert api.get("/users/me", token=target.token).status_code == 401


def test_admin_delete_of_a_sole_owner_is_409(api):
    admin = api.account(superuser=True)
    owner = api.account()
    api.org(owner)

    response = api.delete(f"/users/{owner.id}", token=admin.token)

    assert response.status_code == 409
    assert response.json()["code"] == "last_owner"


@pytest.mark.parametrize("user_id", ["01900000-0000-7000-8000-000000000000", "nope"])
def test_admin_unknown_user_is_404(api, user_id):
    admin = api.account(superuser=True)

    assert api.get(f"/users/{user_id}", token=admin.token).status_code == 404
    assert api.patch(f"/users/{user_id}", json={"name": "x"}, token=admin.token).status_code == 404
    assert api.delete(f"/users/{user_id}", token=admin.token).status_code == 404
