"""Invitations: create, list, revoke (``member:invite``) and accept (the invitee)."""

from __future__ import annotations

import pytest


@pytest.fixture
def org(api):
    owner = api.account(email="owner@example.com")
    return api.org(owner, "Acme"), owner


def test_create_list_and_accept(api, org):
    org_id, owner = org
    invitee = api.account(email="new@example.com")

    created = api.post(
        f"/organizations/{org_id}/invitations",
        json={"email": "New@Example.com", "roles": ["admin"]},
        token=owner.token,
    )
    assert created.status_code == 201
    invitation = created.json()
    assert invitation["email"] == "new@example.com"
    assert invitation["roles"] == ["admin"]
    assert invitation["status"] == "pending"
    assert invitation["organization_id"] == org_id
    assert "token" not in invitation

    listed = api.get(f"/organizations/{org_id}/invitations", token=owner.token).json()
    assert [i["id"] for i in listed["items"]] == [invitation["id"]]
    assert listed["next_cursor"] is None

    token = api.mail_token("new@example.com", "invitation")
    accepted = api.post("/invitations/accept", json={"token": token}, token=invitee.token)
    assert accepted.status_code == 200
    assert accepted.json()["organization"]["id"] == org_id
    assert accepted.json()["roles"] == ["admin"]
    assert api.get(f"/organizations/{org_id}", token=invitee.token).status_code == 200

    again = api.post("/invitations/accept", json={"token": token}, token=invitee.token)
    assert again.status_code == 400
    after = api.get(f"/organizations/{org_id}/invitations", token=owner.token).json()["items"]
    assert after[0]["status"] == "accepted"


def test_default_role_is_member(api, org):
    org_id, owner = org

    created = api.post(
        f"/organizations/{org_id}/invitations", json={"email": "m@example.com"}, token=owner.token
    )

    assert created.status_code == 201
    assert created.json()["roles"] == ["member"]


def test_invitations_list_paginates(api, org):
    org_id, owner = org
    for n in range(3):
        api.post(
            f"/organizations/{org_id}/invitations",
            json={"email": f"p{n}@example.com"},
            token=owner.token,
        )

    first = api.get(
        f"/organizations/{org_id}/invitations", params={"limit": "2"}, token=owner.token
    ).json()
    second = api.get(
        f"/organizations/{org_id}/invitations",
        params={"limit": "2", "cursor": first["next_cursor"]},
        token=owner.token,
    ).json()

    assert len(first["items"]) == 2
    assert len(second["items"]) == 1
    assert second["next_cursor"] is None


def test_create_errors(api, org):
    org_id, owner = org
    member = api.account()
    api.add_member(org_id, owner, member)
    path = f"/organizations/{org_id}/invitations"

    assert api.post(path, json={"email": "x@example.com"}, token=member.token).status_code == 403
    already = api.post(path, json={"email": member.email}, token=owner.token)
    assert already.status_code == 409
    assert already.json()["code"] == "already_member"
    assert api.post(path, json={"email": "not-an-email"}, token=owner.token).status_code == 422
    unknown_role = api.post(
        path, json={"email": "y@example.com", "roles": ["x"]}, token=owner.token
    )
    assert unknown_role.status_code == 422
    assert api.get(path, token=member.token).status_code == 403


def test_revoke(api, org):
    org_id, owner = org
    invitee = api.account(email="r@example.com")
    created = api.post(
        f"/organizations/{org_id}/invitations", json={"email": invitee.email}, token=owner.token
    ).json()
    token = api.mail_token(invitee.email, "invitation")
    path = f"/organizations/{org_id}/invitations/{created['id']}"

    assert api.delete(path, token=owner.token).status_code == 204
    again = api.delete(path, token=owner.token)
    assert again.status_code == 409
    assert again.json()["code"] == "invitation_not_pending"
    refused = api.post("/invitations/accept", json={"token": token}, token=invitee.token)
    assert refused.status_code == 400
    missing = f"/organizations/{org_id}/invitations/01900000-0000-7000-8000-000000000000"
    assert api.delete(missing, token=owner.token).status_code == 404


def test_accept_requires_the_invited_verified_address(api, org):
    org_id, owner = org
    api.post(
        f"/organizations/{org_id}/invitations", json={"email": "inv@example.com"}, token=owner.token
    )
    token = api.mail_token("inv@example.com", "invitation")
    other = api.account(email="other@example.com")
    unverified = api.account(email="inv@example.com", verified=False)

    mismatch = api.post("/invitations/accept", json={"token": token}, token=other.token)
    assert mismatch.status_code == 403
    assert mismatch.json()["code"] == "invitation_email_mismatch"
    not_verified = api.post("/invitations/accept", json={"token": token}, token=unverified.token)
    assert not_verified.status_code == 403
    assert not_verified.json()["code"] == "email_not_verified"
    assert api.post("/invitations/accept", json={"token": token}).status_code == 401
    bogus = api.post("/invitations/accept", json={"token": "x" * 43}, token=other.token)
    assert bogus.status_code == 400
    assert bogus.json()["code"] == "token_invalid"


def test_accept_an_expired_invitation(api, org):
    org_id, owner = org
    invitee = api.account(email="late@example.com")
    api.post(
        f"/organizations/{org_id}/invitations", json={"email": invitee.email}, token=owner.token
    )
    token = api.mail_token(invitee.email, "invitation")
    api.clock.advance(seconds=api.um.settings.invitation_ttl_seconds + 1)
    invitee = api.relogin(invitee)

    response = api.post("/invitations/accept", json={"token": token}, token=invitee.token)

    assert response.status_code == 400
    assert response.json()["code"] == "invitation_expired"
