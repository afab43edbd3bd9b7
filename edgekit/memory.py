"""Peak memory of one pipeline step (Linux): reset the process's high-water mark, read it afterwards."""
from __future__ import annotations


def reset_peak() -> bool:
    """Reset VmHWM (writing 5 to /proc/self/clear_refs); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_mb() -> float | None:
    """The process's peak resident memory since the last reset_peak() (or start), in MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None
