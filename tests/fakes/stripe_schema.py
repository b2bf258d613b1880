"""Stripe's request shapes, checked the way Stripe checks them: bracket-notation forms and a small schema validator.

The fake Stripe server (stripe_server.py) uses this to refuse any request that the real API would refuse for its
shape, so that a test passing against the fake means the gateway's requests validate against Stripe's own OpenAPI
description (`stripe-openapi/paths.subset.json` beside this file, copied from github.com/stripe/openapi; its README
says from which file and commit).

The validator covers exactly the JSON-schema keywords those request bodies use (`type`, `properties`, `required`,
`additionalProperties`, `items`, `enum`, `maxLength`, `anyOf`, `format`), no more: an unknown keyword is ignored.

Two wire formats:
- v1 bodies and every query string are form-encoded with Stripe's bracket notation (`payload[value]=5`,
  `expand[0]=x`, `recurring[interval]=month`). Every leaf arrives as a string, so the validator *coerces* by schema:
  `"5"` is an integer where the schema says integer, `"true"` a boolean, `{"0": a, "1": b}` a list where it says
  array. Stripe's v1 API refuses any parameter it does not know, at every depth ("Received unknown parameter:
  recurring[foo]"), so a v1 object schema that lists `properties` and says nothing about `additionalProperties` is
  treated as closed.
- v2 bodies are JSON: types must match as they are, and only an explicit `additionalProperties: false` closes an
  object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

Schema = Mapping[str, Any]

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
_INTEGER = re.compile(r"^-?\d+$")
_NUMBER = re.compile(r"^-?(\d+\.?\d*|\.\d+)$")
_CURRENCY = re.compile(r"^[a-zA-Z]{3}$")


@dataclass(frozen=True)
class Problem:
    """One reason a request is invalid, named by the parameter in Stripe's bracket notation."""

    param: str
    message: str


# -- Finding the OpenAPI excerpt -----------------------------------------------------------------------------------


# Inside the repository, so that a fresh clone alone passes the tests.
SPEC_DIR = Path(__file__).resolve().parent / "stripe-openapi"


@cache
def load_spec(directory: str | None = None) -> dict[str, Any]:
    """The `paths` objects of `paths.subset.json` and `paths.reconcile.json`, from `directory` or else SPEC_DIR.

    Keys are the spec's path templates (`/v2/core/events/{id}`); the two files hold distinct paths.
    """
    paths: dict[str, Any] = {}
    for name in ("paths.subset.json", "paths.reconcile.json"):
        path = Path(directory or SPEC_DIR) / name
        if path.exists():
            paths.update(json.loads(path.read_text())["paths"])
    return paths


@cache
def load_schemas(directory: str | None = None) -> dict[str, Any]:
    """The `components.schemas` of `schemas.reconcile.json`: the v2 event shapes the fake's answers follow."""
    schemas: dict[str, Any] = json.loads((Path(directory or SPEC_DIR) / "schemas.reconcile.json").read_text())[
        "components"
    ]["schemas"]
    return schemas


def body_schema(spec: Mapping[str, Any], path: str, method: str) -> tuple[Schema | None, bool]:
    """The request-body schema of an operation and whether the body is form-encoded (v1) rather than JSON (v2).

    (None, ...) when the operation declares no body (then any body is accepted, as `{}` for the v2 session).
    """
    operation = spec.get(path, {}).get(method.lower())
    if operation is None:
        return None, path.startswith("/v1/")
    content = operation.get("requestBody", {}).get("content", {})
    if "application/x-www-form-urlencoded" in content:
        return content["application/x-www-form-urlencoded"]["schema"], True
    if "application/json" in content:
        return content["application/json"]["schema"], False
    return None, path.startswith("/v1/")


def query_schema(spec: Mapping[str, Any], path: str, method: str) -> Schema | None:
    """An object schema built from an operation's `in: query` parameters: what a GET's query string may hold."""
    operation = spec.get(path, {}).get(method.lower())
    if operation is None:
        return None
    parameters = [p for p in operation.get("parameters", []) if p.get("in") == "query"]
    return {
        "type": "object",
        "properties": {p["name"]: p["schema"] for p in parameters},
        "required": [p["name"] for p in parameters if p.get("required")],
        "additionalProperties": False,
    }


# -- Stripe's bracket notation -------------------------------------------------------------------------------------


def parse_form(encoded: str) -> tuple[dict[str, Any], list[Problem]]:
    """Decode `a[b][0]=x&c[]=y` into `{"a": {"b": {"0": "x"}}, "c": {"0": "y"}}`.

    Indexed arrays stay dicts keyed by digit strings here; the validator turns them into lists where the schema says
    array (a metadata key may legitimately be "0"). A trailing `[]` (Stripe's legacy list notation) takes the next
    free index. A key given both a value and sub-keys is a problem, as it is for Stripe. A repeated key: last wins.
    """
    result: dict[str, Any] = {}
    problems: list[Problem] = []
    next_index: dict[str, int] = {}
    for key, value in parse_qsl(encoded, keep_blank_values=True):
        match = _KEY.match(key)
        segments = [match.group(1), *_SEGMENT.findall(match.group(2))] if match else []
        if not segments or "" in segments[:-1]:
            problems.append(Problem(key, f"Invalid parameter name: {key}"))
            continue
        if segments[-1] == "":
            stem = key[:-2]
            segments[-1] = str(next_index.get(stem, 0))
            next_index[stem] = int(segments[-1]) + 1
        if not _assign(result, segments, value):
            problems.append(Problem(key, f"Invalid parameter: {key} is given both as a value and as a hash"))
    return result, problems


def _assign(container: dict[str, Any], segments: list[str], value: str) -> bool:
    node = container
    for segment in segments[:-1]:
        child = node.setdefault(segment, {})
        if not isinstance(child, dict):
            return False
        node = child
    if isinstance(node.get(segments[-1]), dict):
        return False
    node[segments[-1]] = value
    return True


# -- The validator -------------------------------------------------------------------------------------------------


def validate(schema: Schema, value: Any, *, form: bool) -> tuple[Any, list[Problem]]:
    """Check `value` against `schema`; return it coerced to the schema's types and every problem found.

    With `form=True` the leaves are strings from a form and are coerced (see the module docstring). The returned
    value is meaningful only when there are no problems.
    """
    problems: list[Problem] = []
    coerced = _check(schema, value, "", form, problems)
    return coerced, problems


def _child(param: str, key: str | int) -> str:
    return f"{param}[{key}]" if param else str(key)


def _check(schema: Schema, value: Any, param: str, form: bool, problems: list[Problem]) -> Any:
    if "anyOf" in schema:
        return _check_any_of(schema, value, param, form, problems)
    before = len(problems)
    kind = schema.get("type")
    if kind == "object":
        coerced = _check_object(schema, value, param, form, problems)
    elif kind == "array":
        coerced = _check_array(schema, value, param, form, problems)
    elif kind == "string":
        coerced = _check_string(schema, value, param, form, problems)
    elif kind == "integer":
        coerced = _check_integer(value, param, form, problems)
    elif kind == "number":
        coerced = _check_number(value, param, form, problems)
    elif kind == "boolean":
        coerced = _check_boolean(value, param, form, problems)
    else:
        coerced = value
    enum = schema.get("enum")
    if enum is not None and len(problems) == before and coerced not in enum:
        allowed = ", ".join(repr(e) for e in enum)
        problems.append(Problem(param, f"Invalid {param}: must be one of {allowed}"))
    return coerced


def _check_any_of(schema: Schema, value: Any, param: str, form: bool, problems: list[Problem]) -> Any:
    reasons: list[str] = []
    for option in schema["anyOf"]:
        trial: list[Problem] = []
        coerced = _check(option, value, param, form, trial)
        if not trial:
            return coerced
        reasons.append(trial[0].message)
    problems.append(Problem(param, f"Invalid {param}: matches none of the allowed forms ({'; '.join(reasons)})"))
    return value


def _check_object(schema: Schema, value: Any, param: str, form: bool, problems: list[Problem]) -> Any:
    if form and value == "":
        return {}  # Stripe: posting an empty value to a hash unsets it (`metadata=`)
    if not isinstance(value, dict):
        problems.append(Problem(param, f"Invalid object: {param} must be a hash"))
        return value
    properties: Mapping[str, Schema] = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            problems.append(Problem(_child(param, name), f"Missing required param: {_child(param, name)}."))
    extra = schema.get("additionalProperties", not (form and "properties" in schema))
    coerced: dict[str, Any] = {}
    for key, item in value.items():
        where = _child(param, key)
        if key in properties:
            coerced[key] = _check(properties[key], item, where, form, problems)
        elif isinstance(extra, Mapping):
            coerced[key] = _check(extra, item, where, form, problems)
        elif extra is False:
            problems.append(Problem(where, f"Received unknown parameter: {where}"))
        else:
            coerced[key] = item
    return coerced


def _check_array(schema: Schema, value: Any, param: str, form: bool, problems: list[Problem]) -> Any:
    if form and value == "":
        return []  # Stripe: posting an empty value to a list unsets it
    if isinstance(value, dict) and value and all(k.isdigit() for k in value):
        value = [value[k] for k in sorted(value, key=int)]  # the form's `expand[0]=a&expand[1]=b`
    if not isinstance(value, list):
        problems.append(Problem(param, f"Invalid array: {param} must be a list"))
        return value
    items: Schema = schema.get("items", {})
    return [_check(items, item, _child(param, i), form, problems) for i, item in enumerate(value)]


def _check_string(schema: Schema, value: Any, param: str, form: bool, problems: list[Problem]) -> Any:
    if not isinstance(value, str):
        problems.append(Problem(param, f"Invalid string: {param} must be a string"))
        return value
    limit = schema.get("maxLength")
    if limit is not None and len(value) > limit:
        shown = value if len(value) <= 20 else value[:20] + "..."
        problems.append(Problem(param, f"Invalid string: {shown}; {param} must be at most {limit} characters"))
    fmt = schema.get("format")
    if fmt == "date-time" and not _is_datetime(value):
        problems.append(Problem(param, f"Invalid {param}: {value!r} is not an ISO 8601 date-time"))
    elif fmt == "decimal" and not _is_decimal(value):
        problems.append(Problem(param, f"Invalid decimal: {value!r}"))
    elif fmt == "currency" and not _CURRENCY.match(value):
        problems.append(Problem(param, f"Invalid currency: {value!r}"))
    return value


def _check_integer(value: Any, param: str, form: bool, problems: list[Problem]) -> Any:
    if form and isinstance(value, str) and _INTEGER.match(value):
        return int(value)
    if not form and isinstance(value, int) and not isinstance(value, bool):
        return value
    problems.append(Problem(param, f"Invalid integer: {value!r} for {param}"))
    return value


def _check_number(value: Any, param: str, form: bool, problems: list[Problem]) -> Any:
    if form and isinstance(value, str) and _NUMBER.match(value):
        return Decimal(value)
    if not form and isinstance(value, int | float) and not isinstance(value, bool):
        return value
    problems.append(Problem(param, f"Invalid number: {value!r} for {param}"))
    return value


def _check_boolean(value: Any, param: str, form: bool, problems: list[Problem]) -> Any:
    if form and value in ("true", "false"):
        return value == "true"
    if not form and isinstance(value, bool):
        return value
    problems.append(Problem(param, f"Invalid boolean: {value!r} for {param}"))
    return value


def _is_datetime(text: str) -> bool:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return False
    return parsed.tzinfo is not None


def _is_decimal(text: str) -> bool:
    try:
        return Decimal(text).is_finite()
    except InvalidOperation:
        return False
