"""JSON values of the cluster keys, decoded defensively.

Every value another member wrote is untrusted input: decoding ignores
unknown fields (a newer agent may publish more), fills missing optional
fields with their defaults, and raises ``ValueError`` with one line naming
the bad field when a value cannot be used.  Callers decide what to do with
that error: ``ClusterStore.read()`` skips a bad member, intent or history
entry and keeps the valid fields of a bad /config (see ``decode_config_lenient``).

One generic decoder walks the dataclass fields and their type hints, so a
field added to a model class is encoded and decoded without touching this file.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any, TypeVar

from pgha.core import names
from pgha.core.model import PROFILES, ClusterConfig, MemberInfo, MemberIntent, Switchover, SyncState

T = TypeVar("T")

# Fields that come from the key-value metadata rather than from the stored JSON.
_NOT_STORED: Mapping[type, frozenset[str]] = {SyncState: frozenset({"mod_revision"})}

_MISSING = object()


# --- encoding -------------------------------------------------------------------------
def to_jsonable(obj: Any) -> Any:
    """Dataclasses become dicts (minus metadata fields), tuples lists, enums their values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        skip = _NOT_STORED.get(type(obj), frozenset())
        fields = [f.name for f in dataclasses.fields(obj) if f.name not in skip]
        return {name: to_jsonable(getattr(obj, name)) for name in fields}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [to_jsonable(v) for v in obj]
    return obj


def encode(obj: Any) -> bytes:
    """Compact, key-sorted JSON of a model dataclass."""
    return json.dumps(to_jsonable(obj), separators=(",", ":"), sort_keys=True).encode()


# --- decoding --------------------------------------------------------------------------
def loads_object(data: bytes) -> dict[str, Any]:
    """Parse ``data`` as a JSON object or raise ValueError with one line."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not valid JSON ({_one_line(exc)})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def decode(cls: type[T], data: bytes | Mapping[str, Any], **override: Any) -> T:
    """Build ``cls`` from JSON; unknown fields are ignored, a bad field raises ValueError."""
    value, _ = _build(cls, _as_mapping(data), override, lenient=False)
    return value


def decode_lenient(cls: type[T], data: bytes | Mapping[str, Any], **override: Any) -> tuple[T, list[str]]:
    """Build ``cls`` keeping every field that decodes; returns the problems with the others."""
    return _build(cls, _as_mapping(data), override, lenient=True)


def _as_mapping(data: bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    return loads_object(data) if isinstance(data, bytes | bytearray) else data


def _build(
    cls: type[T], obj: Mapping[str, Any], override: Mapping[str, Any], lenient: bool
) -> tuple[T, list[str]]:
    kwargs: dict[str, Any] = {}
    problems: list[str] = []
    for name, hint in _hints(typing.cast(Any, cls)):
        if name in override:
            kwargs[name] = override[name]
            continue
        raw = obj.get(name, _MISSING)
        if raw is _MISSING:
            continue
        try:
            kwargs[name] = _coerce(hint, raw, name)
        except ValueError as exc:
            if not lenient:
                raise
            problems.append(str(exc))
    try:
        return cls(**kwargs), problems
    except TypeError:
        missing = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                   if f.name not in kwargs and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        raise ValueError(f"missing required field {', '.join(missing) or '?'}") from None


@cache
def _hints(cls: Any) -> tuple[tuple[str, Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls) if f.init)


def _coerce(hint: Any, raw: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if raw is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(inner[0], raw, path)
        for a in inner:
            try:
                return _coerce(a, raw, path)
            except ValueError:
                pass
        raise ValueError(f"{path}: unexpected value {raw!r}")
    if origin is typing.Literal:
        if raw in args:
            return raw
        raise ValueError(f"{path}: {raw!r} is not one of {', '.join(map(str, args))}")
    if origin is tuple:
        if not isinstance(raw, list):
            raise ValueError(f"{path}: expected a list, got {raw!r}")
        return tuple(_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(raw))
    if origin is Mapping or origin is dict:
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected an object, got {raw!r}")
        return {str(k): _coerce(args[1], v, f"{path}.{k}") for k, v in raw.items()}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(raw)
        except ValueError:
            raise ValueError(f"{path}: {raw!r} is not a valid {hint.__name__.lower()}") from None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected an object, got {raw!r}")
        try:
            value, _ = _build(hint, raw, {}, lenient=False)
        except ValueError as exc:
            raise ValueError(f"{path}.{exc}") from None
        return value
    return _scalar(hint, raw, path)


def _scalar(hint: Any, raw: Any, path: str) -> Any:
    if hint is bool:
        if isinstance(raw, bool):
            return raw
    elif hint is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
    elif hint is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
    elif hint is str:
        if isinstance(raw, str):
            return raw
    elif hint is Any:
        return raw
    else:
        raise ValueError(f"{path}: cannot decode type {hint!r}")
    raise ValueError(f"{path}: expected {hint.__name__}, got {raw!r}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# --- the cluster's values ----------------------------------------------------------------
def encode_member(info: MemberInfo) -> bytes:
    return encode(info)


def decode_member(data: bytes, name: str | None = None, lease: int = 0) -> MemberInfo:
    """A member value; ``name`` (from the key) and a non-zero ``lease`` override the JSON."""
    override: dict[str, Any] = {}
    if name is not None:
        override["name"] = name
    if lease:
        override["lease_id"] = lease
    info = decode(MemberInfo, data, **override)
    why = names.member_problem(info.name, info.host, info.port, info.api_url)
    if why is None and info.tags.replicatefrom:
        why = names.problem("member name", info.tags.replicatefrom)
    if why is not None:
        raise ValueError(why)
    return info


def encode_config(config: ClusterConfig) -> bytes:
    return encode(config)


def _profiled(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The timing settings a stored config leaves out come from its profile."""
    profile = obj.get("profile")
    return {**PROFILES.get(profile if isinstance(profile, str) else "default", PROFILES["default"]), **obj}


def decode_config(data: bytes) -> ClusterConfig:
    """A stored config, strictly: any bad field or inconsistent setting raises ValueError (one line)."""
    try:
        config = decode(ClusterConfig, _profiled(loads_object(data)))
    except ValueError as exc:
        raise ValueError(f"invalid cluster config: {exc}") from None
    problem = config.problem()
    if problem is not None:
        raise ValueError(f"invalid cluster config: {problem}")
    return config


def decode_config_lenient(data: bytes) -> tuple[ClusterConfig, list[str]]:
    """A stored config keeping what is usable, and one line per setting that was ignored.

    Fields of the wrong type are dropped.  The remaining fields are applied
    one by one in declaration order over the defaults; a field that would make
    the config inconsistent (``ClusterConfig.problem()``) is dropped too.  The
    result is therefore always a valid config.
    """
    try:
        obj = loads_object(data)
    except ValueError as exc:
        return ClusterConfig(), [f"config: {exc}; using the defaults"]
    obj = _profiled(obj)
    bad_parameters: list[str] = []
    if isinstance(obj.get("parameters"), dict):
        # One bad parameter is left out, not every cluster parameter.
        good, bad_parameters = names.valid_parameters(obj["parameters"])
        obj = {**obj, "parameters": good}
    typed, problems = decode_lenient(ClusterConfig, obj)
    problems = [f"parameters: {p}" for p in bad_parameters] + problems
    config = ClusterConfig()
    given = {f.name: getattr(typed, f.name) for f in dataclasses.fields(ClusterConfig) if f.name in obj}
    whole = dataclasses.replace(config, **given)
    if whole.problem() is None:
        return whole, [f"config: {p}" for p in problems]
    for f in dataclasses.fields(ClusterConfig):
        if f.name not in obj:
            continue
        value = getattr(typed, f.name)
        candidate = dataclasses.replace(config, **{f.name: value})
        problem = candidate.problem()
        if problem is None:
            config = candidate
        elif value != getattr(config, f.name):
            problems.append(f"{problem}; keeping {getattr(config, f.name)!r}")
    return config, [f"config: {p}" for p in problems]


def encode_sync(sync: SyncState) -> bytes:
    return encode(sync)


def decode_sync(data: bytes, mod_revision: int = 0) -> SyncState:
    sync = decode(SyncState, data, mod_revision=mod_revision)
    for name in (sync.leader, *sync.standbys):
        names.check("member name", name)
    return sync


def encode_switchover(switchover: Switchover) -> bytes:
    return encode(switchover)


def decode_switchover(data: bytes) -> Switchover:
    switchover = decode(Switchover, data)
    for name in (switchover.leader, switchover.candidate):
        if name is not None:
            names.check("member name", name)
    return switchover


def encode_intent(intent: MemberIntent) -> bytes:
    return encode(intent)


def decode_intent(data: bytes) -> MemberIntent:
    return decode(MemberIntent, data)
