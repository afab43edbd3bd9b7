#!/usr/bin/env python3
"""edgekit board runner: time one .tflite model on this machine and print one JSON document.

Self-contained on purpose: it is copied to boards and run with their Python (>= 3.7) with only numpy and
whichever of ai_edge_litert, tflite_runtime, tensorflow.lite is installed. Do not import edgekit here.
Exit codes: 0 measured, 3 could not measure (the JSON says why), 2 bad arguments.

`--batch JSON` (a list of argument lists, one per model) measures many models in one start-up: the runtime is
imported once, each model runs in a forked child (its own peak memory, a crash or hang stays its own, killed after
`--job-timeout` seconds), and one JSON line per model is printed, with "job": its index, as soon as it is done.
With the full `tensorflow` package as the runtime the models run one after another in the runner itself
(TensorFlow's threads make fork unsafe): no per-model memory or time limit there.
"""
import argparse
import glob
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import time

RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")
DELEGATE_LIBS = {"edgetpu": "libedgetpu.so.1", "gpu": "libtensorflowlite_gpu_delegate.so"}
LIB_DIRS = ("/usr/lib", "/usr/lib64", "/usr/local/lib", "/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/arm-linux-gnueabihf")


class Failure(Exception):
    pass


def _read(path, default=None):
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, ValueError):
        return default


def _cmd(argv, timeout=5):
    try:
        out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=timeout)
        return out.stdout.decode("utf-8", "replace").strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# EDGEKIT_THERMAL_GLOB exists for tests on machines without thermal sensors; it wins over the profile's zones.
THERMAL_GLOB = os.environ.get("EDGEKIT_THERMAL_GLOB", "/sys/class/thermal/thermal_zone*")
# What the device profile says (--thermal-zone, --throttle-probe); None: every zone / every probe there is.
SETTINGS = {"zones": None, "throttle_probe": None}


def _zones():
    if os.environ.get("EDGEKIT_THERMAL_GLOB") or not SETTINGS["zones"]:
        return sorted(glob.glob(THERMAL_GLOB))
    out = []
    for z in SETTINGS["zones"]:  # a profile names zone folders or their temp files
        out += sorted(glob.glob(os.path.dirname(z) if z.endswith("/temp") else z))
    return out


def temperatures():
    temps = {}
    for zone in _zones():
        raw = _read(os.path.join(zone, "temp"))
        if raw and raw.lstrip("-").isdigit():
            name = _read(os.path.join(zone, "type"), os.path.basename(zone))
            temps[name + ":" + os.path.basename(zone)] = int(raw) / 1000.0
    return temps


def throttled_bits():
    """Raspberry Pi firmware throttling flags (None where vcgencmd does not exist or the profile says otherwise)."""
    if SETTINGS["throttle_probe"] not in (None, "vcgencmd"):
        return None
    out = _cmd(["vcgencmd", "get_throttled"])
    if out and "=" in out:
        try:
            return int(out.split("=", 1)[1], 16)
        except ValueError:
            return None
    return None


ARCH_FAMILY = {"x86_64": "x86", "amd64": "x86", "i386": "x86", "i686": "x86", "aarch64": "arm", "arm64": "arm",
               "armv7l": "arm", "armv8l": "arm", "armv6l": "arm"}


def emulation():
    """How this Python is emulated, or None when it runs on its own CPU.  User-mode emulators (qemu-user, also what
    binfmt_misc starts) change what uname reports but not the kernel: its architecture (`kernel.arch` sysctl) and the
    name of the process it runs are the host's."""
    machine = platform.machine()
    kernel_arch = _read("/proc/sys/kernel/arch")
    name = None
    for line in (_read("/proc/self/status", "") or "").splitlines():
        if line.startswith("Name:"):
            name = line.split(":", 1)[1].strip()
    family = ARCH_FAMILY.get(machine, machine)
    if kernel_arch and ARCH_FAMILY.get(kernel_arch, kernel_arch) != family:
        return "%s userland on a %s kernel (%s)" % (machine, kernel_arch,
                                                    name if name and name.startswith("qemu") else "user-mode emulator")
    if name and name.startswith("qemu-"):
        return "%s userland run by %s" % (machine, name)
    return None


def os_release():
    fields = {}
    for line in (_read("/etc/os-release", "") or "").splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            fields[key.strip()] = value.strip().strip('"')
    return fields.get("PRETTY_NAME") or fields.get("NAME")


def fingerprint(runtime=None):
    cpu = None
    for line in (_read("/proc/cpuinfo", "") or "").splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("model name", "model", "hardware") and ":" in line:
            cpu = line.split(":", 1)[1].strip()
            if key == "model name":
                break
    mem_kb = None
    for line in (_read("/proc/meminfo", "") or "").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    cpufreq = "/sys/devices/system/cpu/cpu0/cpufreq/"
    freq = _read(cpufreq + "scaling_cur_freq")
    try:
        import numpy
        numpy_version = numpy.__version__
    except ImportError:
        numpy_version = None
    fp = {
        "hostname": socket.gethostname(), "kernel": platform.release(), "machine": platform.machine(),
        "cpu_model": cpu, "cpu_count": os.cpu_count(), "mem_total_kb": mem_kb,
        "governor": _read(cpufreq + "scaling_governor"), "cpu_freq_khz": int(freq) if freq and freq.isdigit() else None,
        "temperatures_c": temperatures(), "throttled_bits": throttled_bits(),
        "jetson_power_mode": _cmd(["nvpmodel", "-q"]) if SETTINGS["throttle_probe"] in (None, "jetson_nvpmodel")
        else None, "python": platform.python_version(),
        "numpy": numpy_version, "os": os_release(),
    }
    emulated = emulation()
    fp["emulated"] = bool(emulated)
    if emulated:
        fp["emulation"] = emulated
    if runtime:
        fp["runtime"] = runtime
    return fp


PRETTY = {"tensorflow": "tensorflow.lite", "tflite_runtime": "tflite-runtime", "ai_edge_litert": "ai-edge-litert"}
DISTRIBUTIONS = {"ai_edge_litert": ("ai-edge-litert", "ai-edge-litert-nightly"),
                 "tflite_runtime": ("tflite-runtime", "tflite-runtime-nightly"),
                 "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-aarch64", "tensorflow-gpu")}


def _dist_version(module):
    try:
        from importlib import metadata
    except ImportError:  # Python 3.7
        return None
    for dist in DISTRIBUTIONS[module]:
        try:
            return metadata.version(dist)
        except Exception:
            continue
    return None


def find_runtimes():
    """Installed runtimes, found without importing them (importing TensorFlow takes seconds)."""
    import importlib.util
    found = []
    for name in RUNTIMES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            found.append({"name": PRETTY[name], "module": name, "version": _dist_version(name)})
    return found


def load_runtime(choice):
    order = RUNTIMES if choice == "auto" else (choice,)
    errors = []
    for name in order:
        try:
            if name == "ai_edge_litert":
                from ai_edge_litert import interpreter as mod
                import ai_edge_litert as pkg
                version = getattr(pkg, "__version__", None)
            elif name == "tflite_runtime":
                from tflite_runtime import interpreter as mod
                import tflite_runtime as pkg
                version = getattr(pkg, "__version__", None)
            elif name == "tensorflow":
                import tensorflow as tf
                mod, version = tf.lite, tf.__version__
                mod.load_delegate = tf.lite.experimental.load_delegate
            else:
                raise Failure("unknown runtime " + name)
            return mod, {"name": PRETTY[name], "module": name, "version": version or _dist_version(name)}
        except ImportError as e:
            errors.append("%s: %s" % (name, e))
    raise Failure("no TFLite runtime found (tried %s)" % "; ".join(errors))


def delegate_present(name):
    lib = DELEGATE_LIBS.get(name)
    return bool(lib) and any(glob.glob(os.path.join(d, lib)) for d in LIB_DIRS)


def make_interpreter(mod, model_path, threads, delegate):
    kwargs = {"model_path": model_path, "num_threads": threads}
    if delegate in DELEGATE_LIBS:
        try:
            kwargs["experimental_delegates"] = [mod.load_delegate(DELEGATE_LIBS[delegate])]
        except (ValueError, OSError, RuntimeError) as e:
            raise Failure("cannot load the %s delegate (%s): %s" % (delegate, DELEGATE_LIBS[delegate], e)) from None
    elif delegate == "none":
        resolver = getattr(getattr(mod, "OpResolverType", None), "BUILTIN_WITHOUT_DEFAULT_DELEGATES", None)
        if resolver is None:
            raise Failure("this runtime cannot disable its default delegates")
        kwargs["experimental_op_resolver_type"] = resolver
    try:
        return mod.Interpreter(**kwargs)
    except (ValueError, RuntimeError) as e:
        raise Failure("the runtime cannot load the model: %s" % str(e).strip().splitlines()[0]) from None


def make_inputs(interp, source, seed):
    import numpy as np
    details = interp.get_input_details()
    if source != "random":
        arr = np.load(source, allow_pickle=False)
        if len(details) != 1:
            raise Failure("a .npy input works for single-input models only")
        want = tuple(int(s) for s in details[0]["shape"])
        arr = arr.reshape(want) if arr.size == int(np.prod(want)) else arr
        if tuple(arr.shape) != want:
            raise Failure("input .npy has shape %s, the model takes %s" % (tuple(int(s) for s in arr.shape), want))
        return [(details[0]["index"], arr.astype(details[0]["dtype"]))]
    rng = np.random.RandomState(seed)
    out = []
    for d in details:
        dtype = np.dtype(d["dtype"])
        shape = [max(1, int(s)) for s in d["shape"]]
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            arr = rng.randint(info.min, int(info.max) + 1, size=shape).astype(dtype)
        elif dtype.kind == "b":
            arr = rng.randint(0, 2, size=shape).astype(dtype)
        else:
            arr = rng.random_sample(shape).astype(dtype)
        out.append((d["index"], arr))
    return out


def percentile(sorted_vals, q):
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def stats(lat):
    s = sorted(lat)
    n = len(s)
    mean = sum(s) / n
    std = (sum((x - mean) ** 2 for x in s) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return {"n": n, "mean_ms": mean, "std_ms": std, "min_ms": s[0], "max_ms": s[-1],
            "p50_ms": percentile(s, 50), "p90_ms": percentile(s, 90), "p99_ms": percentile(s, 99)}


def max_temp():
    t = temperatures()
    return max(t.values()) if t else None


def cool_down(max_temp_c, wait_s):
    """Wait (bounded) while the board is hotter than max_temp_c or firmware-throttled."""
    waited = 0.0
    start = time.time()
    while wait_s > 0:
        hot = max_temp_c is not None and (max_temp() or 0) > max_temp_c
        bits = throttled_bits()
        if not hot and not (bits and bits & 0xF):
            break
        if time.time() - start >= wait_s:
            break
        time.sleep(min(1.0, wait_s))
        waited = time.time() - start
    return waited


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def measure(args):
    SETTINGS["zones"], SETTINGS["throttle_probe"] = args.thermal_zone, args.throttle_probe
    if args.expect_sha256:
        if not os.path.isfile(args.model):
            raise Failure("model file is missing on the board")
        if sha256_of(args.model) != args.expect_sha256:
            return {"status": "error", "error": "model hash mismatch on the board", "hash_mismatch": True}
    mod, runtime = load_runtime(args.runtime)
    cooled = cool_down(args.max_temp, args.cool_wait)
    temps_before, bits_before = temperatures(), throttled_bits()
    t0 = time.perf_counter()
    interp = make_interpreter(mod, args.model, args.threads, args.delegate)
    interp.allocate_tensors()
    load_ms = (time.perf_counter() - t0) * 1000.0
    for index, arr in make_inputs(interp, args.input, args.seed):
        interp.set_tensor(index, arr)
    t0 = time.perf_counter()
    interp.invoke()
    first_ms = (time.perf_counter() - t0) * 1000.0
    for _ in range(args.warmup):
        interp.invoke()
    lat = []
    clock = time.perf_counter
    end_by = clock() + args.min_seconds
    while len(lat) < args.runs or clock() < end_by:
        t0 = clock()
        interp.invoke()
        lat.append((clock() - t0) * 1000.0)
        if len(lat) >= args.max_runs:
            break
    try:
        import resource
        peak_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except ImportError:
        peak_rss_kb = None
    bits_after = throttled_bits()
    fp = fingerprint(runtime)
    fp["temperatures_before_c"] = temps_before
    throttled = bool((bits_before or 0) & 0xF or (bits_after or 0) & 0xF)
    hot = args.max_temp is not None and (max_temp() or 0) > args.max_temp
    return {"status": "ok", "runtime": runtime, "load_ms": load_ms, "first_ms": first_ms,
            "latencies_ms": lat, "stats": stats(lat), "peak_rss_kb": peak_rss_kb, "fingerprint": fp,
            "cooled_s": cooled, "throttled": throttled or hot,
            "settings": {"threads": args.threads, "delegate": args.delegate, "warmup": args.warmup,
                         "runs": args.runs, "min_seconds": args.min_seconds, "input": args.input}}


def safe_measure(args):
    try:
        return measure(args)
    except Failure as e:
        return {"status": "error", "error": str(e)}
    except Exception as e:  # report, never a bare traceback on the board
        return {"status": "error", "error": "%s: %s" % (type(e).__name__, e)}


def _die_with(parent):
    """Linux: end this child when the runner ends (killed by edgekit on Ctrl-C or timeout)."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except Exception:  # not Linux: the child finishes its one model
        pass
    if os.getppid() != parent:  # the runner ended before prctl took effect
        os._exit(0)


def _in_child(args, timeout):
    """measure() in a forked child: the parent's imports are shared, the child's memory and fate are its own."""
    import select
    import signal
    r, w = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        _die_with(parent)
        try:
            data = json.dumps(safe_measure(args)).encode()
            with os.fdopen(w, "wb") as f:
                f.write(data)
        finally:
            os._exit(0)
    os.close(w)
    chunks, deadline = [], (time.monotonic() + timeout) if timeout else None
    try:
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"status": "error", "error": "timed out after %g s" % timeout, "timeout": True}
            ready, _, _ = select.select([r], [], [], left)
            if ready:
                block = os.read(r, 1 << 16)
                if not block:
                    break
                chunks.append(block)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        why = ("signal %d" % os.WTERMSIG(status)) if os.WIFSIGNALED(status) else ("exit %d" % os.WEXITSTATUS(status))
        return {"status": "error", "error": "the measurement process died (%s)" % why}
    return json.loads(b"".join(chunks).decode())


def run_batch(ap, batch, job_timeout):
    """One JSON line per job, printed as each finishes."""
    jobs = [ap.parse_args(argv) for argv in json.loads(batch)]
    if jobs and jobs[0].runtime != "tensorflow":
        try:
            load_runtime(jobs[0].runtime)  # import once: every forked child starts with it loaded
        except Failure:
            pass  # each job reports it
    fork = hasattr(os, "fork") and not any(j.runtime == "tensorflow" for j in jobs) and \
        "tensorflow" not in sys.modules  # never fork a process that imported TensorFlow (its threads)
    for index, args in enumerate(jobs):
        result = _in_child(args, job_timeout) if fork else safe_measure(args)
        result["job"] = index
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    return 0


def watch_stdin():
    """End this runner (and, through PR_SET_PDEATHSIG, its model processes) when edgekit goes away: its side of
    our stdin closes when the SSH session ends (Ctrl-C, edgekit killed, a timeout) or the local parent dies."""
    import threading

    def watch():
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os._exit(4)
    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def probe(_args):
    runtimes = find_runtimes()
    return {"status": "ok", "runtimes": runtimes, "fingerprint": fingerprint(),
            "delegates": {name: delegate_present(name) for name in DELEGATE_LIBS},
            "python_executable": sys.executable, "runner_sha256": sha256_of(os.path.abspath(__file__))}


def main(argv=None):
    ap = argparse.ArgumentParser(description="Time a .tflite model with the local TFLite runtime.")
    ap.add_argument("--probe", action="store_true", help="describe this board and its runtimes, then exit")
    ap.add_argument("--model")
    ap.add_argument("--expect-sha256")
    ap.add_argument("--runtime", default="auto", choices=("auto",) + RUNTIMES)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--delegate", default="xnnpack", choices=("xnnpack", "none", "edgetpu", "gpu"))
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--min-seconds", type=float, default=0.0)
    ap.add_argument("--max-runs", type=int, default=100000, help="stop after this many counted runs, whatever "
                    "--min-seconds says (keeps raw results bounded)")
    ap.add_argument("--input", default="random", help="'random' or a .npy file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-temp", type=float, default=None)
    ap.add_argument("--cool-wait", type=float, default=0.0)
    ap.add_argument("--thermal-zone", action="append", help="thermal zone folder or its temp file (repeatable; "
                    "default: every /sys/class/thermal zone)")
    ap.add_argument("--throttle-probe", choices=("vcgencmd", "jetson_nvpmodel", "none"),
                    help="the board's throttling probe (default: try each)")
    ap.add_argument("--batch", help="JSON list of argument lists: measure each (see the module docstring)")
    ap.add_argument("--job-timeout", type=float, default=0.0, help="with --batch: seconds per model (0: none)")
    ap.add_argument("--watch-stdin", action="store_true", help="exit at once when standard input closes (edgekit "
                    "keeps it open while it waits for us)")
    args = ap.parse_args(argv)
    if args.watch_stdin:
        watch_stdin()
    if args.batch:
        return run_batch(ap, args.batch, args.job_timeout)
    if not args.probe and not args.model:
        ap.error("--model is required unless --probe")
    result = {"status": "error", "error": "unknown"}
    try:
        result = probe(args) if args.probe else safe_measure(args)
    except Exception as e:  # report, never a bare traceback on the board
        result = {"status": "error", "error": "%s: %s" % (type(e).__name__, e)}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0 if result.get("status") == "ok" else 3


if __name__ == "__main__":
    sys.exit(main())
