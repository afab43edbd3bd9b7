"""A tiny validator for our YAML data files: every problem names the file, the key and what is allowed."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class Field:
    """One key of a mapping: its type, whether it is required, allowed values or a nested schema."""

    kind: type | tuple
    required: bool = False
    choices: tuple = ()
    nested: dict | None = None  # schema of a nested mapping (or of each list item when item=True)
    item: type | None = None  # type of list items
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False


def _type_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "text", int: "integer", float: "number", bool: "true/false", list: "list", dict: "mapping"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def validate(data: Any, schema: dict[str, Field], source: str, prefix: str = "") -> list[str]:
    """Return every problem found (empty list when valid)."""
    problems: list[str] = []
    if not isinstance(data, dict):
        return [f"{source}: {prefix or 'top level'} must be a mapping, got {type(data).__name__}"]
    for key in data:
        if key not in schema:
            allowed = ", ".join(sorted(schema))
            problems.append(f"{source}: unknown key '{prefix}{key}' (allowed: {allowed})")
    for key, spec in schema.items():
        where = f"{prefix}{key}"
        if key not in data:
            if spec.required:
                problems.append(f"{source}: missing required key '{where}'")
            continue
        value = data[key]
        if value is None and spec.nullable:
            continue
        kind = spec.kind
        if kind is float:
            kind = (int, float)
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            problems.append(f"{source}: '{where}' must be {_type_name(spec.kind)}, got {value!r}")
            continue
        if not isinstance(value, kind):
            problems.append(f"{source}: '{where}' must be {_type_name(spec.kind)}, got {value!r}")
            continue
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and spec.item is not None:
            for i, v in enumerate(value):
                ok_kind = (int, float) if spec.item is float else spec.item
                if spec.item is dict and spec.nested:
                    problems += validate(v, spec.nested, source, f"{where}[{i}].")
                elif not isinstance(v, ok_kind) or isinstance(v, bool) and spec.item is not bool:
                    problems.append(f"{source}: '{where}[{i}]' must be {_type_name(spec.item)}, got {v!r}")
        if spec.choices:
            for v in values:
                if not isinstance(v, dict) and v not in spec.choices:
                    allowed = ", ".join(str(c) for c in spec.choices)
                    problems.append(f"{source}: '{where}' has {v!r}; allowed: {allowed}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if spec.minimum is not None and value < spec.minimum:
                problems.append(f"{source}: '{where}' must be >= {spec.minimum}, got {value}")
            if spec.maximum is not None and value > spec.maximum:
                problems.append(f"{source}: '{where}' must be <= {spec.maximum}, got {value}")
        if isinstance(value, dict) and spec.nested:
            problems += validate(value, spec.nested, source, f"{where}.")
    return problems


def read_yaml(path, missing: str | None = None) -> Any:
    """Parse a YAML file; every failure is a one-line ConfigError naming the file."""
    from pathlib import Path

    import yaml
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(missing or f"{path} does not exist") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e


def check(data: Any, schema: dict[str, Field], source: str) -> None:
    """Raise one ConfigError listing every problem."""
    problems = validate(data, schema, source)
    if problems:
        raise ConfigError("; ".join(problems))
