"""The OpenAPI document tells the truth (for adapters that serve one).

* every operation says who may call it (``x-usermgmt-access``, SEC-AC-01: deny by
  default, nothing undeclared), and every non-public one requires the bearer scheme
  and documents 401;
* every operation with a body documents 400, 413 and 422, and every error response is a
  problem document;
* every status the other HTTP tests observed on an operation is documented (this
  module runs last, see ``pytest_collection_modifyitems`` in conftest). 500 is never
  documented: it is by definition not part of the contract.
"""

from __future__ import annotations

import re

import pytest

from tests.http.conftest import OBSERVED, OPENAPI_ADAPTERS

ACCESS = "x-usermgmt-access"
PUBLIC = {"anyone"}
KINDS = {"anyone", "user", "member", "superuser"}
PERMISSION = re.compile(r"^[a-z][a-z0-9_-]*:[a-z][a-z0-9_-]*$")
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(params=OPENAPI_ADAPTERS)
def adapter(request):
    """Only the adapters that serve an OpenAPI document (overrides conftest's)."""
    return request.param


@pytest.fixture
def document(api_factory):
    spec = api_factory().openapi()
    assert spec is not None
    return spec


def _operations(document):
    for path, item in document["paths"].items():
        if path.startswith("/_demo"):
            continue  # the test application's own routes
        for method, operation in item.items():
            if method in METHODS:
                yield path, method.upper(), operation


def test_every_operation_declares_who_may_call_it(document):
    undeclared = []
    for path, method, operation in _operations(document):
        who = operation.get(ACCESS)
        if who not in KINDS and not (isinstance(who, str) and PERMISSION.match(who)):
            undeclared.append(f"{method} {path}: {who!r}")
            continue
        secured = bool(operation.get("security"))
        if who in PUBLIC:
            assert not secured, f"{method} {path} is public but asks for a token"
        else:
            assert secured, f"{method} {path} ({who}) does not require the bearer token"
            assert "401" in operation["responses"], f"{method} {path} does not document 401"
    assert undeclared == []


def test_bodies_document_400_413_422_and_errors_are_problems(document):
    for path, method, operation in _operations(document):
        responses = operation["responses"]
        if "requestBody" in operation:
            assert {"400", "413", "422"} <= set(responses), f"{method} {path}"
            assert "application/json" in operation["requestBody"]["content"]
        for status, response in responses.items():
            if int(status) >= 400 and not path.startswith("/health"):
                assert list(response.get("content", {})) == ["application/problem+json"], (
                    f"{method} {path} {status}"
                )
        if not path.startswith("/health"):
            assert "429" in responses, f"{method} {path}: the global rate limit"


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")


def test_observed_statuses_are_documented(document, adapter):
    observed = OBSERVED.get(adapter, set())
    operations = {(method, path): op for path, method, op in _operations(document)}
    # literal paths first, so that /users/me is not taken for /users/{user_id}
    templates = sorted({path for _, path in operations}, key=lambda p: (p.count("{"), p))
    patterns = [(template, _template_regex(template)) for template in templates]

    missing = set()
    for method, path, status in observed:
        if status == 500:
            continue
        template = next((t for t, pattern in patterns if pattern.match(path)), None)
        operation = operations.get((method, template)) if template else None
        if operation is None:
            continue  # no such operation (404 / 405 probes, the demo routes)
        if str(status) not in operation["responses"]:
            missing.add((method, template, status))

    assert sorted(missing) == [], "\n".join(map(str, sorted(missing)))
