"""Memory figures from /proc (Linux): a step's peak (reset the high-water mark, read it afterwards), another
process's resident memory, the memory available.  None where /proc does not say."""
from __future__ import annotations


def reset_peak() -> bool:
    """Reset VmHWM (writing 5 to /proc/self/clear_refs); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _kb_field(path: str, field: str) -> float | None:
    """A `Field:   123 kB` line of a /proc file, in MB."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_mb() -> float | None:
    """The process's peak resident memory since the last reset_peak() (or start), in MB."""
    return _kb_field("/proc/self/status", "VmHWM")


def rss_mb(pid: int) -> float | None:
    """Resident memory of process `pid` now, in MB."""
    return _kb_field(f"/proc/{pid}/status", "VmRSS")


def available_mb() -> float | None:
    """Memory available for new work on this machine, in MB."""
    return _kb_field("/proc/meminfo", "MemAvailable")


def env_number(name: str, default: float | None) -> float | None:
    """A positive number from the environment (`default` when unset); anything else is a one-line ConfigError."""
    import os
    raw = os.environ.get(name)
    if raw is None:
        return default
    from .errors import ConfigError
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} is {raw!r}; give a number") from None
    if value <= 0:
        raise ConfigError(f"{name} is {raw!r}; give a positive number")
    return value


def allowed_mb() -> float | None:
    """What this run may use in total, in MB: EDGEKIT_MEMORY_MB when set (a shared machine, a container whose /proc
    shows the host's memory), else None (no cap beyond what the machine has)."""
    return env_number("EDGEKIT_MEMORY_MB", None)
