"""What the distribution promises: extras, typed packages, a core free of optional imports."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("usermgmt", "usermgmt_fastapi", "usermgmt_flask")
EXTRAS = {"fastapi", "flask", "postgres", "redis", "rq", "sendgrid", "aws", "oauth", "all", "dev"}

#: Top-level modules that only extras (or their dependencies) provide.
OPTIONAL_MODULES = frozenset(
    {
        "fastapi",
        "flask",
        "starlette",
        "sqlalchemy",
        "alembic",
        "psycopg",
        "redis",
        "boto3",
        "botocore",
        "authlib",
        "sendgrid",
        "rq",
        "limits",
        "prometheus_client",
    }
)
#: Distributions that must stay out of the core dependencies. SQLAlchemy and Alembic are
#: core dependencies (SQLite is the embedded default database) but are still never
#: imported by ``import usermgmt`` (see OPTIONAL_MODULES).
OPTIONAL_DISTRIBUTIONS = frozenset(
    {
        "fastapi",
        "starlette",
        "uvicorn",
        "flask",
        "psycopg",
        "redis",
        "rq",
        "boto3",
        "botocore",
        "sendgrid",
        "authlib",
    }
)


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _requirement_name(requirement: str) -> str:
    name = re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter from the repository root (as pytest imports it)."""
    return subprocess.run(  # noqa: S603 - our interpreter, our code
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_package_ships_py_typed(package: str) -> None:
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    assert spec is not None, f"{package} is not importable"
    locations = list(spec.submodule_search_locations or [])
    assert any((Path(location) / "py.typed").is_file() for location in locations), (
        f"{package} has no py.typed marker"
    )
    wheel_packages = _pyproject()["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert package in wheel_packages, f"{package} is not in the wheel"


_MODULES = "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"


def _imported_optional_modules(code: str) -> set[str]:
    result = _run_python("import json, sys\n" + code + _MODULES)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1])) & OPTIONAL_MODULES


@pytest.mark.core_only
def test_importing_usermgmt_imports_no_optional_dependency() -> None:
    assert _imported_optional_modules("import usermgmt\n") == set()


@pytest.mark.core_only
def test_in_memory_core_needs_no_optional_dependency() -> None:
    code = (
        "from usermgmt import UserManagement\n"
        "um = UserManagement.in_memory()\n"
        "um.users.register(email='ada@example.com', password='correct horse battery staple')\n"
        "pair = um.auth.login(email='ada@example.com', password='correct horse battery staple')\n"
        "um.auth.authenticate(pair.access_token)\n"
    )
    assert _imported_optional_modules(code) == set()


@pytest.mark.core_only
def test_public_names_exist() -> None:
    import usermgmt

    missing = [name for name in usermgmt.__all__ if not hasattr(usermgmt, name)]
    assert missing == []
    assert {"UserManagement", "Settings", "RequestContext"} <= set(usermgmt.__all__)


@pytest.mark.core_only
def test_readme_python_examples_run() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    examples = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    assert examples, "the README has no Python example"
    for number, example in enumerate(examples, start=1):
        exec(compile(example, f"README.md example {number}", "exec"), {})  # noqa: S102


def test_pyproject_declares_the_extras() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    missing = EXTRAS - set(extras)
    assert not missing, f"missing extras: {sorted(missing)}"


def test_all_extra_includes_every_runtime_extra() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    included: set[str] = set()
    for requirement in extras["all"]:
        match = re.fullmatch(r"\s*usermgmt\[([^\]]+)\]\s*", requirement)
        if match:
            included |= {part.strip() for part in match.group(1).split(",")}
    assert included == set(extras) - {"all", "dev"}


def test_core_dependencies_include_no_optional_package() -> None:
    core = {_requirement_name(req) for req in _pyproject()["project"]["dependencies"]}
    assert core & OPTIONAL_DISTRIBUTIONS == set()


def test_every_setting_is_documented() -> None:
    from usermgmt.config import Settings

    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)`", page, re.MULTILINE))
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - documented == set(), "add these to docs/configuration.md"
    assert documented - fields == set(), "docs/configuration.md names settings that do not exist"


def test_readme_quick_start_has_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Quick start\n", 1)[1]
    block = re.search(r"```[a-z]*\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the quick start has no code block"
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2, commands
    assert commands[1] == 'pip install -e ".[dev]" && pytest'


def test_ci_script_is_executable() -> None:
    assert os.access(ROOT / ".ci" / "run", os.X_OK)
