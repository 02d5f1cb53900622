"""Request bodies and query strings, decoded and validated as the FastAPI adapter does
(so both adapters answer the same input with the same 422), into the core's schemas.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Mapping
from typing import Annotated, Any, Final, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from usermgmt.http.problems import invalid_json, to_validation_error
from usermgmt.schemas import DEFAULT_PAGE_SIZE, MAX_EMAIL_LENGTH, MAX_PAGE_SIZE

__all__ = [
    "NO_BODY",
    "AuditLogQuery",
    "PageQuery",
    "PlatformAuditLogQuery",
    "UserListQuery",
    "decode_json_body",
    "parse_body",
    "parse_query",
]


class _Missing:
    """The type of :data:`NO_BODY`."""

    def __repr__(self) -> str:
        return "NO_BODY"


#: What :func:`decode_json_body` answers for an empty body: a required body is missing.
NO_BODY: Final = _Missing()


def _is_json_media_type(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def decode_json_body(body: bytes, content_type: str | None) -> Any:
    """A request body as the route's schema will see it.

    Empty: :data:`NO_BODY`. ``application/json`` or ``application/*+json``: the decoded
    JSON. Any other or no content type: the bytes themselves, which no schema accepts
    (422).

    Raises ValidationError (``json_invalid``) for malformed JSON, bad UTF-8 or nesting
    too deep.
    """
    if not body:
        return NO_BODY
    if not content_type or not _is_json_media_type(content_type):
        return body
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise invalid_json() from None


InputT = TypeVar("InputT", bound=BaseModel)


def parse_body(model: type[InputT], value: Any) -> InputT:
    """Validate a decoded body (:func:`decode_json_body`) into ``model``.

    Raises ValidationError (PasswordTooLong for an over-long password) with the
    errors shaped as :func:`usermgmt.schemas.parse` shapes them.
    """
    if value is NO_BODY:
        raise to_validation_error([{"loc": ("body",), "msg": "Field required", "type": "missing"}])
    try:
        # from_attributes as FastAPI validates bodies, so both answer the same errors
        return model.model_validate(value, from_attributes=True)
    except pydantic.ValidationError as exc:
        raise to_validation_error(exc.errors(include_url=False, include_input=False)) from None


def parse_query(model: type[InputT], values: Mapping[str, str]) -> InputT:
    """Validate query parameters (the last value of a repeated one) into ``model``.

    Raises ValidationError for a bad value; unknown parameters are ignored.
    """
    try:
        return model.model_validate(dict(values))
    except pydantic.ValidationError as exc:
        raise to_validation_error(exc.errors(include_url=False, include_input=False)) from None


class _Query(BaseModel):
    """Query parameters: unknown ones are ignored (as web frameworks do)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


Limit = Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE, description="Page size")]
Cursor = Annotated[str | None, Field(max_length=200, description="From the previous page")]


class PageQuery(_Query):
    """``?limit=&cursor=`` of the paginated lists."""

    limit: Limit = DEFAULT_PAGE_SIZE
    cursor: Cursor = None


class UserListQuery(_Query):
    """``GET /users`` (superuser): ``?email_prefix=&limit=&cursor=``."""

    email_prefix: Annotated[str | None, Field(max_length=MAX_EMAIL_LENGTH)] = None
    limit: Limit = DEFAULT_PAGE_SIZE
    cursor: Cursor = None


class AuditLogQuery(_Query):
    """``GET /organizations/{org_id}/audit-logs``: the core validates the values (UUID,
    timezone-aware times); here only their size is bounded."""

    action: Annotated[str | None, Field(max_length=100)] = None
    actor_id: Annotated[str | None, Field(max_length=64)] = None
    target_type: Annotated[str | None, Field(max_length=64)] = None
    target_id: Annotated[str | None, Field(max_length=200)] = None
    since: Annotated[str | None, Field(max_length=64)] = None
    until: Annotated[str | None, Field(max_length=64)] = None
    limit: Limit = DEFAULT_PAGE_SIZE
    cursor: Cursor = None


class PlatformAuditLogQuery(AuditLogQuery):
    """``GET /audit-logs`` (superuser): the organization filters plus ``organization_id``."""

    organization_id: Annotated[str | None, Field(max_length=64)] = None
