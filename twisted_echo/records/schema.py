# -*- test-case-name: tests.test_records -*-
"""
The records' JSON schema (C{schema.json} beside this module, JSON Schema
2020-12) and a small checker of the part of JSON Schema it uses: C{type}
(one or a list), C{enum}, C{minimum}, C{required}, C{properties},
C{additionalProperties} (C{false} or a schema) and C{items}. (The
C{jsonschema} package is not a dependency of sockecho; a test suite that
has it can validate with it against the same file.)
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


@lru_cache(maxsize=1)
def record_schema() -> dict[str, Any]:
    """
    @return: the records' JSON schema, as loaded from C{schema.json}.
    """
    text = resources.files(__package__).joinpath("schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def problems(
    value: Any, schema: dict[str, Any] | None = None, at: str = ""
) -> list[str]:
    """
    Check C{value} against C{schema}.

    @param value: a JSON value (as C{json.loads} makes it).
    @param schema: the schema, the records' (L{record_schema}) by default.
    @param at: where C{value} is, for the messages (C{""}: the top).
    @return: one line per problem found, naming where (C{"tls.sni: ..."});
        empty when C{value} fits.
    """
    if schema is None:
        schema = record_schema()
    where = at or "record"
    found: list[str] = []
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        fits = any(
            isinstance(value, _TYPES[n])
            and not (n in ("integer", "number") and isinstance(value, bool))
            for n in names
        )
        if not fits:
            return [f"{where}: {value!r} is not of type {' or '.join(names)}"]
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} is not one of {schema['enum']}")
    minimum = schema.get("minimum")
    if (
        minimum is not None
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value < minimum
    ):
        found.append(f"{where}: {value!r} is less than {minimum}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                found.append(f"{where}: {name!r} is missing")
        for name, item in value.items():
            inner = f"{at}.{name}" if at else name
            if name in properties:
                found.extend(problems(item, properties[name], inner))
            elif schema.get("additionalProperties") is False:
                found.append(f"{where}: {name!r} is not a field of the schema")
            elif isinstance(schema.get("additionalProperties"), dict):
                found.extend(problems(item, schema["additionalProperties"], inner))
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found.extend(problems(item, schema["items"], f"{where}[{index}]"))
    return found
