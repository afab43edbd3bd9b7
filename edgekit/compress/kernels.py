"""The channel granularity of a CPU's int8 kernels.

XNNPACK's int8 convolution kernels compute output channels in tiles (and on Intel AMX, input channels too): a
layer with 90 channels costs what 96 or 128 would.  Filter pruning that ignores the tile makes models smaller
but not faster, so it keeps channel counts at multiples of the target's tile.  `tools/bench_channels.py`
measures the staircase on this machine."""
from __future__ import annotations

import platform
from pathlib import Path

# int8 kernel tile by CPU feature, most specific first (XNNPACK's qs8 GEMM micro-kernels)
_X86 = (("amx_int8", 64), ("avx512_vnni", 16), ("avx512bw", 16), ("avx2", 8))
_ARM = (("asimddp", 16),)


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The feature flags of this CPU from /proc/cpuinfo (x86 'flags', ARM 'Features'); empty if unknown."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return set()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def host_channel_multiple(flags: set[str] | None = None, machine: str | None = None) -> int:
    """The int8 channel tile of this machine's CPU: 64 with AMX, 16 with AVX-512 or ARM dot-product, else 8."""
    flags = cpu_flags() if flags is None else flags
    machine = (machine or platform.machine()).lower()
    table = _ARM if machine in ("aarch64", "arm64") or machine.startswith("arm") else _X86
    return next((tile for flag, tile in table if flag in flags), 8)


def resolve(value) -> int:
    """A profile's `channel_multiple`: an integer, or 'auto' for this machine's CPU."""
    if value in (None, "auto"):
        return host_channel_multiple()
    return int(value)
