"""SPEC §6 "bad input": every route with a body answers malformed JSON, wrong types,
unknown fields and huge bodies with a 4xx problem document, never a 500.

Also: the validation errors of the HTTP layer have exactly the shape the core gives
(``usermgmt.schemas.parse``), so both adapters and direct Python callers agree.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usermgmt import schemas
from usermgmt.errors import ValidationError

PASSWORD = "correct horse battery staple"
TWO_MIB = 2 * 1024 * 1024

#: Every route with a JSON body: (method, path template, a valid body).
BODY_ROUTES = [
    ("POST", "/auth/register", {"email": "n@example.com", "password": PASSWORD}),
    ("POST", "/auth/login", {"email": "n@example.com", "password": PASSWORD}),
    ("POST", "/auth/refresh", {"refresh_token": "x"}),
    ("POST", "/auth/verify-email", {"token": "x"}),
    ("POST", "/auth/password/forgot", {"email": "n@example.com"}),
    ("POST", "/auth/password/reset", {"token": "x", "password": PASSWORD}),
    ("PATCH", "/users/me", {"name": "N"}),
    ("POST", "/users/me/password", {"current_password": PASSWORD, "new_password": PASSWORD}),
    ("PATCH", "/users/{user}", {"name": "N"}),
    ("POST", "/organizations", {"name": "N"}),
    ("PATCH", "/organizations/{org}", {"name": "N"}),
    ("PATCH", "/organizations/{org}/members/{user}", {"roles": ["member"]}),
    ("POST", "/organizations/{org}/roles", {"name": "N"}),
    ("PATCH", "/organizations/{org}/roles/{role}", {"name": "N"}),
    ("POST", "/organizations/{org}/invitations", {"email": "n@example.com"}),
    ("POST", "/invitations/accept", {"token": "x"}),
]
IDS = [f"{m} {p}" for m, p, _ in BODY_ROUTES]

WRONG_TYPES = [12345, 1.5, True, None, [], {}, ["a"], {"a": 1}]
NOT_AN_OBJECT = ["[]", '"text"', "42", "null", "true", "[1, 2]"]
MALFORMED = [
    '{"email": ',
    "{'email': 'single quotes'}",
    '{"a": 1,}',
    "not json at all",
    "{" * 50,
    '{"a": 1}{"b": 2}',
]


@pytest.fixture
def world(api):
    """A superuser owning an organization with a member and a custom role, so every
    route's authorization passes and only the body decides the answer."""
    root = api.account(superuser=True)
    member = api.account()
    org = api.org(root, "Acme")
    api.add_member(org, root, member)
    role = api.post(f"/organizations/{org}/roles", json={"name": "Custom"}, token=root.token)
    ids = {"org": org, "user": member.id, "role": role.json()["id"]}
    return root, ids


def _path(template, ids):
    return template.format(**ids)


def _assert_client_error(response, *codes):
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if codes:
        assert response.json()["code"] in codes, response.json()


@pytest.mark.parametrize(("method", "template", "body"), BODY_ROUTES, ids=IDS)
def test_malformed_json(api, world, method, template, body):
    root, ids = world
    for text in MALFORMED:
        response = api.request(
            method,
            _path(template, ids),
            content=text,
            headers={"Content-Type": "application/json"},
            token=root.token,
        )
        assert response.status_code == 422
        assert response.json()["code"] == "validation_error"
        assert text not in response.text  # the input is never echoed


@pytest.mark.parametrize(("method", "template", "body"), BODY_ROUTES, ids=IDS)
def test_body_that_is_not_an_object(api, world, method, template, body):
    root, ids = world
    for text in NOT_AN_OBJECT:
        response = api.request(
            method,
            _path(template, ids),
            content=text,
            headers={"Content-Type": "application/json"},
            token=root.token,
        )
        _assert_client_error(response, "validation_error")


@pytest.mark.parametrize(("method", "template", "body"), BODY_ROUTES, ids=IDS)
def test_wrong_types_for_every_field(api, world, method, template, body):
    root, ids = world
    for field in body:
        for value in WRONG_TYPES:
            if field == "name" and value is None and template != "/organizations":
                continue  # a null name is a valid "no name" in these updates
            bad = {**body, field: value}
            response = api.request(method, _path(template, ids), json=bad, token=root.token)
            _assert_client_error(response)
            assert response.status_code == 422, (field, value, response.json())


@pytest.mark.parametrize(("method", "template", "body"), BODY_ROUTES, ids=IDS)
def test_unknown_fields(api, world, method, template, body):
    root, ids = world
    for extra in ({"unexpected": 1}, {"is_superuser": True}, {"organization_id": ids["org"]}):
        if template == "/users/{user}" and "is_superuser" in extra:
            continue  # a field of the superuser's update, not an unknown one
        response = api.request(
            method, _path(template, ids), json={**body, **extra}, token=root.token
        )
        _assert_client_error(response, "validation_error")
        errors = response.json()["errors"]
        assert [e["loc"] for e in errors if e["type"] == "extra_forbidden"] == [list(extra)]


@pytest.mark.parametrize(("method", "template", "body"), BODY_ROUTES, ids=IDS)
def test_two_mib_body_is_413(api, world, method, template, body):
    root, ids = world
    huge = json.dumps({**body, "padding": "x" * TWO_MIB})

    response = api.request(
        method,
        _path(template, ids),
        content=huge,
        headers={"Content-Type": "application/json"},
        token=root.token,
    )

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


@pytest.mark.parametrize(("method", "template", "body"), BODY_ROUTES, ids=IDS)
def test_other_bodies(api, world, method, template, body):
    root, ids = world
    path = _path(template, ids)
    unreadable = [
        {"content": None},  # no body at all
        {"content": json.dumps(body), "headers": {"Content-Type": "text/plain"}},
        {"content": b'{"name": "\xff\xfe"}', "headers": {"Content-Type": "application/json"}},
        {"content": "[" * 100_000, "headers": {"Content-Type": "application/json"}},
    ]
    for case in unreadable:
        response = api.request(method, path, token=root.token, **case)
        assert response.status_code == 422, (case, response.json())
        assert response.json()["code"] == "validation_error"
    # odd values: refused by validation or by the operation (a bad token is 400/401)
    for case in (
        {"json": dict.fromkeys(body, "x" * 10000)},
        {"json": dict.fromkeys(body, "\0\r\n")},
    ):
        _assert_client_error(api.request(method, path, token=root.token, **case))


def test_metadata_must_be_finite_json(api, world):
    root, _ = world

    response = api.request(
        "PATCH",
        "/users/me",
        content='{"metadata": {"x": NaN}}',
        headers={"Content-Type": "application/json"},
        token=root.token,
    )

    assert response.status_code == 422


def test_oversized_metadata(api, world):
    root, _ = world

    response = api.patch(
        "/users/me",
        json={"metadata": {"k": "v" * (schemas.MAX_METADATA_BYTES + 1)}},
        token=root.token,
    )

    assert response.status_code == 422


def test_invalid_content_length_is_400(api):
    response = api.post(
        "/auth/login",
        content=b"{}",
        headers={"Content-Type": "application/json", "Content-Length": "abc"},
    )

    assert response.status_code == 400


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/users", {"limit": "abc"}),
        ("/users", {"limit": "-1"}),
        ("/users", {"cursor": "x" * 500}),
        ("/organizations/{org}/members", {"limit": "1e9"}),
        ("/organizations/{org}/members", {"cursor": "!!"}),
        ("/organizations/{org}/invitations", {"limit": ""}),
        ("/organizations/{org}/invitations", {"cursor": "AAAA"}),
        ("/organizations/{org}/audit-logs", {"until": "2026-13-45T00:00:00Z"}),
    ],
)
def test_bad_query_parameters_are_422(api, world, path, params):
    root, ids = world

    response = api.get(path.format(**ids), params=params, token=root.token)

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize(
    ("model", "path", "body"),
    [
        (schemas.RegisterIn, "/auth/register", {"email": "bad", "password": PASSWORD, "x": 1}),
        (schemas.RegisterIn, "/auth/register", {"password": 5}),
        (schemas.ProfileUpdateIn, "/users/me", {"name": "", "metadata": []}),
        (schemas.OrganizationCreateIn, "/organizations", {"name": "A", "slug": "Bad Slug"}),
    ],
)
def test_validation_errors_have_the_core_shape(api, world, model, path, body):
    root, _ = world
    with pytest.raises(ValidationError) as core:
        schemas.parse(model, body)
    method = "PATCH" if path == "/users/me" else "POST"

    response = api.request(method, path, json=body, token=root.token)

    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == core.value.code
    assert problem["errors"] == core.value.errors
    assert problem["detail"] == core.value.detail


def test_too_long_password_is_password_too_long_everywhere(api, world):
    root, _ = world
    long = "x" * 5000

    for path, body in [
        ("/auth/register", {"email": "l@example.com", "password": long}),
        ("/auth/login", {"email": "l@example.com", "password": long}),
        ("/auth/password/reset", {"token": "t", "password": long}),
        ("/users/me/password", {"current_password": PASSWORD, "new_password": long}),
    ]:
        response = api.post(path, json=body, token=root.token)
        assert response.status_code == 422, path
        assert response.json()["code"] == "password_too_long", path


# --- property-based fuzz (SEC-IV-01) -------------------------------------------------------------

FUZZ = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.text(alphabet="\r\n\t\x00\u2028 {}\"'<>;:@.-_$%", max_size=20),
    st.sampled_from(["x" * 5000, "a@" + "b" * 300 + ".com", "' OR 1=1 --", "../../etc/passwd"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)


@pytest.mark.parametrize(("method", "template", "body"), BODY_ROUTES, ids=IDS)
def test_fuzzed_bodies_never_cause_a_server_error(api, world, method, template, body):
    root, ids = world
    path = _path(template, ids)
    fields = st.fixed_dictionaries({}, optional=dict.fromkeys(body, json_values))

    @FUZZ
    @given(payload=st.one_of(fields, json_values))
    def probe(payload):
        response = api.request(method, path, json=payload, token=root.token)
        assert response.status_code < 500, (payload, response.text)

    probe()
