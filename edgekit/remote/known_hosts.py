"""Read an OpenSSH known_hosts file as OpenSSH does: `@revoked` keys are never accepted, `@cert-authority` lines
(host certificates, which we do not verify) are passed over, and a line that cannot be parsed is skipped with a
warning naming it, instead of making the whole file unreadable."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

log = logging.getLogger("edgekit")


@dataclass
class KnownHosts:
    entries: list[HostKeyEntry] = field(default_factory=list)
    revoked: set[bytes] = field(default_factory=set)  # key blobs
    skipped: list[int] = field(default_factory=list)  # line numbers we could not read

    def is_revoked(self, key) -> bool:
        return key.asbytes() in self.revoked

    def install(self, keys: paramiko.HostKeys) -> None:
        """Add every trusted entry to a client's host keys (a revoked key is never trusted, even if listed)."""
        for e in self.entries:
            if e.key.asbytes() in self.revoked:
                continue
            for host in e.hostnames:
                keys.add(host, e.key.get_name(), e.key)


def _entry(text: str, lineno: int) -> HostKeyEntry | None:
    if len(text.split()) < 3:
        raise ValueError("expected: hosts key-type key")
    try:
        return HostKeyEntry.from_line(text, lineno)
    except (InvalidHostKey, paramiko.SSHException, ValueError, TypeError, IndexError, UnicodeError) as e:
        raise ValueError(_why(e)) from None


def _why(e: Exception) -> str:
    if isinstance(e, InvalidHostKey):
        return f"bad key data: {e.exc}"
    return str(e) or type(e).__name__


def load(path: Path) -> KnownHosts:
    result = KnownHosts()
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        marker = None
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
            line = line.strip()
        if marker == "@cert-authority":
            continue  # vouches for host certificates only; a plain host key never matches it
        if marker not in (None, "@revoked"):
            log.warning("known_hosts %s line %d: unknown marker %s, line skipped", path, n, marker)
            result.skipped.append(n)
            continue
        try:
            entry = _entry(line, n)
        except ValueError as e:
            log.warning("known_hosts %s line %d: cannot be read (%s), line skipped", path, n, e)
            result.skipped.append(n)
            continue
        if entry is None:  # a key type paramiko does not know: OpenSSH would not match it either
            continue
        if marker == "@revoked":
            result.revoked.add(entry.key.asbytes())
        else:
            result.entries.append(entry)
    return result
