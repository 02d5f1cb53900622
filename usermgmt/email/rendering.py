"""Render the built-in emails from Jinja2 templates; applications override any file.

Each email ``NAME`` has three templates: ``NAME.subject.txt``, ``NAME.txt`` and
``NAME.html``. An application overrides some or all of them by passing its own
directories (searched first) to :class:`EmailRenderer`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2

TEMPLATES = ("verify_email", "password_reset", "invitation", "existing_account", "password_changed")


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


class EmailRenderer:
    """Renders emails; HTML templates are autoescaped, text ones are not."""

    def __init__(
        self,
        *,
        template_dirs: Sequence[str | os.PathLike[str]] = (),
        loader: jinja2.BaseLoader | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if loader is not None:
            loaders.append(loader)
        if template_dirs:
            loaders.append(jinja2.FileSystemLoader([os.fspath(d) for d in template_dirs]))
        loaders.append(jinja2.PackageLoader("usermgmt", "email/templates"))
        self._env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        self._defaults = dict(defaults or {})

    def render(self, name: str, context: Mapping[str, Any]) -> RenderedEmail:
        """Render email ``name``; raises jinja2 errors for a broken override (a programming error)."""
        values = {**self._defaults, **context}
        subject = self._env.get_template(f"{name}.subject.txt").render(values)
        return RenderedEmail(
            subject=" ".join(subject.split()),  # one line: no header injection through templates
            text=self._env.get_template(f"{name}.txt").render(values),
            html=self._env.get_template(f"{name}.html").render(values),
        )
