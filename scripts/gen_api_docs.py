"""Generate ``docs/api.md``, the HTTP API reference, from the FastAPI adapter's OpenAPI document.

The reference is built from what the code declares, never written by hand: the script
mounts every router on a FastAPI application backed by ``UserManagement.in_memory()``,
reads ``app.openapi()`` and renders, per tag, each operation's method and path, who may
call it (the ``x-usermgmt-access`` extension), its parameters and request body fields,
its success statuses with their body schemas, and its error statuses with the problem
``code`` each can carry. The common conventions (problem documents, pagination, the
bearer token, rate-limit headers, request ids) come from the constants of
:mod:`usermgmt.http`.

Error codes: the status of every code comes from the error table
(:data:`usermgmt.http.STATUS_BY_ERROR`). For the statuses whose code depends on the
operation (400, 401 on public routes, 403, 409, 422 with passwords, 503 of ``/metrics``)
:data:`OPERATION_CODES` names the codes the operation's service can raise; each entry is
checked against the OpenAPI document and the table, so a renamed route, a removed status
or a code moved to another status stops this script instead of publishing a wrong page.

Usage::

    python scripts/gen_api_docs.py            # rewrite docs/api.md
    python scripts/gen_api_docs.py --check    # exit 1 if docs/api.md is stale

``tests/test_api_docs.py`` runs the check. Needs the ``fastapi`` extra.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from string import Template
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT: Final = ROOT / "docs" / "api.md"

if str(ROOT) not in sys.path:  # run from a checkout without installing it
    sys.path.insert(0, str(ROOT))

JSON: Final = "application/json"
PROBLEM: Final = "application/problem+json"
METHODS: Final = ("get", "post", "put", "patch", "delete")

#: How ``x-usermgmt-access`` values read in the reference.
WHO: Final[Mapping[str, str]] = {
    "anyone": "anyone, no token",
    "user": "any signed-in user",
    "member": "a member of the organization",
    "superuser": "a platform superuser",
}

#: Tag titles, in the order the routers are mounted (unknown tags follow, as named).
TAG_TITLES: Final[Mapping[str, str]] = {
    "auth": "Authentication",
    "users": "Users",
    "organizations": "Organizations, members, roles and permissions",
    "invitations": "Invitations",
    "audit": "Audit log",
    "health": "Health",
    "metrics": "Metrics",
}

#: A paragraph under a tag's heading, for what the OpenAPI document does not say.
TAG_NOTES: Final[Mapping[str, str]] = {
    "health": (
        "The bodies, healthy and unhealthy, and how to use these endpoints as Kubernetes\n"
        "probes and load-balancer checks are in [Health and metrics](health-and-metrics.md).\n"
        'An unhealthy check answers 503 with the same JSON shape and `"status":\n'
        '"unhealthy"`, not a problem document.'
    ),
    "metrics": (
        "The metric families, the `metrics` extra and the multi-process setup are in\n"
        "[Health and metrics](health-and-metrics.md#metrics). Keep `/metrics` off the\n"
        "public internet."
    ),
}

_PASSWORD_POLICY: Final = (
    "validation_error",
    "password_too_short",
    "password_too_long",
    "password_too_common",
    "password_breached",
)

#: Codes an operation can answer with, for the statuses where they depend on the
#: operation (what its service method raises). Statuses not listed here use
#: :func:`default_codes`. Checked by :func:`check_operation_codes`.
OPERATION_CODES: Final[Mapping[tuple[str, str], Mapping[int, Sequence[str]]]] = {
    ("POST", "/auth/register"): {
        409: ("email_taken",),
        422: _PASSWORD_POLICY,
    },
    ("POST", "/auth/login"): {
        401: ("invalid_credentials", "password_reset_required"),
        403: ("email_not_verified",),
        422: ("validation_error", "password_too_long"),
    },
    ("POST", "/auth/refresh"): {
        401: ("invalid_token", "token_expired", "token_revoked", "token_reused"),
    },
    ("POST", "/auth/verify-email"): {400: ("token_invalid", "bad_request")},
    ("POST", "/auth/password/reset"): {
        400: ("token_invalid", "bad_request"),
        422: _PASSWORD_POLICY,
    },
    ("POST", "/users/me/password"): {
        400: ("wrong_password", "bad_request"),
        422: _PASSWORD_POLICY,
    },
    ("DELETE", "/users/me"): {409: ("last_owner",)},
    ("DELETE", "/users/{user_id}"): {409: ("last_owner",)},
    ("POST", "/organizations"): {409: ("slug_taken",)},
    ("PATCH", "/organizations/{org_id}"): {409: ("slug_taken",)},
    ("PATCH", "/organizations/{org_id}/members/{user_id}"): {409: ("last_owner",)},
    ("DELETE", "/organizations/{org_id}/members/{user_id}"): {409: ("last_owner",)},
    ("POST", "/organizations/{org_id}/leave"): {409: ("last_owner",)},
    ("POST", "/organizations/{org_id}/roles"): {409: ("role_name_taken",)},
    ("PATCH", "/organizations/{org_id}/roles/{role_id}"): {
        409: ("system_role", "role_name_taken"),
    },
    ("DELETE", "/organizations/{org_id}/roles/{role_id}"): {
        409: ("system_role", "role_in_use"),
    },
    ("POST", "/organizations/{org_id}/invitations"): {409: ("already_member",)},
    ("DELETE", "/organizations/{org_id}/invitations/{invitation_id}"): {
        409: ("invitation_not_pending",),
    },
    ("POST", "/invitations/accept"): {
        400: ("token_invalid", "invitation_expired", "bad_request"),
        403: ("email_not_verified", "invitation_email_mismatch"),
        409: ("already_member",),
    },
    ("GET", "/metrics"): {503: ("missing_dependency",)},
}

#: Codes a route answers with a status of its own rather than the table's: ``/metrics``
#: without prometheus-client is 503 ``missing_dependency`` (a ConfigurationError, 500
#: elsewhere), so that the scrape target shows as down.
OWN_STATUS: Final[Mapping[tuple[str, str], Mapping[int, frozenset[str]]]] = {
    ("GET", "/metrics"): {503: frozenset({"missing_dependency"})},
}

#: 401 on routes that need a bearer token: no token, then each way a token fails.
BEARER_CODES: Final = ("authentication_failed", "invalid_token", "token_expired", "token_revoked")

#: The one reason the web layer answers 400 on every route: a bad ``Content-Length``.
FRAMEWORK_400: Final = "bad_request"


# --- the OpenAPI document ------------------------------------------------------------------


def build_document() -> dict[str, Any]:
    """The OpenAPI document of every router, mounted as ``usermgmt_fastapi.mount`` does."""
    from fastapi import FastAPI

    import usermgmt
    import usermgmt_fastapi

    um = usermgmt.UserManagement.in_memory()
    try:
        app = FastAPI(title="usermgmt", version=usermgmt.__version__)
        usermgmt_fastapi.mount(app, um)
        document: dict[str, Any] = app.openapi()
    finally:
        um.close()
    # A deep copy through JSON: the renderer never sees objects FastAPI may share.
    copied: dict[str, Any] = json.loads(json.dumps(document))
    return copied


def operations(document: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(METHOD, path, operation)`` in the document's order."""
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


# --- error codes -------------------------------------------------------------------------


def _error_classes() -> list[type[Any]]:
    """Every error class usermgmt defines (its own modules only, whatever else is loaded)."""
    from usermgmt.errors import UserMgmtError

    importlib.import_module("usermgmt_fastapi")  # loads the services and their errors
    found: list[type[Any]] = []
    todo: list[type[Any]] = [UserMgmtError]
    while todo:
        cls = todo.pop()
        if cls.__module__.split(".")[0] == "usermgmt" and cls not in found:
            found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


@functools.cache
def error_catalogue() -> tuple[tuple[int, str, str, str], ...]:
    """``(status, code, class name, title)`` of every core error, by status then code."""
    from usermgmt.http import STATUS_BY_ERROR

    rows = set()
    for cls in _error_classes():
        status = next(STATUS_BY_ERROR[c] for c in cls.__mro__ if c in STATUS_BY_ERROR)
        rows.add((status, cls.code, cls.__name__, cls.title))
    return tuple(sorted(rows))


def codes_by_status() -> dict[int, set[str]]:
    """Every code each status can carry: core errors through the table, plus the codes
    of the problems the web layer raises itself."""
    from usermgmt.http import code_for_status

    table: dict[int, set[str]] = {}
    for status, code, _, _ in error_catalogue():
        table.setdefault(status, set()).add(code)
    for status in (400, 404, 405, 413, 422, 429, 500, 503):
        table.setdefault(status, set()).add(code_for_status(status))
    return table


#: Titles of the codes the web layer answers with itself (core codes use their class's).
FRAMEWORK_TITLES: Final[Mapping[str, str]] = {
    "bad_request": "Malformed request (a `Content-Length` that is not a number)",
    "method_not_allowed": "Method not allowed",
    "payload_too_large": "Request body too large",
    "internal_error": "Unexpected server error",
}


def generic_descriptions() -> Mapping[int, str]:
    """The descriptions every router gives error statuses (``routers._common``)."""
    common = importlib.import_module("usermgmt_fastapi.routers._common")
    descriptions: Mapping[int, str] = getattr(common, "_DESCRIPTIONS", {})
    return descriptions


def code_titles() -> dict[str, str]:
    """A short meaning for every code (the error class's title)."""
    titles = dict(FRAMEWORK_TITLES)
    for _, code, _, title in error_catalogue():
        titles.setdefault(code, title)
    return titles


def default_codes(status: int, access: str) -> tuple[str, ...]:
    """The codes of ``status`` on an operation :data:`OPERATION_CODES` says nothing about."""
    from usermgmt.http import code_for_status

    if status == 401:
        return BEARER_CODES if access != "anyone" else ("authentication_failed",)
    if status == 403:
        return ("permission_denied",)
    if status == 409:
        return tuple(sorted(code for code in codes_by_status()[409]))
    if status == 503:
        return ("backend_unavailable",)
    return (code_for_status(status),)


def check_operation_codes(document: Mapping[str, Any]) -> None:
    """Every :data:`OPERATION_CODES` entry names a documented status of a real operation,
    and each code belongs to that status. Raises SystemExit otherwise."""
    known = {(method, path): op for method, path, op in operations(document)}
    table = codes_by_status()
    problems: list[str] = []
    for (method, path), statuses in OPERATION_CODES.items():
        op = known.get((method, path))
        if op is None:
            problems.append(f"{method} {path}: no such operation")
            continue
        for status, codes in statuses.items():
            if str(status) not in op.get("responses", {}):
                problems.append(f"{method} {path}: {status} is not a documented response")
            own = OWN_STATUS.get((method, path), {}).get(status, frozenset())
            for code in codes:
                if code not in table.get(status, set()) | own:
                    problems.append(f"{method} {path}: {code!r} is not a {status} code")
    if problems:
        raise SystemExit("OPERATION_CODES is out of date:\n  " + "\n  ".join(problems))


def codes_for(method: str, path: str, status: int, access: str) -> tuple[str, ...]:
    """The codes one error status of one operation can carry."""
    specific = OPERATION_CODES.get((method, path), {}).get(status)
    return tuple(specific) if specific is not None else default_codes(status, access)


# --- schemas -----------------------------------------------------------------------------


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def anchor(name: str) -> str:
    """The anchor of a schema's entry in the Schemas section."""
    return "schema-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def schema_title(document: Mapping[str, Any], name: str) -> str:
    """How a component schema is named on the page (``ItemsOut[MemberOut]``)."""
    schema = document["components"]["schemas"][name]
    return str(schema.get("title") or name)


def schema_link(document: Mapping[str, Any], name: str) -> str:
    return f"[`{schema_title(document, name)}`](#{anchor(name)})"


def type_of(document: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    """A JSON schema as a short type: ``string``, ``list of string``, ``UserOut or null``."""
    if "$ref" in schema:
        return schema_link(document, _ref_name(schema["$ref"]))
    if "anyOf" in schema:
        parts = [type_of(document, option) for option in schema["anyOf"]]
        return " or ".join(dict.fromkeys(parts))
    kind = schema.get("type")
    if kind == "array":
        return "list of " + type_of(document, schema.get("items", {}))
    if kind == "object":
        return "object"
    if kind == "string" and schema.get("format"):
        return f"string ({schema['format']})"
    return str(kind or "any")


def _constraints(schema: Mapping[str, Any]) -> list[str]:
    notes: list[str] = []
    for option in [schema, *schema.get("anyOf", ())]:
        if option.get("type") == "null":
            continue
        if "minLength" in option and "maxLength" in option:
            notes.append(f"{option['minLength']} to {option['maxLength']} characters")
        elif "maxLength" in option:
            notes.append(f"at most {option['maxLength']} characters")
        if "pattern" in option:
            notes.append(f"matches `{option['pattern']}`")
        if "minimum" in option and "maximum" in option:
            notes.append(f"{option['minimum']} to {option['maximum']}")
        if "minItems" in option and "maxItems" in option:
            notes.append(f"{option['minItems']} to {option['maxItems']} items")
        elif "maxItems" in option:
            notes.append(f"at most {option['maxItems']} items")
        items = option.get("items", {})
        if isinstance(items, Mapping) and "maxLength" in items:
            notes.append(f"each at most {items['maxLength']} characters")
    if "default" in schema:
        notes.append(f"default `{json.dumps(schema['default'])}`")
    if schema.get("description"):
        notes.append(str(schema["description"]))
    return notes


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def field_rows(
    document: Mapping[str, Any], schema: Mapping[str, Any], *, required_column: bool = True
) -> list[str]:
    """Markdown table rows (field, type, [required,] notes) of an object schema."""
    required = set(schema.get("required", ()))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        notes = "; ".join(_constraints(prop))
        needed = f" {'yes' if name in required else 'no'} |" if required_column else ""
        rows.append(f"| `{name}` | {_cell(type_of(document, prop))} |{needed} {_cell(notes)} |")
    return rows


# --- rendering -----------------------------------------------------------------------------


def who(access: str | None) -> str:
    if access is None:
        return "(undeclared)"
    if access in WHO:
        return WHO[access]
    return f"holders of `{access}` in the organization"


def op_anchor(method: str, path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", f"{method} {path}".lower()).strip("-")


def _body_schema(document: Mapping[str, Any], response: Mapping[str, Any]) -> str:
    content = response.get("content") or {}
    if JSON in content:
        schema = content[JSON].get("schema") or {}
        if "$ref" in schema:
            return schema_link(document, _ref_name(schema["$ref"]))
        return "JSON object" if not schema.get("type") else type_of(document, schema)
    if content:
        return ", ".join(f"`{media}`" for media in sorted(content))
    if response.get("description", "").startswith("Unhealthy"):
        return "JSON object"
    return "no body"


def _is_success(status: str) -> bool:
    return status.isdigit() and int(status) < 400


def render_operation(
    document: Mapping[str, Any], method: str, path: str, op: Mapping[str, Any]
) -> list[str]:
    access = op.get("x-usermgmt-access")
    lines = [f"### `{method} {path}` {{#{op_anchor(method, path)}}}", ""]
    if op.get("summary"):
        lines += [f"{op['summary']}.", ""]
    lines += [f"**Who:** {who(access)}.", ""]

    parameters = [p for p in op.get("parameters", ()) if p.get("in") in ("path", "query")]
    if parameters:
        lines += ["| parameter | in | type | required | notes |", "|---|---|---|---|---|"]
        for parameter in parameters:
            schema = parameter.get("schema", {})
            notes = "; ".join(_constraints({**schema, "description": parameter.get("description")}))
            lines.append(
                f"| `{parameter['name']}` | {parameter['in']} | "
                f"{_cell(type_of(document, schema))} | "
                f"{'yes' if parameter.get('required') else 'no'} | {_cell(notes)} |"
            )
        lines.append("")

    body = (op.get("requestBody") or {}).get("content", {}).get(JSON)
    if body is not None:
        ref = body.get("schema", {}).get("$ref")
        schema = document["components"]["schemas"][_ref_name(ref)] if ref else body["schema"]
        name = f" (`{_ref_name(ref)}`)" if ref else ""
        closed = (
            " Unknown fields are refused (422)."
            if schema.get("additionalProperties") is False
            else ""
        )
        lines += [f"Request body{name}, JSON.{closed}", ""]
        lines += ["| field | type | required | notes |", "|---|---|---|---|"]
        lines += field_rows(document, schema)
        lines.append("")

    responses: Mapping[str, Any] = op.get("responses", {})
    lines += ["| status | body or error codes | meaning |", "|---|---|---|"]
    for status, response in responses.items():
        if _is_success(status):
            lines.append(
                f"| **{status}** | {_body_schema(document, response)} | "
                f"{_cell(str(response.get('description', '')))} |"
            )
    titles = code_titles()
    for status in sorted(s for s in responses if not _is_success(s)):
        response = responses[status]
        if PROBLEM not in (response.get("content") or {}):  # e.g. an unhealthy health check
            lines.append(
                f"| {status} | {_body_schema(document, response)} | "
                f"{_cell(str(response.get('description', '')))} |"
            )
            continue
        codes = codes_for(method, path, int(status), str(access))
        meaning = "; ".join(dict.fromkeys(titles[code] for code in codes))
        description = str(response.get("description", ""))
        if description and description != generic_descriptions().get(int(status)):
            meaning = description  # the route says something of its own about this status
        lines.append(
            f"| {status} | {', '.join(f'`{code}`' for code in codes)} | {_cell(meaning)} |"
        )
    lines.append("")
    return lines


def render_overview(document: Mapping[str, Any]) -> list[str]:
    lines = ["| method and path | who | success |", "|---|---|---|"]
    for method, path, op in operations(document):
        successes = ", ".join(s for s in op.get("responses", {}) if _is_success(s))
        lines.append(
            f"| [`{method} {path}`](#{op_anchor(method, path)}) | "
            f"{who(op.get('x-usermgmt-access'))} | {successes} |"
        )
    return [*lines, ""]


def _referenced_outputs(document: Mapping[str, Any]) -> list[str]:
    """The response schemas reachable from any operation, in a stable order."""
    schemas = document["components"]["schemas"]
    seen: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            ref = node.get("$ref")
            if isinstance(ref, str):
                name = _ref_name(ref)
                if name not in seen and name in schemas and name != "Problem":
                    seen.append(name)
                    walk(schemas[name])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for _, _, op in operations(document):
        for response in op.get("responses", {}).values():
            walk(response)
    return sorted(seen, key=lambda name: schema_title(document, name).lower())


def render_schemas(document: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for name in _referenced_outputs(document):
        schema = document["components"]["schemas"][name]
        lines += [f"### `{schema_title(document, name)}` {{#{anchor(name)}}}", ""]
        if schema.get("description"):
            lines += [" ".join(str(schema["description"]).split()), ""]
        lines += ["| field | type | notes |", "|---|---|---|"]
        lines += field_rows(document, schema, required_column=False)
        lines.append("")
    return lines


def _example_problems() -> tuple[str, str]:
    from usermgmt.errors import LastOwner
    from usermgmt.http import error_problem, to_validation_error

    last_owner = error_problem(
        LastOwner("An organization must keep at least one owner."),
        instance="/organizations/0196f3a2-7c4e-7b1a-9d2e-5f0c8a1b2c3d/leave",
        request_id="5b0d3c1e9f8a4b7c",
    )
    invalid = error_problem(
        to_validation_error(
            [
                {"loc": ("body", "email"), "msg": "Field required", "type": "missing"},
                {
                    "loc": ("body", "role"),
                    "msg": "Extra inputs are not permitted",
                    "type": "extra_forbidden",
                },
            ]
        ),
        instance="/organizations/0196f3a2-7c4e-7b1a-9d2e-5f0c8a1b2c3d/invitations",
        request_id="5b0d3c1e9f8a4b7d",
    )
    return (
        json.dumps(last_owner.body, indent=2, ensure_ascii=False),
        json.dumps(invalid.body, indent=2, ensure_ascii=False),
    )


INTRODUCTION: Final = """\
# HTTP API reference

<!-- Generated by scripts/gen_api_docs.py from the OpenAPI document of usermgmt_fastapi.
Do not edit by hand: change the routers, then run `python scripts/gen_api_docs.py`. -->

The routes `usermgmt_fastapi.mount(app, um)` ([FastAPI](fastapi.md)) and
`UserMgmt(app, um)` ([Flask](flask.md)) serve. Both adapters answer the same paths with
the same statuses, bodies, headers and problem documents; under a `prefix` (`url_prefix`
on Flask) every path below moves beneath it. A FastAPI application also serves the
OpenAPI document this page is generated from, at `/openapi.json` (interactive at
`/docs`).

Each operation lists who may call it, its parameters and request body, its success
statuses with their body, and its error statuses with the `code`s they can carry. The
[conventions](#conventions) apply to every operation.

## Operations
"""

CONVENTIONS: Final = Template("""\
## Conventions

### Requests and responses

- JSON in and out (`Content-Type: application/json`); ids are strings (UUIDs), times
  ISO 8601 in UTC.
- Request bodies are closed: an unknown field, a wrong type or malformed JSON is a 422
  `validation_error`, never a 500.
- Bodies are capped at $max_body bytes ($max_body_mib MiB, the adapters'
  `max_body_bytes`): above it, 413 `payload_too_large`, refused from `Content-Length`
  before the body is read, or as soon as a chunked body passes it.
- Tokens travel only in request bodies and the `Authorization` header, never in a query
  string.
- Every usermgmt response is `Cache-Control: no-store`.
- Every response carries $security_headers, and `Strict-Transport-Security: $hsts`
  when the request came over HTTPS (behind a proxy the server must be told the scheme:
  see [Deployment](deployment.md#ssltls-and-hsts)).

### Bearer tokens and who may call what

Operations for signed-in users take the access token from `POST /auth/login` or
`POST /auth/refresh` as `Authorization: Bearer <access_token>`. Without one, or with a
bad one, the answer is 401 with `WWW-Authenticate: Bearer` (`Bearer
error="invalid_token"` when a token was sent but refused). Access tokens live
`ACCESS_TOKEN_TTL_SECONDS` (15 minutes by default); get a new pair with the refresh
token, which rotates on every use.

**Who** is the `x-usermgmt-access` extension of each operation in the OpenAPI
document: *anyone*, *any signed-in user*, *a member of the organization*, *a platform
superuser*, or the permission checked in the organization named by the `{org_id}` path
parameter. A signed-in user who is not a member of that organization gets **404**
`not_found` (its existence is not revealed); a member without the permission gets
**403** `permission_denied`.

### Errors: problem documents

Every error is an RFC 9457 problem document, `Content-Type: $problem_media_type`,
whose `type` is `$problem_type_base<code>` and whose `code` is the stable code of the
[error](errors.md). Match on `code`, never on `title` or `detail`:

```json
$last_owner
```

Validation errors list the problems field by field in `errors` (`loc` is the path
inside the body or query string; the input is never echoed back):

```json
$invalid
```

Server-side failures (5xx) never carry the exception's text: `detail` asks the client
to quote the request id, and the log has the rest.

### Pagination

Lists answer `{"items": [...], "next_cursor": "..." | null}`. Paginated lists take
`?limit=` (1 to $max_page, default $default_page) and `?cursor=` (the `next_cursor` of
the previous page); `next_cursor` is `null` on the last page. Short lists (roles,
sessions, your organizations, the permission catalogue) use the same envelope with
`next_cursor` always `null`.

### Rate limits

Every request counts against the global per-client limit (`RATE_LIMIT_MAX_REQUESTS`
per `RATE_LIMIT_WINDOW_MS`; the client address follows `TRUSTED_PROXIES`), and the
authentication flows have stricter limits of their own (see
[Redis](redis.md#rate-limiting)). Counted responses carry `RateLimit-Limit`,
`RateLimit-Remaining` and `RateLimit-Reset` (seconds); a refused request gets 429
`rate_limited` with `Retry-After` (seconds). The health endpoints and `/metrics` are not
counted.

### Request ids

Every response carries `$request_id_header`: the caller's own value when it is at most
128 characters of letters, digits and `. _ ~ : + / = -`, otherwise a new one. The same
id is in problem documents (`request_id`), in the audit events the request writes and
in every log line of the request.
""")

ERROR_TABLE: Final = """\
## Error codes by status

Every code a core error can carry, with its status (the adapters' table,
`usermgmt.http.STATUS_BY_ERROR`). Base classes are listed too; match on the most
specific code you care about. The web layer adds `bad_request` (400, a `Content-Length`
that is not a number), `not_found` (404, no such route), `method_not_allowed` (405,
with `Allow`), `payload_too_large` (413) and `internal_error` (500, an unexpected
exception).

| status | code | error class | title |
|---|---|---|---|
"""

SCHEMAS: Final = """\
## Schemas

The response bodies named above. Every field is always in the JSON; one whose type
allows `null` is sent as `null` rather than left out.
"""


def render_conventions() -> list[str]:
    from usermgmt import http
    from usermgmt.schemas import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

    last_owner, invalid = _example_problems()
    text = CONVENTIONS.substitute(
        max_body=http.DEFAULT_MAX_BODY_BYTES,
        max_body_mib=f"{http.DEFAULT_MAX_BODY_BYTES / (1024 * 1024):g}",
        security_headers=", ".join(f"`{k}: {v}`" for k, v in http.SECURITY_HEADERS.items()),
        hsts=http.HSTS,
        problem_media_type=http.PROBLEM_MEDIA_TYPE,
        problem_type_base=http.PROBLEM_TYPE_BASE,
        last_owner=last_owner,
        invalid=invalid,
        max_page=MAX_PAGE_SIZE,
        default_page=DEFAULT_PAGE_SIZE,
        request_id_header=http.REQUEST_ID_HEADER,
    )
    return [*text.splitlines(), ""]


def render_error_table() -> list[str]:
    lines = ERROR_TABLE.splitlines()
    for status, code, name, title in error_catalogue():
        lines.append(f"| {status} | `{code}` | `{name}` | {_cell(title)} |")
    return [*lines, ""]


def render(document: Mapping[str, Any]) -> str:
    """The whole page."""
    check_operation_codes(document)
    lines = [*INTRODUCTION.splitlines(), "", *render_overview(document)]
    lines += render_conventions()

    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for method, path, op in operations(document):
        tag = (op.get("tags") or ["other"])[0]
        by_tag.setdefault(tag, []).append((method, path, op))
    order = [t for t in TAG_TITLES if t in by_tag] + [t for t in by_tag if t not in TAG_TITLES]
    for tag in order:
        lines += [f"## {TAG_TITLES.get(tag, tag.capitalize())}", ""]
        if tag in TAG_NOTES:
            lines += [TAG_NOTES[tag], ""]
        for method, path, op in by_tag[tag]:
            lines += render_operation(document, method, path, op)

    lines += render_error_table()
    lines += [*SCHEMAS.splitlines(), ""]
    lines += render_schemas(document)
    text = "\n".join(lines).rstrip() + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)


def generate() -> str:
    """docs/api.md as it should be."""
    return render(build_document())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="default: docs/api.md")
    args = parser.parse_args(argv)
    text = generate()
    output: Path = args.output
    if args.check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != text:
            print(f"{output} is stale: run python scripts/gen_api_docs.py", file=sys.stderr)
            return 1
        print(f"{output} is up to date")
        return 0
    output.write_text(text, encoding="utf-8")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
