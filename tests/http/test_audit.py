"""``GET /organizations/{org_id}/audit-logs``: filters, cursor pagination, access."""

from __future__ import annotations

import pytest


@pytest.fixture
def trail(api):
    """An organization with a few audited changes spread over time."""
    owner, member = api.account(), api.account()
    org_id = api.org(owner, "Acme")
    api.clock.advance(seconds=60)
    api.add_member(org_id, owner, member)
    api.clock.advance(seconds=60)
    api.patch(f"/organizations/{org_id}", json={"name": "Acme 2"}, token=owner.token)
    api.clock.advance(seconds=60)
    api.patch(f"/organizations/{org_id}", json={"name": "Acme 3"}, token=owner.token)
    return org_id, owner, member


def test_lists_events_newest_first(api, trail):
    org_id, owner, _ = trail

    response = api.get(f"/organizations/{org_id}/audit-logs", token=owner.token)

    assert response.status_code == 200
    events = response.json()["items"]
    times = [e["occurred_at"] for e in events]
    assert times == sorted(times, reverse=True)
    assert events[0]["action"] == "organization.updated"
    assert events[-1]["action"] == "organization.created"
    assert {e["organization_id"] for e in events} == {org_id}
    assert events[0]["request_id"]  # the HTTP request id is recorded


def test_filters(api, trail):
    org_id, owner, member = trail
    path = f"/organizations/{org_id}/audit-logs"

    updated = api.get(path, params={"action": "organization.updated"}, token=owner.token).json()
    assert [e["action"] for e in updated["items"]] == ["organization.updated"] * 2

    by_member = api.get(path, params={"actor_id": member.id}, token=owner.token).json()
    assert by_member["items"]
    assert {e["actor_user_id"] for e in by_member["items"]} == {member.id}

    start = "2026-01-01T12:02:00Z"
    recent = api.get(path, params={"since": start}, token=owner.token).json()["items"]
    assert recent
    assert all(e["occurred_at"] >= start for e in recent)
    early = api.get(path, params={"until": "2026-01-01T12:00:30Z"}, token=owner.token).json()
    assert [e["action"] for e in early["items"]] == ["organization.created"]


def test_cursor_pagination_walks_every_event_once(api, trail):
    org_id, owner, _ = trail
    path = f"/organizations/{org_id}/audit-logs"
    everything = [e["id"] for e in api.get(path, token=owner.token).json()["items"]]

    seen, cursor = [], None
    while True:
        params = {"limit": "2"} if cursor is None else {"limit": "2", "cursor": cursor}
        page = api.get(path, params=params, token=owner.token).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == everything


@pytest.mark.parametrize(
    "params",
    [
        {"since": "2026-01-01T12:00:00"},  # no timezone
        {"since": "yesterday"},
        {"actor_id": "nobody"},
        {"cursor": "not a cursor!"},
        {"limit": "0"},
        {"limit": "100000"},
        {"action": "x" * 101},
    ],
)
def test_bad_filters_are_422(api, trail, params):
    org_id, owner, _ = trail

    response = api.get(f"/organizations/{org_id}/audit-logs", params=params, token=owner.token)

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


def test_needs_audit_read(api, trail):
    org_id, _, member = trail
    outsider = api.account()
    path = f"/organizations/{org_id}/audit-logs"

    assert api.get(path, token=member.token).status_code == 403
    assert api.get(path, token=outsider.token).status_code == 404
    assert api.get(path).status_code == 401


def test_target_filters(api, trail):
    org_id, owner, member = trail
    path = f"/organizations/{org_id}/audit-logs"
    everything = api.get(path, token=owner.token).json()["items"]
    targeted = [e for e in everything if e["target_id"] == member.id]
    assert targeted

    found = api.get(
        path,
        params={"target_type": targeted[0]["target_type"], "target_id": member.id},
        token=owner.token,
    ).json()["items"]
    assert [e["id"] for e in found] == [e["id"] for e in targeted]
    none = api.get(path, params={"target_id": "nothing-has-this-id"}, token=owner.token)
    assert none.json()["items"] == []


def test_filtered_cursor_pages_stay_filtered(api, trail):
    org_id, owner, _ = trail
    path = f"/organizations/{org_id}/audit-logs"
    for n in range(3):
        api.clock.advance(seconds=60)
        api.patch(f"/organizations/{org_id}", json={"name": f"Acme {n + 4}"}, token=owner.token)
    seen, cursor = [], None
    while True:
        params = {"action": "organization.updated", "limit": "2"}
        if cursor is not None:
            params["cursor"] = cursor
        page = api.get(path, params=params, token=owner.token).json()
        assert len(page["items"]) <= 2
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [e["action"] for e in seen] == ["organization.updated"] * 5
    times = [e["occurred_at"] for e in seen]
    assert times == sorted(times, reverse=True)
    assert len({e["id"] for e in seen}) == 5


def test_superusers_query_every_organization_and_the_query_is_audited(api, trail):
    org_id, _, _ = trail
    other = api.org(api.account(), "Other")
    admin = api.account(superuser=True)

    response = api.get("/audit-logs", params={"limit": "100"}, token=admin.token)
    assert response.status_code == 200
    orgs = {e["organization_id"] for e in response.json()["items"]}
    assert {org_id, other} <= orgs

    only = api.get("/audit-logs", params={"organization_id": other}, token=admin.token).json()
    assert {e["organization_id"] for e in only["items"]} == {other}

    audited = api.get(
        "/audit-logs", params={"action": "admin.audit_logs_listed"}, token=admin.token
    ).json()["items"]
    # the two earlier queries (this one is recorded in the same transaction, too)
    assert len(audited) == 3
    assert {e["actor_user_id"] for e in audited} == {admin.id}
    assert audited[1]["organization_id"] is None  # the platform stream
    assert audited[1]["metadata"]["filters"] == {"organization_id": other}


def test_platform_query_needs_a_superuser(api, trail):
    _, owner, _ = trail

    assert api.get("/audit-logs", token=owner.token).status_code == 403
    assert api.get("/audit-logs").status_code == 401
    admin = api.account(superuser=True)
    denied = api.get(
        "/audit-logs", params={"action": "authorization.denied"}, token=admin.token
    ).json()["items"]
    assert [(e["actor_user_id"], e["target_id"]) for e in denied] == [(owner.id, "superuser")]
    bad = api.get("/audit-logs", params={"organization_id": "nope"}, token=admin.token)
    assert bad.status_code == 422
