"""Strict JSON for the files bard keeps: written without NaN, read back field by field.

A run directory outlives the process that wrote it: files get truncated, edited, or come from an
older bard. Everything read back is checked here, and every problem is one UsageError line that
names the file and the field, never a KeyError or TypeError traceback.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import UsageError

T = TypeVar("T")


def dumps(value: Any, **options: Any) -> str:
    """Strict JSON: a NaN or an infinity is a bug in bard, never a file on disk."""
    return json.dumps(value, allow_nan=False, **options)


def finite_or_none(value: float) -> float | None:
    """A float for JSON: non-finite numbers (an 'infinite' best loss before any
    evaluation) are written as null."""
    return value if math.isfinite(value) else None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")


def parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as err:
        raise UsageError(f"{where} is not valid JSON: {err}") from None


def read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {path}: {err}") from None
    return parse_json(text, str(path))


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Fields:
    """Typed access to one JSON object; errors name `where` (file and path) and the field."""

    def __init__(self, record: Any, where: str) -> None:
        if not isinstance(record, dict):
            raise UsageError(f"{where} must be a JSON object, got {type(record).__name__}")
        self.record = record
        self.where = where

    def bad(self, name: str, expected: str) -> UsageError:
        return UsageError(f"{self.where}: field {name!r} must be {expected}, got "
                          f"{_describe(self.record[name])}")

    def get(self, name: str) -> Any:
        if name not in self.record:
            raise UsageError(f"{self.where}: missing field {name!r}")
        return self.record[name]

    def integer(self, name: str, minimum: int | None = None) -> int:
        value = self.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.bad(name, "an integer")
        if minimum is not None and value < minimum:
            raise self.bad(name, f"an integer >= {minimum}")
        return value

    def number(self, name: str, *, optional: bool = False) -> float | None:
        value = self.get(name)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.bad(name, "a number" + (" or null" if optional else ""))
        return float(value)

    def string(self, name: str, *, optional: bool = False) -> str | None:
        value = self.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self.bad(name, "a string" + (" or null" if optional else ""))
        return value

    def boolean(self, name: str, default: bool | None = None) -> bool:
        if name not in self.record and default is not None:
            return default
        value = self.get(name)
        if not isinstance(value, bool):
            raise self.bad(name, "true or false")
        return value

    def obj(self, name: str) -> Fields:
        value = self.get(name)
        if not isinstance(value, dict):
            raise self.bad(name, "a JSON object")
        return Fields(value, f"{self.where} {name}")

    def array(self, name: str) -> list[Any]:
        value = self.get(name)
        if not isinstance(value, list):
            raise self.bad(name, "a list")
        return value


def _accepts(value: Any, hint: Any) -> bool:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_accepts(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is list:  # list[str] and the like
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_accepts(v, item) for v in value)
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(hint, type) and isinstance(value, hint)


def _type_name(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             type(None): "null"}
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return " or ".join(_type_name(arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(typing.get_args(hint)[0]).split(' ', 1)[-1]}s"
    return names.get(hint, str(hint))


def dataclass_from_json(cls: type[T], record: Any, where: str) -> T:
    """Build a config dataclass from JSON, checking each field's type; fields an older file
    lacks take their defaults, unknown fields are refused."""
    fields = Fields(record, where)
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(fields.record) - set(known))
    if unknown:
        raise UsageError(f"{where}: unknown field {unknown[0]!r}")
    values: dict[str, Any] = {}
    for name, spec in known.items():
        if name not in fields.record:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise UsageError(f"{where}: missing field {name!r}")
            continue
        value = fields.record[name]
        if not _accepts(value, hints[name]):
            raise fields.bad(name, _type_name(hints[name]))
        values[name] = float(value) if hints[name] is float else value
    try:
        built = cls(**values)
        validate = getattr(built, "validate", None)
        if validate is not None:
            validate()
    except UsageError as err:
        raise UsageError(f"{where}: {err}") from None
    return built
