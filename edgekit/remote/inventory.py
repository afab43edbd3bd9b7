"""The board inventory: boards.yaml, ad-hoc `--host user@host[:port]`, ~/.ssh/config, and the `local` board."""
from __future__ import annotations

import re
import sys
from dataclasses import asdict, dataclass
from typing import Literal
from pathlib import Path

from ..errors import ConfigError
from ..profiles import load_profile
from ..record import parse, rule
from ..schema import read_yaml

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _name_check(name: str) -> str | None:
    if not _NAME.match(name) or name == "local":
        return "must be letters, digits, '.', '_', '-' and not 'local'"
    return None


@dataclass(frozen=True)
class Board:
    """One board, as boards.yaml declares it."""
    name: str = rule(check=_name_check)
    profile: str = rule()
    host: str | None = None  # None: the local machine (or an adb board)
    port: int | None = rule(None, minimum=1, maximum=65535)
    user: str | None = None
    identity: str | None = None
    python: str = "python3"
    workdir: str | None = None
    runtime: Literal["auto", "ai_edge_litert", "tflite_runtime", "tensorflow"] = "auto"
    transport: Literal["ssh", "adb"] = "ssh"
    serial: str | None = None
    benchmark_binary: str | None = None

    @property
    def is_local(self) -> bool:
        return self.host is None and self.transport != "adb"

    def public(self) -> dict:
        """What may be shown or stored (no key paths)."""
        d = asdict(self)
        d.pop("identity")
        return d


@dataclass(frozen=True)
class BoardsFile:
    boards: tuple[Board, ...]


def local_board() -> Board:
    return Board(name="local", profile="local", python=sys.executable)


def _ssh_config(host: str | None) -> dict:
    if not host:
        return {}
    path = Path.home() / ".ssh" / "config"
    if not path.exists():
        return {}
    import paramiko
    try:
        return paramiko.SSHConfig.from_path(str(path)).lookup(host)
    except Exception as e:  # a broken config should say so, not crash
        raise ConfigError(f"{path}: cannot parse ({e})") from e


def resolve_ssh(board: Board) -> Board:
    """Fill host name, user, port and identity from ~/.ssh/config (explicit board fields win)."""
    cfg = _ssh_config(board.host)
    ident = board.identity or (cfg.get("identityfile") or [None])[0]
    return Board(**{**asdict(board), "host": cfg.get("hostname", board.host),
                    "port": board.port or int(cfg.get("port", 22)), "user": board.user or cfg.get("user"),
                    "identity": str(Path(ident).expanduser()) if ident else None})


def load_boards(path: str | Path) -> list[Board]:
    path = Path(path)
    data = read_yaml(path, f"boards file {path} does not exist (write one, or use --host / --board local)")
    boards = list(parse(BoardsFile, data, path.name).boards)
    seen: set[str] = set()
    for b in boards:
        if b.name in seen:
            raise ConfigError(f"{path.name}: board name {b.name!r} appears twice")
        seen.add(b.name)
        load_profile(b.profile)
        if b.transport == "ssh" and not b.host:
            raise ConfigError(f"{path.name}: board {b.name!r} needs 'host' (or transport: adb with 'serial')")
        if b.transport == "adb" and not (b.serial and b.benchmark_binary):
            raise ConfigError(f"{path.name}: adb board {b.name!r} needs 'serial' and 'benchmark_binary'")
    return boards


def parse_host(spec: str, profile: str, identity: str | None = None, python: str | None = None) -> Board:
    """`user@host[:port]` or an ~/.ssh/config alias."""
    m = re.fullmatch(r"(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:@\s]+)(?::(?P<port>\d+))?", spec)
    if not m:
        raise ConfigError(f"--host {spec!r}: expected user@host[:port]")
    load_profile(profile)
    host = m.group("host").strip("[]")
    return Board(name=host if _NAME.match(host) else "adhoc", host=host, profile=profile,
                 port=int(m.group("port")) if m.group("port") else None, user=m.group("user"),
                 identity=identity, python=python or "python3")


def select_boards(names: list[str], all_boards: bool, boards_file: str | Path | None) -> list[Board]:
    path = Path(boards_file) if boards_file else Path("boards.yaml")
    inventory = load_boards(path) if (boards_file or path.exists()) and (all_boards or set(names) - {"local"}) \
        else []
    if all_boards:
        return inventory or [local_board()]
    by_name = {b.name: b for b in inventory}
    chosen = []
    for n in names:
        if n == "local":
            chosen.append(local_board())
        elif n in by_name:
            chosen.append(by_name[n])
        else:
            known = ", ".join(["local", *by_name])
            raise ConfigError(f"unknown board '{n}' (known: {known}; boards come from {path})")
    return chosen
