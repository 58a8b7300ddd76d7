"""One strict loader for every lakd config: YAML file or mapping + dotted overrides -> dataclass.

Rules:

- A config is a dataclass; sections are nested dataclasses. Field types come from
  ``typing.get_type_hints`` (so ``from __future__ import annotations`` works; dataclasses with
  string annotations must be defined at module level).
- Supported field types: ``bool``, ``int``, ``float``, ``str``, ``pathlib.Path``, ``None``,
  ``Literal[...]``, simple enums (by value or by name), ``list[X]``, ``tuple[X, ...]``, fixed
  ``tuple[X, Y]``, ``dict[K, V]``, ``Any``, nested dataclasses and unions of these
  (``X | None``, ``str | dict[str, Any]``).
- Strict types: a bool is never an int or a float; an int is accepted for a float (and becomes
  one); nothing else is converted (``"3"`` is not an int, ``3.0`` is not an int, ``3`` is not a
  string); a path is a non-empty string; lists and tuples are read from YAML lists.
- Unions try their members in the order written, ``Any`` last; the first that accepts the value
  wins. When none does and the value is a mapping or a list that exactly one member could read,
  that member's (more precise) error is reported; otherwise the error lists every member.
- Unknown keys are errors with a "did you mean" suggestion; missing required keys are errors;
  absent keys take the dataclass default (``default_factory`` included). A section given as a
  mapping is built from its class's defaults, not merged onto the field's default instance.
- Every error is one line, a :class:`~lakd.errors.LakdError`, prefixed by the source (the file
  as the user named it, or ``config``) and naming the dotted key, e.g.
  ``run.yaml: optim.lr: expected a number, got 'fast'``. A ``LakdError`` raised by a
  dataclass's ``__post_init__`` is prefixed with the key of its section.
- YAML is read with a ``SafeLoader`` (plain data only) that also reads ``1e-3`` as a float
  (as YAML 1.2 does) and rejects duplicate keys. The top level must be a mapping; nesting too deep
  for the parser is an error like any other.
- Overrides are ``KEY=VALUE`` with a dotted KEY and a VALUE read as YAML (``3e-4`` is a float,
  ``true`` a bool, ``null`` None, ``[1, 2]`` a list, ``{a: 1}`` a mapping; an empty VALUE is
  null). A value replaces what was there (mappings are not merged). With a config class, each key
  is checked against the dataclass fields and the value against the field type. A path creates
  missing or null mappings on the way (as if the file had said ``a: {b: v}``), so it may add keys
  to ``dict`` fields and to unions that allow a mapping; it never goes into a value that is not a
  mapping: with ``recipe: fd`` in the file, ``recipe.fd=2`` is an error (write ``recipe={fd: 2}``).
- :func:`to_mapping` / :func:`dump_yaml` write plain YAML data (paths as strings, tuples as
  lists, enums as values) that :func:`load_config` reads back to an equal object.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from lakd.errors import LakdError
from lakd.io import write_text

__all__ = ["apply_overrides", "dump_yaml", "from_mapping", "load_config", "load_yaml", "to_mapping"]

T = TypeVar("T")
_UNIONS = (Union, types.UnionType)
_SCALARS: dict[Any, tuple[str, Any]] = {  # type -> (description, accepts(value))
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    str: ("a string", lambda v: isinstance(v, str)),
    Path: ("a path", lambda v: isinstance(v, PurePath) or (isinstance(v, str) and v != "")),
    type(None): ("null", lambda v: v is None),
}

# ---------------------------------------------------------------------------------------- YAML

_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")  # 1e-3, 3E5, 1.5e3


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float and rejects duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes strings like ``1e-3`` (so they load back as strings), no aliases."""

    def ignore_aliases(self, data):
        return True


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789"))


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or str(err)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping (safe loading: plain data only)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LakdError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise LakdError(f"{path}: not UTF-8 text") from None
    except OSError as err:
        raise LakdError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader: no Python objects
    except yaml.YAMLError as err:
        raise LakdError(f"{path}: invalid YAML at {_yaml_problem(err)}") from None
    except RecursionError:  # PyYAML parses nesting recursively
        raise LakdError(f"{path}: YAML nested too deeply to read") from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else _show(data)
        raise LakdError(f"{path}: expected a mapping of keys at the top level, got {got}")
    return data


# ------------------------------------------------------------------------------ type checking


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _err(path: str, message: str) -> LakdError:
    return LakdError(f"{path}: {message}" if path else message)


def _show(value: Any) -> str:
    """A value as the error names it: YAML spelling for null and booleans, else a short repr."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if tp in _SCALARS:
        return _SCALARS[tp][0]
    if origin in _UNIONS:
        return " or ".join(dict.fromkeys(_describe(a) for a in args))
    if origin is Literal or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
        shown = [_show(a) for a in args] if origin is Literal else [_show(m.value) for m in tp]
        return " or ".join([", ".join(shown[:-1]), shown[-1]] if len(shown) > 1 else shown)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} items"
    return {"mapping": "a mapping", "list": "a list"}.get(_shape(tp), getattr(tp, "__name__", str(tp)))


def _shape(tp: Any) -> str:
    """What a type reads from: ``mapping``, ``list`` or ``scalar``."""
    origin = get_origin(tp) or tp
    if origin is dict or dataclasses.is_dataclass(origin):
        return "mapping"
    return "list" if origin in (list, tuple) else "scalar"


def _value_shape(value: Any) -> str:
    return (
        "mapping" if isinstance(value, Mapping) else "list" if isinstance(value, list | tuple) else "scalar"
    )


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _mismatch(tp: Any, value: Any, path: str) -> LakdError:
    return _err(path, f"expected {_describe(tp)}, got {_show(value)}")


def _unknown(key: Any, names: list[str], path: str) -> LakdError:
    close = difflib.get_close_matches(str(key), names, n=1)
    hint = (
        f"did you mean '{_join(path, close[0])}'?" if close else f"known keys: {', '.join(names) or 'none'}"
    )
    return LakdError(f"unknown key '{_join(path, key)}' ({hint})")


@functools.cache
def _fields(cls: type) -> dict[str, tuple[Any, bool]]:
    """``name -> (type, required)`` for the fields ``cls(...)`` takes."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: (hints[f.name], f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        for f in dataclasses.fields(cls)
        if f.init
    }


def _build(cls: type, data: Mapping, path: str) -> Any:
    fields = _fields(cls)
    for key in data:
        if key not in fields:
            raise _unknown(key, list(fields), path)
    kwargs = {}
    for name, (tp, required) in fields.items():
        if name in data:
            kwargs[name] = _convert(tp, data[name], _join(path, name))
        elif required:
            raise LakdError(f"missing key '{_join(path, name)}'")
    try:
        return cls(**kwargs)
    except LakdError as err:  # from __post_init__: name the section
        raise _err(path, str(err)) from None


def _convert_union(members: tuple, value: Any, path: str) -> Any:
    errors = []
    for member in sorted(members, key=lambda m: m is Any):
        try:
            return _convert(member, value, path)
        except LakdError as err:
            errors.append((member, err))
    precise = [err for member, err in errors if _shape(member) == _value_shape(value) != "scalar"]
    if len(precise) == 1:
        raise precise[0]
    raise _mismatch(Union[members], value, path)  # noqa: UP007 (members is a runtime tuple)


def _convert(tp: Any, value: Any, path: str) -> Any:
    """``value`` checked against ``tp`` and converted (sections built, lists to tuples, ...)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in _UNIONS:
        return _convert_union(args, value, path)
    if origin is Literal:
        if any(_same(value, a) for a in args):
            return value
        raise _mismatch(tp, value, path)
    if tp in _SCALARS:
        if not _SCALARS[tp][1](value):
            raise _mismatch(tp, value, path)
        return float(value) if tp is float else Path(value) if tp is Path else value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if value is member or _same(value, member.value) or value == member.name:
                return member
        raise _mismatch(tp, value, path)
    shape = _shape(tp)
    if shape == "scalar":
        raise TypeError(f"{path or 'config'}: unsupported config field type {tp!r}")
    if dataclasses.is_dataclass(tp) and isinstance(value, tp):
        return value
    if shape != _value_shape(value):
        raise _mismatch(tp, value, path)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is dict or tp is dict:
        key_tp, value_tp = args or (Any, Any)
        return {_convert(key_tp, k, path): _convert(value_tp, v, _join(path, k)) for k, v in value.items()}
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise _mismatch(tp, value, path)
        item_types = args
    else:
        item_types = [args[0] if args else Any] * len(value)
    items = [_convert(t, v, f"{path}[{i}]") for i, (t, v) in enumerate(zip(item_types, value, strict=True))]
    return items if (origin or tp) is list else tuple(items)


def from_mapping(cls: type[T], data: Mapping[str, Any], *, source: str = "config") -> T:
    """Build the dataclass ``cls`` from ``data``, checking keys and types (rules above)."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"from_mapping: {cls!r} is not a dataclass")
    try:
        return _convert(cls, data, "")
    except LakdError as err:
        raise LakdError(f"{source}: {err}") from None


# ------------------------------------------------------------------------------------ overrides


def _key_type(section: Any, key: str, path: str) -> Any:
    """Type of ``key`` in a section of type ``section`` (a dataclass, a dict or Any)."""
    if dataclasses.is_dataclass(section):
        fields = _fields(section)
        if key not in fields:
            raise _unknown(key, list(fields), path)
        return fields[key][0]
    return get_args(section)[1] if get_args(section) else Any


def _section_type(tp: Any, path: str) -> Any:
    """The member of ``tp`` that takes a mapping (Any when unknown); error when none does."""
    members = get_args(tp) if get_origin(tp) in _UNIONS else (tp,)
    sections = [m for m in members if _shape(m) == "mapping"]
    if Any in members or len(sections) > 1:
        return Any
    if not sections:
        raise LakdError(f"'{path}' takes {_describe(tp)}, not sub-keys")
    return sections[0]


def _set(data: dict, keys: list[str], value: Any, cls: Any) -> dict:
    root = node = dict(data)
    tp = cls
    for i, key in enumerate(keys):
        path = ".".join(keys[: i + 1])
        tp = _key_type(tp, key, ".".join(keys[:i]))
        if i == len(keys) - 1:
            break
        tp = _section_type(tp, path)
        child = node.get(key)
        if child is not None and not isinstance(child, Mapping):
            raise LakdError(f"'{path}' is {_show(child)}, not a mapping (replace it whole: {path}={{...}})")
        node[key] = dict(child or {})
        node = node[key]
    _convert(tp, value, path)  # type check; the mapping keeps the YAML value
    node[keys[-1]] = value
    return root


def apply_overrides(
    mapping: Mapping[str, Any] | None, overrides: Iterable[str], *, cls: type | None = None
) -> dict[str, Any]:
    """A copy of ``mapping`` with each ``KEY=VALUE`` override applied in order (rules above)."""
    if isinstance(overrides, str):
        raise TypeError("apply_overrides: overrides must be a list of strings, not one string")
    data = dict(mapping or {})
    for text in overrides:
        key, sep, raw = text.partition("=")
        keys = key.strip().split(".")
        try:
            if not sep:
                raise LakdError("expected KEY=VALUE")
            if not all(keys):
                raise LakdError(f"empty part in key '{key.strip()}'" if key.strip() else "empty key")
            try:
                value = yaml.load(raw, Loader=_Loader)  # a SafeLoader: no Python objects
            except yaml.YAMLError as err:
                raise LakdError(f"invalid YAML value ({_yaml_problem(err)})") from None
            except RecursionError:
                raise LakdError("YAML value nested too deeply to read") from None
            data = _set(data, keys, value, Any if cls is None else cls)
        except LakdError as err:
            raise LakdError(f"override {text!r}: {err}") from None
    return data


def load_config(
    cls: type[T],
    path: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    mapping: Mapping[str, Any] | None = None,
) -> T:
    """``cls`` from a YAML file (or a mapping, or neither: defaults only) plus overrides."""
    if path is not None and mapping is not None:
        raise TypeError("load_config: give a path or a mapping, not both")
    data = load_yaml(path) if path is not None else dict(mapping or {})
    data = apply_overrides(data, overrides, cls=cls)
    return from_mapping(cls, data, source="config" if path is None else str(path))


# ------------------------------------------------------------------------------------- writing


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: _plain(getattr(value, name)) for name in _fields(type(value))}
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def to_mapping(obj: Any) -> dict[str, Any]:
    """A dataclass instance as plain YAML data (paths as strings, tuples as lists, enums as values)."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"to_mapping: {obj!r} is not a dataclass instance")
    return _plain(obj)


def dump_yaml(obj: Any, path: str | os.PathLike) -> None:
    """Write ``to_mapping(obj)`` as YAML, atomically; :func:`load_config` reads it back."""
    text = yaml.dump(to_mapping(obj), Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    write_text(path, text)
