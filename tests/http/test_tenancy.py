"""SEC-AC-02: the cross-tenant matrix over EVERY organization-scoped route.

Organizations A and B, each with its owner, a second member, a custom role and a
pending invitation. The owner of A (who holds every permission in A) calls each route:

* with B's id, and B's resource ids → 404, and B is unchanged;
* with A's id but B's resource ids → 404, and B is unchanged.

The route list is checked against the adapter's OpenAPI document (when it serves one)
so that a new org-scoped route cannot be added without joining the matrix.
"""

from __future__ import annotations

import re

import pytest

from tests.http.conftest import DEMO_PATH

#: Every org-scoped route: (method, path template, body). ``{org}`` is the organization;
#: ``{user}``, ``{role}`` and ``{invitation}`` are resources of the organization.
ORG_ROUTES = [
    ("GET", "/organizations/{org}", None),
    ("PATCH", "/organizations/{org}", {"name": "Hijacked"}),
    ("DELETE", "/organizations/{org}", None),
    ("GET", "/organizations/{org}/members", None),
    ("GET", "/organizations/{org}/members/{user}", None),
    ("PATCH", "/organizations/{org}/members/{user}", {"roles": ["member"]}),
    ("DELETE", "/organizations/{org}/members/{user}", None),
    ("POST", "/organizations/{org}/leave", None),
    ("GET", "/organizations/{org}/permissions/me", None),
    ("GET", "/organizations/{org}/roles", None),
    ("POST", "/organizations/{org}/roles", {"name": "Intruder"}),
    ("GET", "/organizations/{org}/roles/{role}", None),
    ("PATCH", "/organizations/{org}/roles/{role}", {"description": "hijacked"}),
    ("DELETE", "/organizations/{org}/roles/{role}", None),
    ("POST", "/organizations/{org}/invitations", {"email": "spy@example.com"}),
    ("GET", "/organizations/{org}/invitations", None),
    ("DELETE", "/organizations/{org}/invitations/{invitation}", None),
    ("GET", "/organizations/{org}/audit-logs", None),
    ("GET", DEMO_PATH.replace("{org_id}", "{org}"), None),
]
WITH_RESOURCE = [
    route for route in ORG_ROUTES if re.search(r"\{(user|role|invitation)\}", route[1])
]


class Tenant:
    def __init__(self, api, name: str) -> None:
        self.owner = api.account(email=f"owner@{name}.example.com")
        self.member = api.account(email=f"member@{name}.example.com")
        self.org = api.org(self.owner, name.upper(), slug=name)
        api.add_member(self.org, self.owner, self.member)
        role = api.post(
            f"/organizations/{self.org}/roles",
            json={"name": "Custom", "permissions": ["member:read"]},
            token=self.owner.token,
        )
        self.role = role.json()["id"]
        invitation = api.post(
            f"/organizations/{self.org}/invitations",
            json={"email": f"invitee@{name}.example.com"},
            token=self.owner.token,
        )
        self.invitation = invitation.json()["id"]

    def snapshot(self, api) -> dict[str, object]:
        """What must not change when another tenant probes this one."""
        token = self.owner.token
        base = f"/organizations/{self.org}"
        return {
            "org": api.get(base, token=token).json(),
            "members": api.get(f"{base}/members", token=token).json(),
            "roles": api.get(f"{base}/roles", token=token).json(),
            "invitations": api.get(f"{base}/invitations", token=token).json(),
        }


@pytest.fixture
def tenants(api):
    return Tenant(api, "alpha"), Tenant(api, "beta")


def _fill(template: str, org: str, resources: Tenant) -> str:
    return template.format(
        org=org,
        user=resources.member.id,
        role=resources.role,
        invitation=resources.invitation,
    )


@pytest.mark.parametrize(("method", "template", "body"), ORG_ROUTES, ids=lambda v: str(v))
def test_other_organization_is_404(api, tenants, method, template, body):
    a, b = tenants
    before = b.snapshot(api)

    kwargs = {} if body is None else {"json": body}
    response = api.request(method, _fill(template, b.org, b), token=a.owner.token, **kwargs)

    assert response.status_code == 404, response.json()
    assert response.json()["code"] == "not_found"
    assert b.snapshot(api) == before


@pytest.mark.parametrize(("method", "template", "body"), WITH_RESOURCE, ids=lambda v: str(v))
def test_other_organizations_resources_under_own_organization_are_404(
    api, tenants, method, template, body
):
    a, b = tenants
    before = b.snapshot(api)

    kwargs = {} if body is None else {"json": body}
    response = api.request(method, _fill(template, a.org, b), token=a.owner.token, **kwargs)

    assert response.status_code == 404, response.json()
    assert b.snapshot(api) == before


def test_accepting_another_tenants_invitation_is_refused(api, tenants):
    a, b = tenants
    token = api.mail_token("invitee@beta.example.com", "invitation")

    response = api.post("/invitations/accept", json={"token": token}, token=a.owner.token)

    assert response.status_code == 403
    assert response.json()["code"] == "invitation_email_mismatch"
    assert api.get(f"/organizations/{b.org}", token=a.owner.token).status_code == 404


def test_lists_never_show_another_tenants_data(api, tenants):
    a, b = tenants

    mine = api.get("/users/me/organizations", token=a.owner.token).json()["items"]
    members = api.get(f"/organizations/{a.org}/members", token=a.owner.token).json()["items"]
    events = api.get(f"/organizations/{a.org}/audit-logs", token=a.owner.token).json()["items"]

    assert [m["organization"]["id"] for m in mine] == [a.org]
    assert b.owner.id not in {m["user"]["id"] for m in members}
    assert {e["organization_id"] for e in events} == {a.org}


def test_the_matrix_covers_every_org_scoped_route(api):
    document = api.openapi()
    if document is None:  # an adapter without an OpenAPI document: the list is the contract
        return
    served = {
        (method.upper(), re.sub(r"\{[^}]+\}", "{}", path))
        for path, operations in document["paths"].items()
        if path.startswith("/organizations/{")
        for method in operations
    }
    tested = {(m, re.sub(r"\{[^}]+\}", "{}", t)) for m, t, _ in ORG_ROUTES}

    assert served - tested == set()
