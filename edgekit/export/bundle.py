"""`edgekit export`: one entry point for every target."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .common import resolve_source

TARGETS = ("android", "c-array", "linux")


def export(model=None, target: str = "linux", *, labels=None, mean=None, std=None, name=None, out=None,
           manifest=None, variant=None, max_bytes=None) -> dict:
    if target not in TARGETS:
        raise ConfigError(f"unknown target {target!r} (choose: {', '.join(TARGETS)})")
    src = resolve_source(model, manifest, variant, labels, name, max_bytes)
    out = Path(out or f"export-{src.name}-{target}")
    if target == "android":
        from .android import export_android
        result = export_android(src, out, mean, std)
    elif target == "c-array":
        from .carray import export_c_array
        result = export_c_array(src, out)
    else:
        from .linux import export_linux
        result = export_linux(src, out)
    return {"target": target, "name": src.name, "model": str(src.path), "out": str(out), **result}
