"""docs/api.md is the generator's output for the routers as they are now.

The HTTP API reference is generated from the FastAPI adapter's OpenAPI document by
``scripts/gen_api_docs.py``; this test fails as soon as a route, a schema, a status or
an error code changes without the page being regenerated.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_api_docs.py"
PAGE = ROOT / "docs" / "api.md"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_api_docs", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated() -> str:
    pytest.importorskip(
        "fastapi", reason='needs the fastapi extra: pip install "usermgmt[fastapi]"'
    )
    text: str = _generator().generate()
    return text


def test_docs_api_md_is_current(generated: str) -> None:
    committed = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
    assert committed == generated, (
        "docs/api.md is out of date with the routers: run `python scripts/gen_api_docs.py` "
        "and commit the result"
    )


def test_generation_is_deterministic(generated: str) -> None:
    assert _generator().generate() == generated


def test_every_operation_is_documented(generated: str) -> None:
    generator = _generator()
    for method, path, operation in generator.operations(generator.build_document()):
        assert f"### `{method} {path}`" in generated
        assert operation.get("x-usermgmt-access"), f"{method} {path} declares no access"
