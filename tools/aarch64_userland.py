#!/usr/bin/env python3
"""A Raspberry Pi OS bookworm userland for x86 machines: Debian bookworm arm64 (Python 3.11.2, numpy 1.24.2) with
PyPI's aarch64 LiteRT wheels, run under qemu-user.  Built once and cached; reused across runs and test sessions.

    python tools/aarch64_userland.py                       # build (or reuse) it and print the board's `python`
    python tools/aarch64_userland.py --runtime tflite-runtime==2.14.0 --runtime ai-edge-litert==2.3.0

Everything comes from the registries at run time: the arm64 packages from Debian's mirror (`debootstrap --foreign`,
then `dpkg-deb -x`: nothing is configured or run as root inside), the runtimes with `pip download --platform`.
Needs Debian's `debootstrap` and `qemu-user-static` (`make sshd` installs them); no binfmt_misc registration.

The emulated CPU is the Pi 4's Cortex-A72 (`-cpu cortex-a72`), not qemu's default `max`: `max` advertises SME, and
XNNPACK in ai-edge-litert 2.1.6-2.3.0 (2.1.0 is fine) then picks SME int8 kernels that give wrong outputs under qemu
7.2 (argmax 4 instead of 7 on the digits model; `max,sme=off` and every real core model agree with x86). A Pi 4 has
no SME.

The userland's /proc/cpuinfo is a file of ours describing four Cortex-A72 cores (a Pi 4): qemu-user otherwise shows
the guest the host's x86 /proc/cpuinfo, on which the cpuinfo library inside ai-edge-litert >= 2.2 crashes
(SIGSEGV in cpuinfo_arm_linux_init) at Interpreter(); a real Pi's /proc/cpuinfo is ARM's.  The runner still reports
the board as emulated: it detects the emulator from the kernel, not from this file.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

SUITE = "bookworm"
PACKAGES = ("python3", "python3-numpy")
PYTHON = "usr/bin/python3.11"
DEFAULT_RUNTIMES = ("ai-edge-litert==2.3.0", "tflite-runtime==2.14.0")
# bookworm's glibc is 2.36: wheels tagged up to manylinux_2_36 load
WHEEL_PLATFORMS = ("manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_27_aarch64",
                   "manylinux_2_28_aarch64", "manylinux_2_31_aarch64", "manylinux_2_34_aarch64",
                   "manylinux_2_35_aarch64", "manylinux_2_36_aarch64")
QEMU = "qemu-aarch64-static"
MARKER = ".edgekit-userland"  # in every folder this tool builds: the only folders it ever removes
CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
    f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n" for i in range(4)
) + "Model\t\t: emulated aarch64 (qemu-user; this cpuinfo was written by edgekit's userland builder)\n"


class UserlandError(RuntimeError):
    pass


def cache_dir() -> Path:
    base = os.environ.get("EDGEKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "edgekit")
    return Path(base) / f"aarch64-{SUITE}"


def debian_mirror() -> str:
    """The Debian mirror apt already uses (deb822 or one-line sources), else deb.debian.org."""
    if os.environ.get("EDGEKIT_DEBIAN_MIRROR"):
        return os.environ["EDGEKIT_DEBIAN_MIRROR"]
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for url in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M):
            if "security" not in url:
                return url
    return "http://deb.debian.org/debian"


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None)
    if not path:
        raise UserlandError(f"{tool} not found: install Debian's {package} (make sshd does, as root)")
    return path


@contextmanager
def _locked(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # one builder at a time; the next one finds the work done
        yield


def _fresh(path: Path) -> Path:
    """An empty folder at `path`, removing a half-built one of ours (never anything without our marker)."""
    if path.exists():
        if not (path / MARKER).exists():
            raise UserlandError(f"{path} exists and was not made by this tool; remove it or set EDGEKIT_CACHE")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("built by edgekit tools/aarch64_userland.py\n")
    return path


def build_base(root: Path, log=print) -> Path:
    """Debian bookworm arm64 with Python and numpy, extracted (not configured), at root/base."""
    base = root / "base"
    if (base / ".complete").exists():
        return base
    debootstrap = _need("debootstrap", "debootstrap")
    work = _fresh(root / "base.partial")
    mirror = debian_mirror()
    log(f"userland: downloading Debian {SUITE} arm64 ({', '.join(PACKAGES)}) from {mirror} ...")
    proc = subprocess.run([debootstrap, "--foreign", "--arch=arm64", "--variant=minbase",
                           f"--include={','.join(PACKAGES)}", SUITE, str(work), mirror],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        raise UserlandError(f"debootstrap failed ({proc.returncode}): {' | '.join(tail)}")
    debs = sorted((work / "var/cache/apt/archives").glob("*.deb"))
    log(f"userland: extracting {len(debs)} packages ...")
    for deb in debs:  # debootstrap --foreign extracts only the essential ones; the rest wait for a second stage
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work)], check=True)
        deb.unlink()
    lib = work / "usr/lib/aarch64-linux-gnu"
    for name, sub in (("libblas.so.3", "blas"), ("liblapack.so.3", "lapack")):  # what postinst's alternatives do
        if not (lib / name).exists() and (lib / sub / name).exists():
            (lib / name).symlink_to(f"{sub}/{name}")
    (work / "proc").mkdir(exist_ok=True)
    (work / "proc/cpuinfo").write_text(CPUINFO)
    (work / ".complete").write_text("")
    work.rename(base)
    return base


def install_runtime(root: Path, spec: str, log=print) -> Path:
    """The aarch64 cp311 wheel of `spec` (e.g. ai-edge-litert==2.3.0) from PyPI, unpacked in its own folder."""
    name = re.sub(r"[^A-Za-z0-9.=_-]", "", spec).replace("==", "-")
    site = root / "runtimes" / name
    if (site / ".complete").exists():
        return site
    work = _fresh(root / "runtimes" / f"{name}.partial")
    log(f"userland: downloading the aarch64 wheel of {spec} ...")
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                "--python-version", "3.11", "--implementation", "cp", "-d", tmp, spec]
        for p in WHEEL_PLATFORMS:
            argv += ["--platform", p]
        proc = subprocess.run(argv, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("WARNING")][-1:]
            raise UserlandError(f"no aarch64 cp311 wheel of {spec} on the package index ({' '.join(tail)})")
        with zipfile.ZipFile(wheels[0]) as z:
            z.extractall(work)
        for so in work.rglob("*.so*"):  # zip extraction drops the execute bits
            so.chmod(0o755)
    (work / ".complete").write_text(wheels[0].name + "\n")
    work.rename(site)
    return site


def python_for(runtimes: tuple[str, ...] | list[str] = DEFAULT_RUNTIMES, root: Path | None = None,
               log=print, cpu: str = "cortex-a72") -> Path:
    """A `python` executable (a shell wrapper) that runs the userland's Python 3.11 under qemu with `runtimes` on its
    path, as if pip-installed there, on an emulated `cpu` (qemu's name; cortex-a76 for a Pi 5); built and cached on
    first use."""
    qemu, q = _need(QEMU, "qemu-user-static"), shlex.quote
    root = Path(root or cache_dir())
    with _locked(root):
        base = build_base(root, log)
        sites = [install_runtime(root, spec, log) for spec in runtimes]
        tag = hashlib.sha256("\n".join([cpu, *runtimes]).encode()).hexdigest()[:10]
        wrapper = root / "bin" / f"python-{tag}"
        wrapper.parent.mkdir(exist_ok=True)
        text = (f"#!/bin/sh\n# aarch64 Python 3.11 of Debian bookworm under qemu-user ({cpu}); runtimes: "
                f"{', '.join(runtimes) or 'none'}\n"
                f"PYTHONPATH={q(':'.join(str(s) for s in sites))} exec {q(qemu)} -cpu {q(cpu)} -L {q(str(base))} "
                f"{q(str(base / PYTHON))} \"$@\"\n")
        if not wrapper.exists() or wrapper.read_text() != text:
            tmp = wrapper.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.chmod(0o755)
            tmp.replace(wrapper)
    return wrapper


def main() -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtime", action="append", help="pip requirement of a runtime to install (repeatable; default: "
                    + " and ".join(DEFAULT_RUNTIMES) + ")")
    ap.add_argument("--cache", help=f"cache folder (default: {cache_dir()})")
    ap.add_argument("--cpu", default="cortex-a72", help="qemu CPU model (default: cortex-a72, a Pi 4; cortex-a76 for "
                    "a Pi 5)")
    args = ap.parse_args()
    try:
        py = python_for(tuple(args.runtime or DEFAULT_RUNTIMES), Path(args.cache) if args.cache else None,
                        log=lambda m: print(m, file=sys.stderr), cpu=args.cpu)
    except UserlandError as e:
        print(f"aarch64_userland: error: {e}", file=sys.stderr)
        return 2
    print(py)
    return 0


if __name__ == "__main__":
    sys.exit(main())
