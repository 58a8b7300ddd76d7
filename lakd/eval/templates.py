"""Prompt templates for zero-shot classification: a default set and template files.

A template is a ``str.format`` pattern with one named field ``{c}`` for the class name
(clip_benchmark's convention), e.g. ``"a photo of a {c}."``; the field takes no conversion or format
spec. A template file holds one template
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
    """Why ``template`` is not a valid class-name template, or None when it is: it must use the field
    ``{c}`` as it is, with no conversion (``{c!r}``) or format spec (``{c:>3000000000}``, which
    would pad the class name to any width), and no other field."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as err:
        return f"not a valid format string ({err})"
    fields = [(name, spec, conversion) for _, name, spec, conversion in parts if name is not None]
    if {name for name, _, _ in fields} != {"c"}:
        found = ", ".join("{" + name + "}" for name, _, _ in fields) or "no field"
        return f"must use the class-name field {{c}} and no other field (found {found})"
    for name, spec, conversion in fields:
        if spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            return f"must use {{c}} as it is, without a conversion or format spec (found {shown})"
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
    """Prompts in class-major order: ``[t.format(c=name) for name in classnames for t in templates]``;
    a template that is not a plain ``{c}`` pattern (:func:`template_problem`) is a LakdError."""
    for template in templates:
        problem = template_problem(template)
        if problem:
            raise LakdError(f"template {template[:80]!r}: {problem}")
    return [template.format(c=name) for name in classnames for template in templates]
