"""Development sessions. ``nox -l`` lists them; ``nox`` runs the default set.

``.ci/run`` performs the same checks with plain venv + pip; keep the two equivalent.
"""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PYTHON = "3.11"
SUPPORTED_PYTHONS = ("3.11", "3.12", "3.13")

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "typecheck", "core_only"]


def _add_pyenv_pythons() -> list[str]:
    """Append pyenv's ``versions/<v>/bin`` folders to PATH; return the versions they provide.

    pyenv's shims only serve the selected version, so without this neither uv nor
    virtualenv finds 3.12/3.13 (uv would try to download them). Appending, not
    prepending, keeps ``python3`` and ``pip`` what the caller had.
    """
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    folders, found = [], []
    for minor in SUPPORTED_PYTHONS:
        releases = [
            path
            for path in root.glob(f"{minor}.*")
            if re.fullmatch(rf"{re.escape(minor)}\.\d+", path.name)
            and (path / "bin" / f"python{minor}").exists()
        ]
        if releases:
            newest = max(releases, key=lambda path: int(path.name.rsplit(".", 1)[1]))
            folders.append(str(newest / "bin"))
            found.append(minor)
    if folders:
        os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), *folders])
    return found


def _available_pythons() -> list[str]:
    """3.11 always (the required version); 3.12 and 3.13 only when an interpreter exists."""
    from_pyenv = _add_pyenv_pythons()
    pythons = [PYTHON]
    for minor in SUPPORTED_PYTHONS[1:]:
        on_path = shutil.which(f"python{minor}")
        # A pyenv shim for an unselected version exists but fails when run.
        if minor in from_pyenv or (on_path and "shims" not in Path(on_path).parts):
            pythons.append(minor)
    return pythons


PYTHONS = _available_pythons()


def _dev_requirements(*names: str) -> list[str]:
    """The ``dev`` extra's requirement strings for ``names``, so versions live in pyproject only."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    wanted = {name.lower() for name in names}
    found = [
        req
        for req in extras["dev"]
        if re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower() in wanted
    ]
    assert len(found) == len(wanted), f"{sorted(wanted)} are not all in the dev extra"
    return found


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite with the development extras and psycopg (pytest)."""
    session.install("-e", ".[dev,postgres,redis]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Check style and formatting (ruff check, ruff format --check)."""
    session.install(*_dev_requirements("ruff"))
    paths = session.posargs or ["."]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Type-check the three packages with mypy --strict (settings in pyproject)."""
    session.install("-e", ".[dev,postgres,redis]")
    session.run("mypy", *session.posargs)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site with mkdocs --strict."""
    session.install(*_dev_requirements("mkdocs-material"))
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run the benchmarks (pytest-benchmark, garbage collector disabled)."""
    session.install("-e", ".[dev]")
    session.run(
        "pytest",
        "benchmarks",
        "--ignore=benchmarks/test_audit_archive.py",  # its own session: bench_archive
        "-p",
        "no:cacheprovider",
        "--benchmark-only",
        "--benchmark-disable-gc",
        *session.posargs,
    )


@nox.session(python=PYTHON)
def bench_archive(session: nox.Session) -> None:
    """Benchmark audit archival: PostgreSQL → gzip JSON Lines → S3 on moto (10M events by
    default; USERMGMT_BENCH_EVENTS=200000 for a quick run). Needs PostgreSQL binaries."""
    session.install("-e", ".[dev,postgres,aws]")
    session.run(
        "pytest",
        "benchmarks/test_audit_archive.py",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        "-s",
        "--benchmark-disable-gc",
        *session.posargs,
    )


@nox.session(python=PYTHON)
def bench_http(session: nox.Session) -> None:
    """Run the HTTP benchmarks: real uvicorn/gunicorn servers on loopback (benchmarks/http)."""
    session.install(
        "-e", ".[fastapi,flask,postgres,redis]", "-r", "benchmarks/http/requirements.txt"
    )
    session.run("python", "benchmarks/http/run.py", *session.posargs)


@nox.session(python=PYTHON)
def core_only(session: nox.Session) -> None:
    """Run the core_only tests with the bare package: no framework, database or cloud extra."""
    session.install(".", *_dev_requirements("pytest", "pytest-timeout", "hypothesis"))
    session.run("pytest", "-m", "core_only", *session.posargs, env={"USERMGMT_CORE_ONLY": "1"})
