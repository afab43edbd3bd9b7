"""An output folder edgekit may write: built in a hidden sibling, then moved in, touching only edgekit's own files.

edgekit deletes only what it wrote: a folder that is the current folder or one of its parents is refused; a folder
holding files edgekit did not write is refused unless `overwrite` is asked, and even then only the files the old
manifest lists (edgekit's own) are replaced or removed; everything else stays.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .errors import ConfigError

MARKER = ".edgekit-partial"  # proves a staging folder is ours before it is ever removed
MANIFEST = "manifest.json"


def owned_files(out: Path) -> set[str] | None:
    """Names of the files edgekit wrote into `out` according to its manifest (None: no readable manifest)."""
    try:
        data = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("variants"), list):
        return None
    names = set(data.get("files") or [])
    for v in data["variants"]:  # manifests written before `files` existed
        if isinstance(v, dict) and isinstance(v.get("path"), str):
            names.add(v["path"])
            stem = Path(v["path"]).stem
            names.update(p.name for p in out.glob(f"{stem}_edgetpu*"))
    names.add(MANIFEST)
    return {n for n in names if _plain_name(n)}


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def check_out(out: str | Path, overwrite: bool = False) -> Path:
    """Refuse an output folder edgekit could damage; returns it resolved."""
    given = Path(out)
    path = given.expanduser().resolve()
    cwd = Path.cwd().resolve()
    if path == cwd or path in cwd.parents:
        raise ConfigError(f"output folder {given} is the current folder or one of its parents; give a folder of its "
                          f"own, e.g. --out edgekit-out")
    if path == Path.home().resolve() or path == Path(path.anchor):
        raise ConfigError(f"output folder {given} is your home or the root folder; give a folder of its own")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output {given} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        owned = owned_files(path)
        if owned is None:
            raise ConfigError(f"output folder {given} is not empty and holds no edgekit manifest; choose another --out")
        foreign = sorted(p.name for p in path.iterdir() if p.name not in owned or p.is_symlink() or p.is_dir())
        if foreign and not overwrite:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ConfigError(f"output folder {given} holds files edgekit did not write ({shown}); choose another "
                              f"--out, or pass --overwrite to replace only edgekit's own files and keep the rest")
    return path


def _ours(folder: Path) -> bool:
    return not folder.is_symlink() and (folder / MARKER).is_file()


def interrupted(out: Path) -> Path:
    """Where the finished variants of a run that did not end are kept: `.NAME.interrupted` beside `out`."""
    return out.parent / f".{out.name}.interrupted"


def keep_interrupted(work: Path, out: Path) -> Path | None:
    """A staging folder whose run did not end becomes `.NAME.interrupted` when it holds finished variants (its
    manifest is rewritten after each one), so nothing built is lost; otherwise it is removed.  Returns the kept
    folder."""
    if not _ours(work):
        return None
    if not (work / MANIFEST).is_file():
        shutil.rmtree(work, ignore_errors=True)
        return None
    kept = interrupted(out)
    if kept.exists() or kept.is_symlink():
        if not _ours(kept):
            return None  # not ours: leave both as they are
        shutil.rmtree(kept)
    work.rename(kept)
    return kept


def staging(out: Path) -> Path:
    """A fresh hidden sibling `.NAME.partial` to build in.  An old one (a run killed before it could clean up,
    e.g. by the kernel's out-of-memory killer) is kept as `.NAME.interrupted` if it holds finished variants, and
    removed otherwise; either only if it is ours."""
    work = out.parent / f".{out.name}.partial"
    if work.exists() or work.is_symlink():
        if not _ours(work):
            raise ConfigError(f"{work} exists and was not made by edgekit; move it away")
        keep_interrupted(work, out)
        if work.exists():
            shutil.rmtree(work)
    kept = interrupted(out)
    if (kept.exists() or kept.is_symlink()) and not _ours(kept):
        raise ConfigError(f"{kept} exists and was not made by edgekit; move it away")
    work.mkdir(parents=True)
    (work / MARKER).write_text("edgekit builds here; removed when done\n")
    return work


def written(work: Path) -> list[str]:
    """What edgekit wrote into the staging folder (the manifest lists these as its own)."""
    return sorted(p.name for p in work.iterdir() if p.name != MARKER)


def discard(work: Path) -> None:
    if _ours(work):
        shutil.rmtree(work, ignore_errors=True)


def install(work: Path, out: Path) -> None:
    """Move the staging folder's files into `out`.  In an existing folder only edgekit's own old files are
    replaced or removed; the manifest goes in last."""
    (work / MARKER).unlink()
    if not out.exists():
        work.rename(out)
        return
    old = owned_files(out) or set()
    new = written(work)
    for name in sorted(new, key=lambda n: n == MANIFEST):
        os.replace(work / name, out / name)
    for name in old - set(new):
        f = out / name
        if f.is_file() and not f.is_symlink():
            f.unlink()
    work.rmdir()
