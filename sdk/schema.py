"""A small JSON Schema checker for the manifest: the SDK depends on numpy and onnxruntime only,
so it interprets the subset of JSON Schema its own manifest.schema.json uses (type, enum, const,
required, properties, additionalProperties, propertyNames, items, minItems, maxItems, minLength,
maxLength, minimum, pattern, $ref into $defs). The test suite checks the same manifests with
`jsonschema` too. Keys from the manifest appear in messages shortened and escaped.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

from .display import printable

TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float), "null": (type(None),),
}


@cache
def manifest_schema() -> dict[str, Any]:
    text = resources.files("bard_sdk").joinpath("manifest.schema.json").read_text()
    return dict(json.loads(text))


def schema_errors(value: Any, schema: dict[str, Any], root: dict[str, Any],
                  where: str = "manifest") -> list[str]:
    """Every place where `value` breaks `schema`, as 'path: problem' strings."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return schema_errors(value, root["$defs"][name], root, where)
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(isinstance(value, TYPES[n]) and not (n in ("integer", "number")
                 and isinstance(value, bool)) for n in names)
        if not ok:
            return [f"{where}: expected {' or '.join(names)}, got {type(value).__name__}"]
    if "const" in schema and value != schema["const"]:
        return [f"{where}: must be {schema['const']!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: must be one of {schema['enum']}"]
    errors: list[str] = []
    if isinstance(value, (int, float)) and "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{where}: must be at least {schema['minimum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: too short")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where}: too long")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: does not match {schema['pattern']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{where}: needs at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{where}: more than {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                errors += schema_errors(item, schema["items"], root, f"{where}[{i}]")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{where}: missing {key!r}")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        names = schema.get("propertyNames")
        for key, item in value.items():
            shown = key if key in properties else printable(key, 40)
            if names is not None:
                errors += schema_errors(key, names, root, f"{where} key '{shown}'")
            if key in properties:
                errors += schema_errors(item, properties[key], root, f"{where}.{key}")
            elif extra is False:
                errors.append(f"{where}: unexpected key '{shown}'")
            elif isinstance(extra, dict):
                errors += schema_errors(item, extra, root, f"{where}.{shown}")
    return errors


def validate_manifest_schema(value: Any) -> list[str]:
    schema = manifest_schema()
    return schema_errors(value, schema, schema)
