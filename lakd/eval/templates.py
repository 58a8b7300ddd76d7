"""Prompt templates for zero-shot classification: a default set and template files.

A template is a ``str.format`` pattern with one named field ``{c}`` for the class name
(clip_benchmark's convention), e.g. ``"a photo of a {c}."``. A template file holds one template
per line; blank lines and lines starting with ``#`` are ignored.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

from lakd.errors import LakdError

# Short and generic, so they suit both photos and the shapes world's captions ("a small red circle").
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a {c}.",
    "a small {c}.",
    "a large {c}.",
    "a photo of a {c}.",
    "a picture of a {c}.",
    "an image of a {c}.",
    "a drawing of a {c}.",
)


def template_problem(template: str) -> str | None:
    """Why ``template`` is not a valid class-name template, or None when it is."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        return f"not a valid format string ({err})"
    if set(fields) != {"c"}:
        found = ", ".join("{" + name + "}" for name in fields) or "no field"
        return f"must use the class-name field {{c}} and no other field (found {found})"
    return None


def load_templates(path: str | os.PathLike) -> list[str]:
    """Read a template file (one ``{c}`` template per line); LakdError naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise LakdError(f"{path}: cannot read the template file ({err})") from None
    templates = []
    for lineno, line in enumerate(lines, start=1):
        template = line.strip()
        if not template or template.startswith("#"):
            continue
        problem = template_problem(template)
        if problem:
            raise LakdError(f"{path}:{lineno}: template {template!r} {problem}")
        templates.append(template)
    if not templates:
        raise LakdError(f"{path}: the template file holds no template (one per line, with {{c}})")
    return templates


def source_templates(source: object) -> list[str]:
    """The templates a data source states for its classes (the shapes world's, in its own caption
    language), else :data:`DEFAULT_TEMPLATES`."""
    own = getattr(source, "templates", None)
    return list(own) if own else list(DEFAULT_TEMPLATES)


def class_prompts_text(classnames: list[str], templates: list[str]) -> list[str]:
    """Prompts in class-major order: ``[t.format(c=name) for name in classnames for t in templates]``."""
    return [template.format(c=name) for name in classnames for template in templates]
