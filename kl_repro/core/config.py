"""Frozen, validated configuration dataclasses shared by every module.

Every experiment knob in ``kl_repro`` lives in a ``@dataclass(frozen=True)`` that
inherits from :class:`Config`.  Defaults are the papers' settings; every deviation
is a named field.  Construction validates field types (from the annotations) and
then calls the subclass's ``check()`` for ranges and cross-field rules, so a bad
value fails with a :class:`ConfigError` *before* any computation starts.

Example
-------
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Demo(Config):
...     d: int = 8
...     def check(self):
...         require(self.d >= 1, f"d must be >= 1, got {self.d}")
>>> Demo(d=3).d
3
>>> Demo(d=0)
Traceback (most recent call last):
...
kl_repro.core.config.ConfigError: Demo: d must be >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from typing import Any, Literal, Mapping, TypeVar, get_args, get_origin, get_type_hints

__all__ = ["ConfigError", "Config", "require", "from_dict", "to_dict", "config_hash", "override"]

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A configuration or input value is invalid; raised before any compute."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def _type_ok(value: Any, tp: Any) -> bool:
    """Whether ``value`` conforms to the annotation ``tp`` (the subset configs use)."""
    if tp is Any:
        return True
    origin = get_origin(tp)
    if origin is Literal:
        return value in get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in get_args(tp))
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_type_ok(v, args[0]) for v in value)
        return len(args) == len(value) and all(_type_ok(v, a) for v, a in zip(value, args))
    if tp is type(None):
        return value is None
    if tp is float:  # an int is an acceptable float; a bool is not
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any) -> Any:
    """Lossless coercions for values read from JSON/TOML/papermill: lists to tuples, int to float."""
    origin = get_origin(tp)
    if isinstance(value, list):
        value = tuple(value)
    if origin is tuple and isinstance(value, tuple):
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(args) == len(value):
            return tuple(_coerce(v, a) for v, a in zip(value, args))
    if origin in (typing.Union, types.UnionType):
        for a in get_args(tp):
            if a is not type(None) and value is not None:
                c = _coerce(value, a)
                if _type_ok(c, a):
                    return c
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class: type-checks fields on construction, then runs :meth:`check`."""

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        name = type(self).__name__
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            tp = hints.get(f.name, Any)
            coerced = _coerce(value, tp)
            if coerced is not value:
                object.__setattr__(self, f.name, coerced)
            if not _type_ok(coerced, tp):
                raise ConfigError(
                    f"{name}: field '{f.name}' must be {_describe(tp)}, got {value!r} ({type(value).__name__})"
                )
        try:
            self.check()
        except ConfigError as e:
            msg = str(e)
            raise ConfigError(msg if msg.startswith(name + ":") else f"{name}: {msg}") from None

    def check(self) -> None:
        """Range and cross-field rules; subclasses override and call :func:`require`."""

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` applied (validated again)."""
        return override(self, changes)


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain-JSON view of a config (tuples become lists, nested configs dicts)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Build ``cls`` from a mapping, refusing unknown keys with the list of valid ones."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"{cls.__name__}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys are: {', '.join(names)}"
        )
    hints = get_type_hints(cls)
    kwargs = {}
    for k, v in data.items():
        tp = hints.get(k)
        if dataclasses.is_dataclass(tp) and isinstance(v, Mapping):
            v = from_dict(tp, v)
        kwargs[k] = v
    return cls(**kwargs)


def override(cfg: C, changes: Mapping[str, Any]) -> C:
    """A copy of ``cfg`` with ``changes`` (unknown keys refused)."""
    merged = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    unknown = sorted(set(changes) - set(merged))
    if unknown:
        raise ConfigError(
            f"{type(cfg).__name__}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys are: {', '.join(merged)}"
        )
    merged.update(changes)
    return type(cfg)(**merged)


def config_hash(cfg: Config | Mapping[str, Any], length: int = 10) -> str:
    """Stable content hash of a config (canonical JSON, SHA-256), used to key results on disk."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def parse_set_option(text: str) -> tuple[str, Any]:
    """Parse a ``key=value`` command-line override; the value is read as JSON when it parses, else a string."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value
