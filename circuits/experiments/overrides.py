"""Experiment config overrides: check names and types, and parse the CLI's ``--set key=value`` strings.

A config is a frozen dataclass whose fields carry simple types (``int``, ``float``, ``bool``, ``str``,
``tuple[int, ...]``, ``Literal[...]``, ``X | None``). Overrides from Python and from the command line
go through the same check, so ``steps="ten"`` and ``--set steps=ten`` fail alike, naming the field,
the expected type and the value given.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal

from circuits.checks import check_fields_finite
from circuits.errors import ConfigError, did_you_mean


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def describe_type(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(describe_type(a) for a in args)
    if origin is tuple:
        return f"tuple[{describe_type(args[0])}, ...]" if args else "tuple"
    return getattr(annotation, "__name__", str(annotation))


def coerce(annotation: Any, value: Any) -> Any:
    """``value`` as ``annotation`` (lists become tuples, ints become floats); TypeError if it is not one."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is Literal:
        if value in args:
            return value
        raise TypeError
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(arg, value)
            except TypeError:
                continue
        raise TypeError
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise TypeError
        element = args[0] if args else Any
        return tuple(coerce(element, v) for v in value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError
    if annotation is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise TypeError


def parse_text(annotation: Any, text: str) -> Any:
    """A ``--set`` value: JSON when it parses (``3``, ``0.5``, ``true``, ``[0, 1]``, ``null``), else the
    bare string; for tuple fields ``a,b,c`` also works (``--set seeds=0,1,2``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    origin = typing.get_origin(annotation)
    wants_tuple = origin is tuple or any(typing.get_origin(a) is tuple for a in typing.get_args(annotation))
    if wants_tuple and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        value = [_scalar(p) for p in parts]
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and _accepts_str_only(annotation):
        value = text  # a word field given a number-like value ("--set word=3") stays a string
    return value


def _scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _accepts_str_only(annotation: Any) -> bool:
    return annotation is str


def apply_overrides(cls: type, base: Any, overrides: dict[str, Any], *, owner: str) -> Any:
    """``base`` (an instance of ``cls``) with ``overrides`` checked and applied; a NaN or infinite number
    in any field is a ConfigError naming it."""
    types_ = field_types(cls)
    unknown = [k for k in overrides if k not in types_]
    if unknown:
        hints = [f"{key!r}{did_you_mean(key, types_)}" for key in unknown]
        raise ConfigError(f"{owner} has no setting {', '.join(hints)}; its settings: {', '.join(types_)}")
    checked = {}
    for key, value in overrides.items():
        try:
            checked[key] = coerce(types_[key], value)
        except TypeError:
            raise ConfigError(
                f"{owner}: {key}={value!r} is not a {describe_type(types_[key])} "
                f"(default: {getattr(base, key)!r})"
            ) from None
    try:
        resolved = dataclasses.replace(base, **checked)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{owner}: {error}") from None
    check_fields_finite(resolved, owner, error=ConfigError)  # the base's fields too: a config passed in whole
    return resolved


def parse_assignments(cls: type, assignments: list[str], *, owner: str) -> dict[str, Any]:
    """``["steps=10", "seeds=0,1"]`` -> ``{"steps": 10, "seeds": [0, 1]}`` (types checked later)."""
    types_ = field_types(cls)
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: write key=value, e.g. --set steps=10; {owner}'s settings: "
                              f"{', '.join(types_)}")  # fmt: skip
        out[key] = parse_text(types_[key], text) if key in types_ else text
    return out


def config_to_json(config: Any) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init}


def config_from_json(cls: type, data: dict[str, Any]) -> Any:
    return apply_overrides(cls, cls(), data, owner=cls.__qualname__)
