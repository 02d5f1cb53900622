"""The adapters' per-request fast path (issue 5) keeps the security behaviour: the
dependencies FastAPI resolves as security schemes, the caller remembered for the
request, the permission answered without a request context, the gated routers, the
slimmer middleware and Flask hooks, the cheaper core helpers they use."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest

from tests.http.conftest import DEMO_PATH, DEMO_PERMISSION
from usermgmt import http
from usermgmt.backends.memory import MemoryRateLimiter
from usermgmt.backends.memory.store import detach
from usermgmt.clock import FakeClock
from usermgmt.models import User
from usermgmt.ports import RateLimitResult


@pytest.fixture
def team(api):
    """An organization with an owner and a plain member (no ``project:read``)."""
    owner, member = api.account(), api.account()
    org_id = api.org(owner, "Acme")
    api.add_member(org_id, owner, member)
    return org_id, owner, member


# --- both adapters: refusals take effect at once ------------------------------------------------


def test_a_logged_out_session_is_refused_at_once_on_a_guarded_route(api, team):
    org_id, owner, _ = team
    path = DEMO_PATH.format(org_id=org_id)
    assert api.get(path, token=owner.token).status_code == 200  # the token is now remembered

    api.um.auth.logout(owner.user.id, uuid.UUID(owner.session_id))

    refused = api.get(path, token=owner.token)
    assert refused.status_code == 401
    assert api.get("/users/me", token=owner.token).status_code == 401


def test_a_deactivated_member_is_refused_at_once_on_a_guarded_route(api, team):
    org_id, owner, _ = team
    admin = api.account()
    api.add_member(org_id, owner, admin, roles=("admin",))
    path = DEMO_PATH.format(org_id=org_id)
    assert api.get(path, token=admin.token).status_code == 200

    api.um.users.deactivate(admin.user.id)

    assert api.get(path, token=admin.token).status_code == 401


def test_a_role_taken_away_is_refused_at_once(api, team):
    org_id, owner, member = team
    path = DEMO_PATH.format(org_id=org_id)
    assert api.get(path, token=member.token).status_code == 403
    api.um.members.update_roles(owner.user.id, uuid.UUID(org_id), member.user.id, ["admin"])
    assert api.get(path, token=member.token).status_code == 200

    api.um.members.update_roles(owner.user.id, uuid.UUID(org_id), member.user.id, ["member"])

    denied = api.get(path, token=member.token)
    assert denied.status_code == 403
    assert denied.json()["permission"] == DEMO_PERMISSION


def test_a_refusal_is_audited_with_the_request_context(api, team):
    org_id, _, member = team
    response = api.get(
        DEMO_PATH.format(org_id=org_id), token=member.token, headers={"X-Request-ID": "req-42"}
    )
    assert response.status_code == 403

    events = api.um.audit.list(
        team[1].user.id, uuid.UUID(org_id), action="authorization.denied"
    ).items
    assert [e.request_id for e in events] == ["req-42"]
    assert events[0].actor_user_id == member.user.id
    assert events[0].ip == "testclient"


def test_another_token_in_the_same_app_is_not_mistaken_for_the_remembered_one(api, team):
    org_id, owner, member = team
    path = DEMO_PATH.format(org_id=org_id)
    assert api.get(path, token=owner.token).json()["user_id"] == owner.id
    assert api.get(path, token=member.token).status_code == 403
    assert api.get(path, token=owner.token + "x").status_code == 401
    assert api.get(path, token=owner.token).json()["user_id"] == owner.id


# --- the helpers of the fast path ---------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/health", "/health/", "/health/live", "/healthz", "/metrics", "/metrics/x", "/", "/users"],
)
def test_a_prepared_exemption_agrees_with_is_exempt(path):
    prefixes = ("/health", "/metrics/")
    assert http.exemption(prefixes)(path) == http.is_exempt(path, prefixes)


@pytest.mark.parametrize(("remaining", "reset_after"), [(9, 0.2), (0, 59.0), (-1, 0.0)])
def test_raw_rate_limit_headers_are_those_of_rate_limit_headers(remaining, reset_after):
    decision = RateLimitResult(allowed=True, limit=10, remaining=remaining, reset_after=reset_after)
    expected = http.rate_limit_headers(10, remaining, reset_after)
    raw = http.rate_limit_headers_raw(decision)
    assert {k.decode(): v.decode() for k, v in raw} == {k.lower(): v for k, v in expected.items()}


def test_a_generated_request_id_is_32_fresh_hex_digits():
    ids = {http.request_id_from(None) for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in ids)
    assert http.request_id_from("abc-1") == "abc-1"


def test_detach_copies_the_metadata_and_nothing_else_changes():
    now = datetime.now(UTC)
    user = User(
        id=uuid.uuid4(), email="a@example.com", created_at=now, updated_at=now,
        name="A", metadata={"tags": ["x"], "n": {"k": 1}}, is_verified=True,
    )  # fmt: skip
    copy = detach(user)
    assert copy == user
    assert copy is not user
    assert copy.metadata is not user.metadata
    assert copy.metadata["tags"] is not user.metadata["tags"]
    copy.metadata["tags"].append("y")
    assert user.metadata == {"tags": ["x"], "n": {"k": 1}}
    empty = detach(User(id=uuid.uuid4(), email="b@example.com", created_at=now, updated_at=now))
    assert empty.metadata == {}


def test_the_memory_rate_limiter_counts_on_the_system_clock_and_on_a_fake_one():
    system = MemoryRateLimiter()
    assert [system.hit("k", limit=2, window_seconds=60).allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
    clock = FakeClock()
    fake = MemoryRateLimiter(clock)
    assert fake.hit("k", limit=1, window_seconds=10).allowed
    assert not fake.hit("k", limit=1, window_seconds=10).allowed
    clock.advance(seconds=11)
    assert fake.hit("k", limit=1, window_seconds=10).allowed
