"""Building typed configuration from parsed YAML or JSON: a dataclass per section, every value checked
against its field's type as it is read, one line per error that names the key and never shows a
secret (pgha.config's node file, the cluster config from the DCS and PATCH /config, the repository
host's file)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

from pgha import redact
from pgha.core import names
from pgha.core.model import PROFILES, ClusterConfig


class ConfigError(Exception):
    """A configuration problem; ``str()`` is one line naming the key and the fix."""


T = TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if origin in (tuple, list):
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin in (Mapping, dict):
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        # An exact type match wins (100 stays an int in a str | int union).
        for arg in args:
            if isinstance(arg, type) and type(value) is arg:
                return value
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1 and isinstance(value, dict):
            # An optional section (X | None) given as a mapping: its own error names the key.
            raise errors[0]
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {_got(value, path)}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{path}: must be {_type_name(tp)}, got {_got(value, path)}")
    if origin in (tuple, list):
        (item_type, *_) = get_args(tp)
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {_got(value, path)}")
        return tuple(_convert(item_type, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_got(value, path)}")
        _key_t, val_t = get_args(tp)
        for k in value:
            if not isinstance(k, str | int | float) or isinstance(k, bool) or names.CONTROL.search(str(k)):
                raise ConfigError(f"{path}: key {names.shown(k)} is not allowed; use plain names as keys")
        return {str(k): _convert(val_t, v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            if names.CONTROL.search(value):
                raise ConfigError(f"{path}: holds a control character (newline, NUL…); write the value on "
                                  "one line without them")
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    elif tp is Any:
        return value
    raise ConfigError(f"{path}: expected {_type_name(tp)}, got {_got(value, path)}")


def _got(value: Any, path: str) -> str:
    """A wrong value as an error line may show it: never a secret's, nor a whole mapping or list
    (they may hold secrets, and an alias bomb repeats them without end)."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple | set):
        return "a list"
    if redact.secret_key(path.rsplit(".", 1)[-1]) or path.endswith("auth"):  # auth: a password by mistake?
        return f"a {type(value).__name__} (not shown: a secret)"
    if isinstance(value, str | int | float | bool) or value is None:
        return names.shown(value)
    return f"a {type(value).__name__}"


def build(cls: type[T], data: Any, path: str = "") -> T:
    """Map ``data`` (parsed YAML/JSON) onto dataclass ``cls``, validating as it goes."""
    where = path or "the configuration"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {_got(data, path)}")
    if cls is ClusterConfig:
        data = with_profile(data, path)
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            shown = str(key) if isinstance(key, str) and not names.CONTROL.search(key) else names.shown(key)
            raise ConfigError(f"{_join(path, shown)}: unknown key; remove it or use one of: {known}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], key_path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key_path}: required key is missing; add it to the file")
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return typing.cast(T, obj)


def with_profile(data: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Cluster settings with the timing keys they leave out taken from their ``profile``."""
    profile = data.get("profile", "default")
    if not isinstance(profile, str) or profile not in PROFILES:
        choices = " or ".join(repr(p) for p in PROFILES)
        raise ConfigError(f"{_join(path, 'profile')}: must be {choices}, got {_got(profile, 'profile')}")
    return {**PROFILES[profile], **data}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
