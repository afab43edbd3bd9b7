"""Open the right connection for a board."""
from __future__ import annotations

from .base import Connection
from .inventory import Board, resolve_ssh
from .local import LocalConnection


def connect(board: Board, known_hosts=None, accept_new_host: bool = False, ask_password: bool = False,
            timeout: float = 10.0) -> Connection:
    if board.is_local:
        return LocalConnection(board.name)
    from .ssh import SSHConnection  # paramiko is only imported for SSH boards
    b = resolve_ssh(board)
    return SSHConnection(b.name, b.host or "localhost", b.port or 22, b.user, b.identity, known_hosts=known_hosts,
                         accept_new_host=accept_new_host, ask_password=ask_password, timeout=timeout)
