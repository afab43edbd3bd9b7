"""Records declared once.  A boundary record (device profile, recipe step, board, sweep grid, ...) is one frozen
dataclass: its fields are the file's keys, their annotations the allowed types (`Literal[...]` lists the allowed
values, a nested dataclass a nested mapping, `tuple[X, ...]` a list), their defaults the defaults, and `rule(...)`
adds bounds or a check of its own.  `parse` validates a mapping against it and builds it; every problem names the
file, the key and what is allowed, all of them in one ConfigError.  A record with an internal field `given` keeps
the mapping as it was written there (recipe steps: cache keys and manifests use what the user wrote)."""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from .errors import ConfigError

T = TypeVar("T")


def rule(default: Any = MISSING, *, factory: Any = MISSING, minimum: float | None = None,
         maximum: float | None = None, check: Callable[[Any], str | None] | None = None,
         internal: bool = False) -> Any:
    """A field with bounds (numbers, or each number of a list), a `check(value) -> problem or None` of its own, or
    `internal=True` for a field that is not read from the file (set by the loader)."""
    meta = {"minimum": minimum, "maximum": maximum, "check": check, "internal": internal}
    if factory is not MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


_NAMES = {str: "text", int: "integer", float: "number", bool: "true/false", dict: "mapping"}


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(hint) if a is not type(None))
    if origin in (tuple, list):
        return "list"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "mapping"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def _convert(value: Any, hint: Any, where: str, source: str) -> tuple[Any, list[str]]:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None, []
        alts = [a for a in args if a is not type(None)]
        if len(alts) == 1:  # X | None: X's own message
            return _convert(value, alts[0], where, source)
        for alt in alts:
            got, problems = _convert(value, alt, where, source)
            if not problems:
                return got, []
        return None, [f"{source}: '{where}' must be {_describe(hint)}, got {value!r}"]
    if origin is Literal:
        allowed = get_args(hint)
        if value in allowed and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in allowed)):
            return value, []
        return None, [f"{source}: '{where}' has {value!r}; allowed: {', '.join(str(a) for a in allowed)}"]
    if origin in (tuple, list):
        if not isinstance(value, list):
            return None, [f"{source}: '{where}' must be a list, got {value!r}"]
        item = get_args(hint)[0]
        out, problems = [], []
        for i, v in enumerate(value):
            got, p = _convert(v, item, f"{where}[{i}]", source)
            out.append(got)
            problems += p
        return (tuple(out) if origin is tuple else out), problems
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            return None, [f"{source}: '{where}' must be a mapping, got {value!r}"]
        return dict(value), []
    if dataclasses.is_dataclass(hint):
        return _parse(typing.cast(type, hint), value, source, f"{where}.")
    if hint is Any:
        return value, []
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return (float(value), []) if ok else (None, [f"{source}: '{where}' must be a number, got {value!r}"])
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return (value, []) if ok else (None, [f"{source}: '{where}' must be an integer, got {value!r}"])
    if isinstance(hint, type) and isinstance(value, hint):
        return value, []
    return None, [f"{source}: '{where}' must be {_describe(hint)}, got {value!r}"]


def _bounds(value: Any, meta: typing.Mapping[str, Any], where: str, source: str) -> list[str]:
    problems = []
    for v in (value if isinstance(value, (tuple, list)) else (value,)):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if meta.get("minimum") is not None and v < meta["minimum"]:
                problems.append(f"{source}: '{where}' must be >= {meta['minimum']}, got {v}")
            if meta.get("maximum") is not None and v > meta["maximum"]:
                problems.append(f"{source}: '{where}' must be <= {meta['maximum']}, got {v}")
    if not problems and meta.get("check") and value is not None:
        why = meta["check"](value)
        if why:
            problems.append(f"{source}: '{where}' {why}")
    return problems


def keys(cls: type) -> list[str]:
    """The keys a file may use for this record."""
    return [f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def _parse(cls: type, data: Any, source: str, prefix: str = "") -> tuple[Any, list[str]]:
    if not isinstance(data, dict):
        return None, [f"{source}: {prefix.rstrip('.') or 'top level'} must be a mapping, got {type(data).__name__}"]
    allowed = keys(cls)
    problems = [f"{source}: unknown key '{prefix}{k}' (allowed: {', '.join(sorted(allowed))})"
                for k in data if k not in allowed]
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        where = f"{prefix}{f.name}"
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                problems.append(f"{source}: missing required key '{where}'")
            continue
        got, p = _convert(data[f.name], hints[f.name], where, source)
        p = p or _bounds(got, f.metadata, where, source)
        problems += p
        values[f.name] = got
    if problems:
        return None, problems
    if any(f.name == "given" and f.metadata.get("internal") for f in dataclasses.fields(cls)):
        values["given"] = dict(data)
    try:
        return cls(**values), []
    except ConfigError as e:  # a record's own check across its fields (__post_init__)
        return None, [f"{source}: {e}"]


def parse(cls: type[T], data: Any, where: str, prefix: str = "", **internal: Any) -> T:
    """Validate `data` (a parsed YAML mapping, from file `where`) against record `cls` and build it; `internal`
    fields are set as given; `prefix` (e.g. "optimize.prune.") is put before key names in messages.  Raises one
    ConfigError listing every problem."""
    record, problems = _parse(cls, data, where, prefix)
    if problems:
        raise ConfigError("; ".join(problems))
    return dataclasses.replace(record, **internal) if internal else record


def to_dict(record: Any) -> dict:
    """The record as its file would spell it (internal fields left out)."""
    out = {}
    for f in dataclasses.fields(record):
        if f.metadata.get("internal"):
            continue
        v = getattr(record, f.name)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = [to_dict(x) if dataclasses.is_dataclass(x) and not isinstance(x, type) else x for x in v]
        out[f.name] = v
    return out
