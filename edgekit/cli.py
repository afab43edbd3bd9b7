"""Command line: parse, call one library function, print. Errors -> one line on stderr, exit code 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .errors import EdgekitError


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_devices(args) -> int:
    from .profiles import load_profiles
    from .report_text import table
    profiles = load_profiles()
    if args.json:
        _print_json([p.to_dict() for p in profiles])
        return 0
    rows = [[p.name, p.arch, f"{p.runtime.name} {p.runtime.version}", ",".join(p.delegates),
             ",".join(map(str, p.threads)), ",".join(p.quant_modes), ",".join(p.default_recipes)] for p in profiles]
    print(table(["device", "arch", "runtime", "delegates", "threads", "quantization", "default recipes"],
                rows, "lllllll"))
    return 0


def cmd_recipes(args) -> int:
    from .profiles import load_recipes
    from .report_text import table
    recipes = load_recipes()
    if args.json:
        _print_json([r.to_dict() for r in recipes])
        return 0
    rows = [[r.name, r.mode, r.io, "+".join(r.steps) or "-", r.qat_scheme or "-", ",".join(r.post) or "-",
             r.description] for r in recipes]
    print(table(["recipe", "mode", "io", "optimize", "qat scheme", "post", "description"], rows, "lllllll"))
    return 0


def cmd_convert(args) -> int:
    from .pipeline import convert_for_device
    from .report_text import manifest_table
    m = convert_for_device(args.model, args.device, args.recipe or None, train=args.train,
                           calibration=args.calibration, eval=args.eval, out=args.out)
    if args.json:
        _print_json(m.to_dict())
    else:
        print(manifest_table(m))
        print(f"\n{len(m.variants)} variants in {args.out}/ (manifest.json)")
    return 0


def cmd_inspect(args) -> int:
    from .compat import device_problems, edgetpu_preflight
    from .flatbuffer import read_model
    from .profiles import load_profile
    from .report_text import table
    profile = load_profile(args.device) if args.device else None
    info = read_model(args.model)
    d = info.to_dict()
    d.pop("op_sequence")
    d.pop("op_integer_only")
    if profile:
        problems, warnings = device_problems(info, profile)
        d["device"] = {"name": profile.name, "compatible": not problems, "problems": problems, "warnings": warnings}
        if profile.edgetpu:
            d["device"]["edgetpu_preflight"] = edgetpu_preflight(info).to_dict()
    if args.json:
        _print_json(d)
        return 0
    print(f"{info.path}: {info.bytes:,} bytes ({info.gzip_bytes:,} gzip), sha256 {info.sha256[:16]}…, "
          f"min runtime {info.min_runtime_version or '?'}")
    print(f"weights: {len(info.weights)} tensors, sparsity {info.sparsity:.1%}, "
          f"max distinct values per channel {info.max_unique_per_channel}")
    print(table(["op", "version", "count"], [[o["op"], o["version"], o["count"]] for o in info.ops]))
    print()
    rows = [[role, t.name, "x".join(map(str, t.shape)), t.dtype, t.scale, t.zero_point]
            for role, ts in (("input", info.inputs), ("output", info.outputs)) for t in ts]
    print(table(["io", "name", "shape", "dtype", "scale", "zero point"], rows, "llllrr"))
    if profile:
        dev = d["device"]
        print(f"\n{profile.name}: {'compatible' if dev['compatible'] else 'NOT compatible'}")
        for p in dev["problems"]:
            print(f"  problem: {p}")
        for w in dev["warnings"]:
            print(f"  warning: {w}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo
    run_demo(Path(args.out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgekit", description="Optimize, convert, validate, profile and select "
                                "TFLite variants of a Keras model for edge boards.")
    p.add_argument("--version", action="version", version=f"edgekit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("devices", help="list device profiles")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_devices)

    s = sub.add_parser("recipes", help="list conversion recipes")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_recipes)

    s = sub.add_parser("convert-for-device", help="build every useful TFLite variant of a model for a device",
                       description="DATA is a .npz with arrays x (samples, input shape) and y (class indices "
                                   "or one-hot), or a folder of images in class sub-folders.")
    s.add_argument("model", help=".keras / .h5 file or SavedModel folder of a tf_keras model")
    s.add_argument("--device", required=True, help="device profile name (see `edgekit devices`) or a .yaml path")
    s.add_argument("--recipe", action="append", help="recipe name or .yaml path (repeatable; default: the "
                   "device's default recipes)")
    s.add_argument("--train", help="DATA for fine-tuning (pruning / clustering / QAT)")
    s.add_argument("--calibration", help="DATA for the representative dataset (default: 200 samples of --train)")
    s.add_argument("--eval", help="DATA to measure accuracy in the LiteRT interpreter")
    s.add_argument("--out", default="edgekit-out", help="output folder (default: edgekit-out)")
    s.add_argument("--json", action="store_true", help="print the manifest as JSON")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("inspect", help="describe a .tflite file (no TensorFlow needed)")
    s.add_argument("model")
    s.add_argument("--device", help="also check compatibility with this device profile")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("demo", help="train a CNN on sklearn's digits and convert it for rpi4 and coral-usb")
    s.add_argument("--out", default="demo-out")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EdgekitError as e:
        print(f"edgekit: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("edgekit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
