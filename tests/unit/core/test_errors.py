"""The error tree: the module docstring is the contract adapters map to HTTP."""

from __future__ import annotations

import re

import pytest

from usermgmt import errors
from usermgmt.errors import (
    ConfigurationError,
    LastOwner,
    MissingDependency,
    NotFound,
    RateLimited,
    UserMgmtError,
    ValidationError,
)

_TREE_LINE = re.compile(r"^(?P<prefix>[\s│├└─]*?)(?P<name>[A-Z]\w+)\s+(?P<code>[a-z0-9_]+)\b")


def _drawn_tree() -> dict[str, tuple[str, str | None]]:
    """``{class name: (code, parent name)}`` from the tree drawn in the module docstring."""
    doc = errors.__doc__ or ""
    block = doc.split("::", 1)[1]
    drawn: dict[str, tuple[str, str | None]] = {}
    stack: list[tuple[int, str]] = []  # (column of the name, name)
    for line in block.splitlines():
        if not line.strip():
            if drawn:
                break  # the tree ends at the first blank line after it
            continue
        match = _TREE_LINE.match(line)
        assert match, f"unparsable tree line: {line!r}"
        column = match.start("name")
        while stack and stack[-1][0] >= column:
            stack.pop()
        parent = stack[-1][1] if stack else None
        drawn[match["name"]] = (match["code"], parent)
        stack.append((column, match["name"]))
    return drawn


DRAWN = _drawn_tree()
EXPORTED = [
    getattr(errors, name)
    for name in errors.__all__
    if isinstance(getattr(errors, name), type) and issubclass(getattr(errors, name), UserMgmtError)
]


def test_tree_is_parsed() -> None:
    assert DRAWN["UserMgmtError"] == ("error", None)
    assert DRAWN["MissingDependency"] == ("missing_dependency", "ConfigurationError")
    assert len(EXPORTED) >= 30


@pytest.mark.parametrize("cls", EXPORTED, ids=lambda c: c.__name__)
def test_exported_error_is_drawn_with_its_code_and_parent(cls: type[UserMgmtError]) -> None:
    assert cls.__name__ in DRAWN, f"{cls.__name__} missing from the docstring tree"
    code, parent = DRAWN[cls.__name__]
    assert cls.code == code
    if cls is not UserMgmtError:
        assert cls.__bases__[0].__name__ == parent


def test_every_drawn_class_is_exported() -> None:
    assert set(DRAWN) == {cls.__name__ for cls in EXPORTED}


@pytest.mark.parametrize("cls", EXPORTED, ids=lambda c: c.__name__)
def test_code_is_lowercase_snake_case(cls: type[UserMgmtError]) -> None:
    assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", cls.code)
    assert cls.title
    assert cls.title.strip() == cls.title


@pytest.mark.parametrize(
    "cls", [c for c in EXPORTED if c is not MissingDependency], ids=lambda c: c.__name__
)
def test_to_dict_without_arguments(cls: type[UserMgmtError]) -> None:
    data = cls().to_dict()
    assert data["code"] == cls.code
    assert data["title"] == cls.title
    assert isinstance(data["detail"], str)
    assert data["detail"]


def test_to_dict_carries_detail_and_extras() -> None:
    exc = LastOwner("Transfer ownership first.", organizations=["o1", "o2"])
    assert exc.to_dict() == {
        "code": "last_owner",
        "title": LastOwner.title,
        "detail": "Transfer ownership first.",
        "organizations": ["o1", "o2"],
    }
    assert str(exc) == "Transfer ownership first."


def test_detail_defaults_to_title() -> None:
    exc = ConfigurationError()
    assert exc.detail == ConfigurationError.title
    assert exc.to_dict()["detail"] == ConfigurationError.title


def test_extras_never_replace_the_stable_fields() -> None:
    data = UserMgmtError("real detail", code="spoofed", title="spoofed", other=1).to_dict()
    assert data["code"] == "error"
    assert data["title"] == UserMgmtError.title
    assert data["other"] == 1


def test_validation_error_lists_its_errors() -> None:
    exc = ValidationError("Invalid input: email", errors=[{"loc": ["email"], "msg": "bad"}])
    assert exc.to_dict()["errors"] == [{"loc": ["email"], "msg": "bad"}]
    assert "errors" not in ValidationError("x").to_dict()


def test_not_found_names_the_resource() -> None:
    exc = NotFound("organization")
    assert exc.resource == "organization"
    assert exc.detail == "Organization not found."


@pytest.mark.parametrize(
    ("given", "expected"), [(None, 1.0), (0.0, 0.0), (12.5, 12.5), (-3.0, 0.0)]
)
def test_rate_limited_retry_after_never_negative(given: float | None, expected: float) -> None:
    exc = RateLimited() if given is None else RateLimited(retry_after=given)
    assert exc.retry_after == expected
    assert exc.retry_after >= 0
    assert exc.reset_after == expected
    assert exc.remaining == 0


def test_rate_limited_reset_after_never_negative() -> None:
    exc = RateLimited(retry_after=2, limit=5, reset_after=-1)
    assert exc.reset_after >= 0
    assert exc.limit == 5


def test_missing_dependency_names_the_extra() -> None:
    exc = MissingDependency("redis", "redis")
    assert isinstance(exc, ConfigurationError)
    assert exc.code == "missing_dependency"
    assert 'pip install "usermgmt[redis]"' in exc.detail
    assert exc.package == "redis"
    assert exc.extra_name == "redis"
    assert 'usermgmt[aws]"' in MissingDependency("boto3", "aws").detail
