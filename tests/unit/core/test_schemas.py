"""Input schemas: header-safe emails and names (SEC-TK-10), bounded metadata, allowlists,
and errors that never echo the input."""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest
from pydantic import BaseModel

from usermgmt import schemas
from usermgmt.errors import PasswordTooLong, ValidationError
from usermgmt.schemas import (
    ChangePasswordIn,
    EmailIn,
    InvitationCreateIn,
    LoginIn,
    OrganizationCreateIn,
    ProfileUpdateIn,
    RegisterIn,
    ResetPasswordIn,
    parse,
)

INPUT_MODELS = [
    model
    for name, model in vars(schemas).items()
    if name.endswith("In")
    and inspect.isclass(model)
    and issubclass(model, BaseModel)
    and model.__module__ == schemas.__name__
]
PASSWORD = "Canary-Passw0rd-Do-Not-Echo"


def _invalid(model: type[BaseModel], data: Any = None, /, **fields: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse(model, data, **fields)
    return info.value


def _types(exc: ValidationError) -> set[str]:
    return {str(e["type"]) for e in exc.errors}


# --- emails (SEC-TK-10) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "email",
    [
        "a@b.com\r\nBcc: x@y.com",
        "a@b.com\nBcc: x@y.com",
        "a@b.com\rBcc: x@y.com",
        "a@b.com\u2028Bcc: x@y.com",
        "a@b.com\u2029Bcc: x@y.com",
        "a\u2028b@b.com",
        "a\x00b@b.com",
        "a@b.com\x85Bcc: x@y.com",  # NEL
        "a@b.com\tBcc: x@y.com",
    ],
)
@pytest.mark.parametrize("model", [RegisterIn, EmailIn, InvitationCreateIn])
def test_email_with_line_breaks_or_controls_rejected(model: type[BaseModel], email: str) -> None:
    fields: dict[str, Any] = {"email": email}
    if model is RegisterIn:
        fields["password"] = PASSWORD
    exc = _invalid(model, **fields)
    assert [e["loc"] for e in exc.errors] == [["email"]]


@pytest.mark.parametrize("email", ["a@b.com\r\n", "\na@b.com", " a@b.com\u2028"])
def test_surrounding_whitespace_is_trimmed_not_kept(email: str) -> None:
    assert parse(EmailIn, email=email).email == "a@b.com"


def _email_of_length(length: int) -> str:
    """A well-formed address of ``length`` characters (local part 64, labels <= 63)."""
    domain_length = length - 65
    last = domain_length - (63 + 1 + 61 + 1 + 4)
    return "a" * 64 + "@" + "b" * 63 + "." + "c" * 61 + "." + "d" * last + ".com"


def test_email_length_limit() -> None:
    fits, too_long = _email_of_length(254), _email_of_length(255)
    assert (len(fits), len(too_long)) == (254, 255)
    assert parse(EmailIn, email=fits).email == fits
    exc = _invalid(EmailIn, email=too_long)
    assert [e["loc"] for e in exc.errors] == [["email"]]
    assert too_long not in str(exc.to_dict())


def test_valid_email_normalized_domain() -> None:
    assert parse(EmailIn, email="Alice@EXAMPLE.com").email == "Alice@example.com"


# --- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Bob\r\nBcc: x@y.com",
        "Bob\nSmith",
        "Bob\x00",
        "Bob\x1b[31m",
        "Bob\x7f",
        "Bob\x85Smith",  # NEL, a C1 control that splitlines() treats as a line break
        "Bob\x9bSmith",  # CSI, a C1 control
        "Bob\u2028Smith",
        "Bob\u2029Smith",
    ],
)
@pytest.mark.parametrize("model", [RegisterIn, ProfileUpdateIn, OrganizationCreateIn])
def test_name_with_control_characters_rejected(model: type[BaseModel], name: str) -> None:
    fields: dict[str, Any] = {"name": name}
    if model is RegisterIn:
        fields.update(email="a@b.com", password=PASSWORD)
    exc = _invalid(model, **fields)
    assert [e["loc"] for e in exc.errors] == [["name"]]


@pytest.mark.parametrize("name", ["Zoë O'Brien-Łukasz", "山田 太郎", "<b>Bold</b> & co"])
def test_ordinary_names_accepted(name: str) -> None:
    assert parse(ProfileUpdateIn, name=name).name == name


def test_name_blank_or_too_long_rejected() -> None:
    _invalid(ProfileUpdateIn, name="   ")
    _invalid(ProfileUpdateIn, name="n" * 201)
    assert parse(ProfileUpdateIn, name="n" * 200).name == "n" * 200


# --- metadata -----------------------------------------------------------------------------------


def test_metadata_over_16_kib_rejected() -> None:
    limit = schemas.MAX_METADATA_BYTES
    assert limit == 16 * 1024
    overhead = len(json.dumps({"k": ""}, separators=(",", ":")))
    fits = {"k": "x" * (limit - overhead)}
    assert parse(ProfileUpdateIn, metadata=fits).metadata == fits
    exc = _invalid(ProfileUpdateIn, metadata={"k": "x" * (limit - overhead + 1)})
    assert [e["loc"] for e in exc.errors] == [["metadata"]]


@pytest.mark.parametrize(
    "metadata",
    [
        {"tags": {1, 2, 3}},
        {"when": object()},
        {"ratio": float("nan")},
        {"ratio": float("inf")},
        {1, 2},
        ["not", "an", "object"],
        "text",
    ],
)
@pytest.mark.parametrize("model", [ProfileUpdateIn, OrganizationCreateIn])
def test_non_json_metadata_rejected(model: type[BaseModel], metadata: Any) -> None:
    fields: dict[str, Any] = {"metadata": metadata}
    if model is OrganizationCreateIn:
        fields["name"] = "Acme"
    exc = _invalid(model, **fields)
    assert all(e["loc"][0] == "metadata" for e in exc.errors)


def test_metadata_round_trips_json() -> None:
    data = {"a": [1, 2.5, None, True], "b": {"c": "d"}}
    assert parse(ProfileUpdateIn, metadata=data).metadata == data


# --- allowlists ---------------------------------------------------------------------------------


def test_every_input_model_is_found() -> None:
    names = {m.__name__ for m in INPUT_MODELS}
    assert {"RegisterIn", "LoginIn", "ProfileUpdateIn", "AdminUserUpdateIn"} <= names
    assert len(INPUT_MODELS) >= 15


@pytest.mark.parametrize("model", INPUT_MODELS, ids=lambda m: m.__name__)
def test_unknown_fields_rejected(model: type[BaseModel]) -> None:
    assert model.model_config.get("extra") == "forbid"
    exc = _invalid(model, {"is_superuser": True, "zz_unknown": PASSWORD})
    forbidden = [e["loc"] for e in exc.errors if e["type"] == "extra_forbidden"]
    assert ["is_superuser"] in forbidden or "is_superuser" in model.model_fields
    assert ["zz_unknown"] in forbidden
    assert PASSWORD not in str(exc)
    assert PASSWORD not in json.dumps(exc.to_dict())


# --- errors never echo the input ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (RegisterIn, {"email": "not-an-email", "password": PASSWORD}),
        (RegisterIn, {"email": PASSWORD, "password": PASSWORD}),
        (RegisterIn, {"email": "a@b.com", "password": {"nested": PASSWORD}}),
        (RegisterIn, {"email": "a@b.com", "password": [PASSWORD]}),
        (LoginIn, {"email": "", "password": PASSWORD}),
        (LoginIn, {"email": "a@b.com", "password": PASSWORD, "remember": PASSWORD}),
        (ChangePasswordIn, {"current_password": PASSWORD, "new_password": ""}),
        (ResetPasswordIn, {"token": "", "password": PASSWORD}),
        (ProfileUpdateIn, {"name": PASSWORD + "\nX"}),
        (ProfileUpdateIn, {"name": PASSWORD + "\x00"}),
    ],
)
def test_errors_never_contain_the_input(model: type[BaseModel], data: dict[str, Any]) -> None:
    exc = _invalid(model, data)
    assert exc.errors
    for error in exc.errors:
        assert set(error) == {"loc", "msg", "type"}
    assert PASSWORD not in str(exc)
    assert PASSWORD not in repr(exc)
    assert PASSWORD not in json.dumps(exc.to_dict())
    assert exc.__cause__ is None


@pytest.mark.parametrize("length", [4097, 5000, 1_000_000])
@pytest.mark.parametrize(
    ("model", "field", "others"),
    [
        (RegisterIn, "password", {"email": "a@b.com"}),
        (LoginIn, "password", {"email": "a@b.com"}),
        (ResetPasswordIn, "password", {"token": "t"}),
        (ChangePasswordIn, "current_password", {"new_password": "x"}),
        (ChangePasswordIn, "new_password", {"current_password": "x"}),
    ],
)
def test_over_long_password_is_password_too_long(
    model: type[BaseModel], field: str, others: dict[str, str], length: int
) -> None:
    secret = ("Zq9-" * (length // 4 + 1))[:length]
    with pytest.raises(PasswordTooLong) as info:
        parse(model, {field: secret, **others})
    exc = info.value
    assert exc.code == "password_too_long"
    assert [e["loc"] for e in exc.errors] == [[field]]
    text = str(exc) + json.dumps(exc.to_dict())
    assert secret[:64] not in text
    assert len(text) < 1000


def test_over_long_password_wins_over_other_errors() -> None:
    with pytest.raises(PasswordTooLong):
        parse(RegisterIn, email="bad", password="p" * 5000, name="x\n")


def test_password_at_schema_limit_accepted() -> None:
    assert len(parse(LoginIn, email="a@b.com", password="p" * 4096).password) == 4096


@pytest.mark.parametrize(
    ("model", "field"),
    [
        (schemas.ProfileUpdateIn, "metadata"),
        (schemas.AdminUserUpdateIn, "is_active"),
        (schemas.AdminUserUpdateIn, "is_superuser"),
        (schemas.AdminUserUpdateIn, "metadata"),
        (schemas.OrganizationUpdateIn, "name"),
        (schemas.OrganizationUpdateIn, "slug"),
        (schemas.OrganizationUpdateIn, "metadata"),
    ],
)
def test_null_is_refused_where_a_field_cannot_be_cleared(model: type, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        schemas.parse(model, {field: None})
    assert caught.value.errors[0]["loc"] == [field]
    assert "cannot be null" in caught.value.errors[0]["msg"]


def test_null_clears_a_user_name() -> None:
    assert schemas.parse(schemas.ProfileUpdateIn, {"name": None}).model_fields_set == {"name"}
