"""Reading our YAML data files: every failure is one line naming the file (record.py validates what they say)."""
from __future__ import annotations

from typing import Any

from .errors import ConfigError


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
