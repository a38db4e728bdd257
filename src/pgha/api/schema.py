"""Request input: JSON bodies, query strings and their schemas, validated into one clear line.

Each body and query parameter is declared once (``Field``, ``Param``); the same
declaration validates requests and produces the OpenAPI schema, so the
document served at /openapi.json cannot drift from what the server accepts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

# Bodies larger than this are refused with 413 before they are read.
MAX_BODY = 1024 * 1024
# Deeper JSON is refused (nothing pgha accepts nests more than twice).
MAX_DEPTH = 16

Kind = Literal["string", "boolean", "integer", "number", "time", "object"]


class BadRequest(Exception):
    """The request is malformed; ``str()`` is the one-line message sent with 400."""


@dataclass(frozen=True)
class Field:
    """One member of a JSON request body."""

    name: str
    kind: Kind
    description: str
    required: bool = False
    enum: tuple[str, ...] = ()


@dataclass(frozen=True)
class Body:
    """A JSON object body; ``schema`` overrides the generated one (free-form objects)."""

    fields: tuple[Field, ...] = ()
    description: str = ""
    schema: Mapping[str, Any] | None = None
    media_type: str = "application/json"


@dataclass(frozen=True)
class Param:
    """One query parameter; a name ending in ``*`` is a prefix (``tag_*``)."""

    name: str
    description: str
    example: str = ""


# --- JSON ---------------------------------------------------------------------------------
def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not valid JSON; numbers must be finite")


def _depth(value: Any) -> int:
    """How many levels of objects and arrays nest (stops counting past MAX_DEPTH)."""
    depth, level = 0, [value]
    while depth <= MAX_DEPTH:
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers:
            break
        depth += 1
        level = [x for v in containers for x in (v.values() if isinstance(v, dict) else v)]
    return depth


def parse_json_object(raw: bytes, empty_ok: bool = True) -> dict[str, Any]:
    """Parse a request body into a JSON object or raise BadRequest."""
    if not raw.strip():
        if empty_ok:
            return {}
        raise BadRequest("the body is empty; send a JSON object")
    try:
        value = json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    except BadRequest:
        raise
    except RecursionError:
        raise BadRequest("the JSON body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadRequest(f"the body is not valid JSON ({first[:120]})") from None
    if not isinstance(value, dict):
        raise BadRequest(f"the body must be a JSON object, not {_json_type(value)}")
    if _depth(value) > MAX_DEPTH:
        raise BadRequest(f"the JSON body is nested more than {MAX_DEPTH} levels deep")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_KIND_CHECK: Mapping[str, tuple[str, typing.Callable[[Any], bool]]] = {
    "string": ("a string", lambda v: isinstance(v, str)),
    "boolean": ("true or false", lambda v: isinstance(v, bool)),
    "integer": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "number": ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    "time": ("an ISO-8601 time with a timezone or epoch seconds",
             lambda v: isinstance(v, str | int | float) and not isinstance(v, bool)),
    "object": ("a JSON object", lambda v: isinstance(v, dict)),
}


def validate_body(body: Body, value: dict[str, Any]) -> dict[str, Any]:
    """Check ``value`` against the declared fields: unknown, missing, wrong type or value."""
    if body.schema is not None:
        return value
    known = {f.name: f for f in body.fields}
    for key in value:
        if key not in known:
            allowed = ", ".join(known) or "no fields"
            raise BadRequest(f"unknown field {_short(key)}; this endpoint accepts: {allowed}")
    for f in body.fields:
        if f.name not in value or value[f.name] is None:
            if f.required:
                raise BadRequest(f"{f.name}: required field is missing")
            continue
        v = value[f.name]
        what, ok = _KIND_CHECK[f.kind]
        if not ok(v):
            raise BadRequest(f"{f.name}: expected {what}, got {_short(v)}")
        if f.enum and v not in f.enum:
            raise BadRequest(f"{f.name}: must be one of {', '.join(f.enum)}, got {_short(v)}")
        if f.kind == "string" and not v:
            raise BadRequest(f"{f.name}: must not be empty")
    return value


def parse_time(name: str, value: Any) -> float:
    """An ISO-8601 time with timezone, or epoch seconds -> epoch seconds (whether it is in the past
    is the request's validator's question: ``pgha.intents``)."""
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            epoch = float(text)
        else:
            try:
                when = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
            except ValueError:
                raise BadRequest(f"{name}: {_short(value)} is not an ISO-8601 time, "
                                 "e.g. 2030-01-01T10:00:00+00:00") from None
            if when.tzinfo is None:
                raise BadRequest(f"{name}: {_short(value)} has no timezone; add one, e.g. +00:00 or Z")
            try:
                epoch = when.timestamp()
            except (OverflowError, ValueError, OSError):
                raise BadRequest(f"{name}: {_short(value)} is out of range") from None
    else:
        epoch = float(value)
    if not math.isfinite(epoch) or epoch > 1e11:
        raise BadRequest(f"{name}: {_short(value)} is out of range")
    return epoch


# --- query strings -----------------------------------------------------------------------
# A parameter named "*" stands for every other one: ignored, as Patroni ignores what it does not
# know (its health checks), and given more than once, the first value counts (as in Patroni).
ANY_OTHER = "*"


def check_query(params: tuple[Param, ...], query: Mapping[str, list[str]]) -> dict[str, str]:
    """One value per known parameter; unknown or repeated parameters are refused, unless the
    endpoint takes any other (``ANY_OTHER``)."""
    lenient = any(p.name == ANY_OTHER for p in params)
    out: dict[str, str] = {}
    for key, values in query.items():
        if not any(key == p.name or (p.name.endswith("*") and p.name != ANY_OTHER
                                     and key.startswith(p.name[:-1]) and len(key) > len(p.name) - 1)
                   for p in params):
            if lenient:
                continue
            allowed = ", ".join(p.name.replace("*", "<key>") for p in params) or "no parameters"
            raise BadRequest(f"unknown query parameter {_short(key)}; this endpoint accepts: {allowed}")
        if len(values) > 1 and not lenient:
            raise BadRequest(f"query parameter {_short(key)} is given {len(values)} times; give it once")
        out[key] = values[0]
    return out


# --- merge patch (RFC 7396) ---------------------------------------------------------------
def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON merge patch: objects merge recursively, null deletes a key."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- OpenAPI schemas -----------------------------------------------------------------------
def body_schema(body: Body) -> dict[str, Any]:
    if body.schema is not None:
        return dict(body.schema)
    props: dict[str, Any] = {}
    for f in body.fields:
        if f.kind == "time":
            s: dict[str, Any] = {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]}
        else:
            s = {"type": f.kind}
        if f.enum:
            s["enum"] = list(f.enum)
        s["description"] = f.description
        props[f.name] = s
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    required = [f.name for f in body.fields if f.required]
    if required:
        out["required"] = required
    return out


def dataclass_patch_schema(cls: type) -> dict[str, Any]:
    """A merge-patch schema of a dataclass: every field optional and nullable (null = default)."""
    hints = typing.get_type_hints(cls)
    props = {f.name: {**_type_schema(hints[f.name]), "nullable": True}
             for f in dataclasses.fields(cls)}
    return {"type": "object", "properties": props, "additionalProperties": False}


def _type_schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return {"type": "string", "enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_type_schema(a) for a in args if a is not type(None)]}
    if origin in (Mapping, dict):
        return {"type": "object", "additionalProperties": {**_type_schema(args[1]), "nullable": True}}
    if origin in (tuple, list):
        return {"type": "array", "items": _type_schema(args[0])}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return {"type": simple.get(tp, "string")}
