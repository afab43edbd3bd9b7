"""Command line: parse, call one library function, print. Errors -> one line on stderr, exit code 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .errors import ConfigError, EdgekitError
from .profiles import DELEGATES


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _show(as_json: bool, data, text: str) -> None:
    """--json prints the data, otherwise the human text."""
    if as_json:
        _print_json(data)
    else:
        print(text)


def cmd_devices(args) -> int:
    from .profiles import load_profiles
    from .report_text import devices_table
    profiles = load_profiles()
    _show(args.json, [p.to_dict() for p in profiles], devices_table(profiles))
    return 0


def cmd_recipes(args) -> int:
    from .profiles import load_recipes
    from .report_text import recipes_table
    recipes = load_recipes()
    _show(args.json, [r.to_dict() for r in recipes], recipes_table(recipes))
    return 0


def cmd_convert(args) -> int:
    from .pipeline import convert_for_device
    from .report_text import manifest_table
    m = convert_for_device(args.model, args.device, args.recipe or None, train=args.train,
                           calibration=args.calibration, eval=args.eval, val=args.val, out=args.out,
                           labels=args.labels,
                           keep_going=args.keep_going, overwrite=args.overwrite, max_drop=args.max_drop,
                           reuse=args.resume, cache=not args.no_cache)
    if args.json:
        _print_json(m.to_dict())
    else:
        print(manifest_table(m))
        print(f"\n{len(m.variants)} variants in {args.out}/ (manifest.json)")
        for f in m.failed:
            print(f"failed: {f['recipe']}: {f['error']}")
    return 1 if m.failed else 0


def cmd_inspect(args) -> int:
    from .compat import describe
    from .flatbuffer import read_model
    from .profiles import load_profile
    from .report_text import inspect_text
    profile = load_profile(args.device) if args.device else None
    info = read_model(args.model)
    report = describe(info, profile)
    _show(args.json, report, inspect_text(info, report))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo
    _manifests, summary = run_demo(Path(args.out))
    print(summary)
    return 0


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _boards_from_args(args):
    from .remote.inventory import parse_host, select_boards
    if args.host:
        if not args.profile:
            from .errors import ConfigError
            raise ConfigError("--host needs --profile PROFILE (see `edgekit devices`)")
        return [parse_host(h, args.profile, args.identity, args.python) for h in args.host]
    return select_boards(args.board or [], args.all_boards, args.boards)


def cmd_profile(args) -> int:
    from .errors import ConfigError
    if not (args.board or args.all_boards or args.host):
        raise ConfigError("say where to profile: --board NAME (e.g. --board local), --all-boards, or --host")
    models = list(args.models)
    if args.ops:  # every op of each model as a model of its own, profiled with it
        from .predict import record_ops
        from .store import Store
        st = Store(args.store)
        for m in args.models:
            files, ops = record_ops(st, m)
            models += [f for f in files if f not in models]
            for o in ops:
                if o.why:
                    print(f"edgekit: warning: {m}: op {o.index} {o.op}: {o.why}", file=sys.stderr)
        st.close()
    return _profile_and_show(models, args)


def _profile_and_show(models: list, args, summary=None, boards=None) -> int:
    """Profile `models` on the boards the arguments name, print the table (or --json) and the failures."""
    from .profiling.api import profile
    from .profiling.jobs import Settings
    from .profiling.scheduler import Options
    res = profile(models, boards or _boards_from_args(args), threads=args.threads, repeat=args.repeat,
                  settings=Settings(warmup=args.warmup, runs=args.runs, min_seconds=args.min_seconds,
                                    delegate=args.delegate), input_path=args.input,
                  options=Options(store=args.store, force=args.force, timeout=args.timeout, retries=args.retries,
                                  known_hosts=args.known_hosts, accept_new_host=args.accept_new_host,
                                  ask_password=args.ask_password), quiet=args.json)
    failed = res.failed
    if args.json:
        for r in res.rows:
            r.pop("latencies_ms", None)
        _print_json({"measurements": res.rows, "board_errors": res.board_errors,
                     "bytes_uploaded": res.bytes_uploaded})
    elif summary:
        print(summary(res))
    else:
        from .latency_table import render
        from .store import Store
        print(render([r for r in Store(args.store).rows() if r["settings_key"] in res.keys]))
    reasons: dict[tuple, int] = {}
    for r in failed:
        reasons[(r["board"], r["error"])] = reasons.get((r["board"], r["error"]), 0) + 1
    for (board, error), n in reasons.items():
        print(f"edgekit: error: {board}: {error}" + (f" ({n} measurements)" if n > 1 else ""), file=sys.stderr)
    for e in res.board_errors:
        print(f"edgekit: error: {e}", file=sys.stderr)
    if res.missing and not (failed or res.board_errors):  # a board that did not measure never ends in exit 0
        print(f"edgekit: error: {res.missing} of {res.total} measurements were not taken", file=sys.stderr)
    return 0 if res.ok else 2


def cmd_lut(args) -> int:
    import time
    from .lut import build_models, load_grid, lut_folder, op_files
    from .store import Store
    if not (args.board or args.all_boards or args.host):
        raise ConfigError("say which board the table is for: --board NAME (e.g. --board local), --all-boards, "
                          "or --host")
    boards = _boards_from_args(args)  # an unknown board: said before anything is built
    if args.like:
        from .flatbuffer import read_model
        from .lut import grid_like
        read_model(args.like)  # a corrupt file: one line
        grid = grid_like(Path(args.like).read_bytes(), args.tile)
    else:
        grid = load_grid(args.grid)
    t0 = time.monotonic()
    st = Store(args.store)
    models = build_models(grid, lut_folder(st), progress=not args.json)
    files, uncut = op_files(st, models)
    st.close()
    built = time.monotonic() - t0

    def summary(res) -> str:
        took = time.monotonic() - t0
        return (f"lut: {len(models)} kernel models ({built:.0f} s to build), {len(files)} single-op models, "
                f"{len(res.rows) - len(res.failed)} measurements ({took / 60:.1f} min in all)"
                + (f"; {uncut} ops could not be cut" if uncut else "")
                + "\nnow `edgekit predict MODEL.tflite --board B` scales from these where a model's op was not "
                  "measured")
    return _profile_and_show(files, args, summary, boards)


def cmd_boards(args) -> int:
    from .remote.inventory import load_boards, local_board
    from .report_text import boards_check_table, boards_table
    path = Path(args.boards or "boards.yaml")
    boards = [local_board()] + (load_boards(path) if (args.boards or path.exists()) else [])
    if not args.check:
        _show(args.json, [b.public() for b in boards], boards_table(boards))
        return 0
    from .profiling.check import check_boards
    reports = check_boards(boards, known_hosts=args.known_hosts, accept_new_host=args.accept_new_host)
    _show(args.json, reports, boards_check_table(reports))
    return 0 if all(r["reachable"] for r in reports) else 1


def cmd_table(args) -> int:
    from .latency_table import render
    from .store import Store
    store = Store(args.store, create=False)
    if args.ops:
        from .op_report import ops_table
        print(ops_table(store, args.ops, args.board, args.format))
        return 0
    print(render(store.rows(board=args.board), args.format))
    return 0


def cmd_predict(args) -> int:
    from .flatbuffer import read_model
    from .predict import predict
    from .store import Store
    read_model(args.model)  # a corrupt file: one line
    p = predict(Store(args.store, create=False), args.model, args.board, args.threads, args.delegate)
    if not any(e.how != "missing" for e in p.ops):
        raise ConfigError(f"no per-op latencies for board {args.board} with {args.threads} thread(s): run "
                          f"`edgekit profile --ops MODEL... --board {args.board}` on some models first")
    if args.json:
        _print_json(p.to_dict())
        return 0
    print(f"{Path(args.model).name} on {args.board} t{args.threads}: predicted p50 {p.ms:.3g} ms "
          f"(ops {p.ops_ms:.3g} ms + overhead {p.overhead_ms:.3g} ms fitted on {p.overhead_from} models)")
    print(f"from measured op signatures: {p.measured_share:.0%} of the ops' time; scaled from a similar op: "
          f"{p.scaled_share:.0%}" + (f"; no estimate for {', '.join(p.missing)}" if p.missing else ""))
    if p.kernel_scale != 1.0:
        print(f"kernel-grid ops (lut build) scaled by {p.kernel_scale:.3g}: the median ratio of this board's model "
              f"ops to the grid at their size")
    return 0


def cmd_select(args) -> int:
    from .report_text import decision_text
    from .select import Budget, select
    from .store import Store
    budget = Budget(max_latency_ms=args.max_latency_ms, min_accuracy=args.min_accuracy, max_bytes=args.max_bytes,
                    confidence=args.confidence)
    d = select(Store(args.store, create=False), board=args.board, device=args.device, budget=budget,
               percentile=args.percentile, manifests=args.manifest, include_throttled=args.include_throttled,
               include_emulated=args.include_emulated,
               include_over_budget=args.include_over_budget, predict=args.predict)
    if args.plot:
        from .plot import pareto_plot
        pareto_plot(d, args.plot)
    _show(args.json, d.to_dict(), decision_text(d) + (f"\nplot: {args.plot}" if args.plot else ""))
    return 0 if d.chosen else 1


def cmd_report(args) -> int:
    from .report import write_report
    from .store import Store
    html_path, md_path = write_report(Store(args.store, create=False), args.out)
    if args.json:
        _print_json({"html": str(html_path), "markdown": str(md_path)})
    else:
        print(f"report: {html_path} (self-contained) and {md_path}")
    return 0


def _ray_options(args):
    if args.executor != "ray":
        if args.ray_address:
            raise ConfigError("--ray-address needs --executor ray")
        return None
    from .sweep_ray import RayOptions, import_ray
    import_ray()  # one line on how to install it, before anything runs
    return RayOptions(address=args.ray_address, cpus=args.ray_cpus, memory_mb=args.ray_memory_mb,
                      max_retries=args.ray_retries)


def cmd_sweep(args) -> int:
    from .select import Budget
    from .sweep import sweep
    boards = _boards_from_args(args) if (args.board or args.all_boards or args.host) else None
    budgets = [Budget(max_latency_ms=x, min_accuracy=args.min_accuracy) for x in (args.max_latency_ms or [])] or \
        ([Budget(min_accuracy=args.min_accuracy)] if args.min_accuracy is not None else None)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    res = sweep(args.model, devices, boards=boards, train=args.train, calibration=args.calibration, eval=args.eval,
                grid=args.grid, out=args.out, jobs=args.jobs, threads=args.threads, runs=args.runs,
                warmup=args.warmup, budgets=budgets, known_hosts=args.known_hosts,
                accept_new_host=args.accept_new_host, max_drop=args.max_drop,
                include_over_budget=args.include_over_budget, include_emulated=args.include_emulated,
                executor=args.executor, ray=_ray_options(args))
    if args.json:
        _print_json({"manifests": {d: str(Path(args.out) / d / "manifest.json") for d in res.manifests},
                     "measurements": res.measurements, "failed": res.failed, "report": str(res.report),
                     "decisions": [{"device": d, "board": b, "budget": bud.__dict__, "chosen":
                                    dec.chosen.variant if dec.chosen else None, "threads":
                                    dec.chosen.threads if dec.chosen else None, "reason": dec.reason,
                                    "front": dec.front} for d, b, bud, dec in res.decisions]})
    else:
        for d, b, bud, dec in res.decisions:
            chosen = f"{dec.chosen.label}" if dec.chosen else "nothing"
            print(f"{d} on {b} [{bud.describe(dec.percentile)}]: {chosen} - {dec.reason}")
        print(f"report: {res.report}")
    return 2 if res.failed else 0


def cmd_export(args) -> int:
    from .export.bundle import export
    res = export(args.model, args.target, labels=args.labels, mean=args.mean, std=args.std, name=args.name,
                 out=args.out, manifest=args.manifest, variant=args.variant, max_bytes=args.max_bytes)
    if args.json:
        _print_json(res)
    else:
        print(f"{res['target']} bundle for {res['name']} in {res['out']}/: {', '.join(res['files'])}")
        if "arena_bytes" in res:
            print(f"tensor arena: {res['arena_bytes']:,} bytes ({res['arena_measured_bytes']:,} measured in TFLite "
                  f"Micro + margin); ops: {', '.join(res['ops'])}")
    return 0


def cmd_sensitivity(args) -> int:
    from .compress.sensitivity import analyse_files, plot
    from .report_text import sensitivity_text
    res = analyse_files(args.model, args.eval, args.sparsities, args.method, use_cache=not args.no_cache)
    if args.plot:
        plot(res, args.plot)
    _show(args.json, res, sensitivity_text(res) + (f"; plot: {args.plot}" if args.plot else ""))
    return 0


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not 0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"sparsities must be between 0 and 1, got {text!r}")
    return sorted(values)


def _measure_args(s) -> None:
    """Where, how and how safely to measure (profile, lut build)."""
    where = s.add_argument_group("where")
    where.add_argument("--board", action="append", help="board name from boards.yaml, or 'local' (repeatable)")
    where.add_argument("--all-boards", action="store_true", help="every board in boards.yaml")
    where.add_argument("--boards", help="board inventory (default ./boards.yaml)")
    where.add_argument("--host", action="append", help="ad-hoc board user@host[:port] or ~/.ssh/config alias")
    where.add_argument("--profile", help="device profile of --host boards")
    where.add_argument("--identity", help="private key for --host boards (default: ssh-agent and ~/.ssh keys)")
    where.add_argument("--python", help="Python on --host boards (default python3)")
    how = s.add_argument_group("how")
    how.add_argument("--threads", type=_int_list, help="thread counts, e.g. 1,4 (default: the profile's)")
    how.add_argument("--delegate", default="xnnpack", choices=DELEGATES)
    how.add_argument("--warmup", type=int, default=10, help="warm-up runs (default 10)")
    how.add_argument("--runs", type=int, default=100, help="counted runs, at least (default 100)")
    how.add_argument("--min-seconds", type=float, default=0.0,
                     help="keep running for at least this long (at most 100,000 counted runs)")
    how.add_argument("--repeat", type=int, default=1, help="repeat each measurement K times")
    how.add_argument("--input", help=".npy input instead of random data in the input dtype's range")
    how.add_argument("--timeout", type=float, default=600.0, help="per-job timeout in seconds (default 600)")
    how.add_argument("--retries", type=int, default=2, help="retries of a job after a connection fault")
    how.add_argument("--force", action="store_true", help="measure again what the store already has")
    sec = s.add_argument_group("security")
    sec.add_argument("--known-hosts", help="known_hosts file (default ~/.ssh/known_hosts)")
    sec.add_argument("--accept-new-host", action="store_true", help="trust and record unknown host keys (TOFU)")
    sec.add_argument("--ask-password", action="store_true", help="prompt for an SSH password")
    s.add_argument("--store", help="SQLite store (default ./edgekit.db or $EDGEKIT_STORE)")
    s.add_argument("--json", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgekit", description="Optimize, convert, validate, profile and select "
                                "TFLite variants of a Keras model for edge boards.")
    p.add_argument("--version", action="version", version=f"edgekit {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug lines: connections, remote commands, "
                   "uploads, conversion steps")
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
    s.add_argument("--val", help="held-out DATA the model did not train on, for the 'auto' strength searches "
                   "(default: a split carved from --train, which a model trained on --train has seen, so the "
                   "searches choose weaker settings); must share no sample with --train")
    s.add_argument("--out", default="edgekit-out", help="output folder (default: edgekit-out)")
    s.add_argument("--labels", help="class names, one per line, in output order (default: the data's class "
                   "folders or a .npz 'classes' array); kept in the manifest for exports")
    s.add_argument("--keep-going", action="store_true", help="a recipe that fails is listed in the manifest "
                   "('failed') and the others are still built (exit 1)")
    s.add_argument("--max-drop", type=float, help="accuracy budget in points below the Keras model for every "
                   "recipe (default: each recipe's, 1.0); 'auto' strengths are searched within it, variants over it "
                   "are flagged")
    s.add_argument("--overwrite", action="store_true", help="write into an --out folder that also holds files "
                   "edgekit did not write: only edgekit's own files (listed in its manifest) are replaced, the "
                   "rest is kept")
    s.add_argument("--resume", action="store_true", help="reuse the variants a previous or interrupted run (killed, "
                   "out of memory, Ctrl-C, a failed recipe) built from the same model file and recipe settings; "
                   "build only the rest")
    s.add_argument("--no-cache", action="store_true", help="search every 'auto' strength again, even if an earlier "
                   "run (e.g. for another device) searched the same model, data and settings")
    s.add_argument("--json", action="store_true", help="print the manifest as JSON")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("inspect", help="describe a .tflite file (no TensorFlow needed)")
    s.add_argument("model")
    s.add_argument("--device", help="also check compatibility with this device profile")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("profile", help="measure .tflite models on boards (local or over SSH) into the store")
    s.add_argument("models", nargs="+", metavar="MODEL", help=".tflite files")
    s.add_argument("--ops", action="store_true", help="also each op alone (single-op models cut from each MODEL, "
                   "stored beside the store): per-op latencies for `table --ops` and `predict`")
    _measure_args(s)
    s.set_defaults(func=cmd_profile)

    s = sub.add_parser("lut", help="a board's kernel latency table: a grid of conv/depthwise/dense/pool/add kernels "
                       "(int8 and float) profiled op by op, for `predict`")
    lut = s.add_subparsers(dest="lut_command", required=True, metavar="build")
    s = lut.add_parser("build", help="build the grid's kernel models, cut them into single ops and profile those")
    which = s.add_mutually_exclusive_group()
    which.add_argument("--grid", help="YAML grid {kernels: [{op, kernel, stride, size: [..], channels: [..], "
                       "activation}], quantization: [int8, float32]} (default: 8..256 channels at 8..32 px, 348 "
                       "models)")
    which.add_argument("--like", metavar="MODEL", help="a grid covering this .tflite's kernels: each (op, kernel, "
                       "stride, activation) at the sizes it uses them, from one channel tile to its widest")
    s.add_argument("--tile", type=int, default=8, help="channel step of --like grids (the board's int8 kernel "
                   "tile; default 8)")
    _measure_args(s)
    s.set_defaults(func=cmd_lut)

    s = sub.add_parser("boards", help="list boards; --check connects to each and reports what it has")
    s.add_argument("--boards", help="board inventory (default ./boards.yaml)")
    s.add_argument("--check", action="store_true")
    s.add_argument("--known-hosts")
    s.add_argument("--accept-new-host", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_boards)

    s = sub.add_parser("table", help="print the latency table from the store")
    s.add_argument("--store")
    s.add_argument("--board")
    s.add_argument("--format", default="table", choices=("table", "md", "csv", "json"))
    s.add_argument("--ops", metavar="MODEL", help="per op of MODEL (profiled with `profile --ops`): latency, share "
                   "of the whole, the Keras layer it came from")
    s.set_defaults(func=cmd_table)

    s = sub.add_parser("predict", help="predict a model's latency on a board from its per-op latency table")
    s.add_argument("model", metavar="MODEL", help=".tflite file")
    s.add_argument("--board", required=True)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--delegate", default="xnnpack", choices=DELEGATES)
    s.add_argument("--store")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("select", help="per board or device: the Pareto front and the best variant under a budget")
    target = s.add_mutually_exclusive_group(required=True)
    target.add_argument("--board", help="a board name in the store")
    target.add_argument("--device", help="every board of this device profile")
    s.add_argument("--max-latency-ms", type=float)
    s.add_argument("--min-accuracy", type=float)
    s.add_argument("--max-bytes", type=int)
    s.add_argument("--percentile", default="p50", choices=("p50", "p90", "p99"))
    s.add_argument("--confidence", type=float, help="choose only variants whose upper CI bound meets the budget")
    s.add_argument("--manifest", action="append", help="manifest.json to draw variants from (default: all the "
                   "store has seen)")
    s.add_argument("--include-throttled", action="store_true")
    s.add_argument("--include-emulated", action="store_true", help="also choose from latencies measured under "
                   "emulation (e.g. an emulated aarch64 board): they are not the hardware's")
    s.add_argument("--include-over-budget", action="store_true", help="also choose variants that lost more "
                   "accuracy than their recipe's budget (max_drop)")
    s.add_argument("--store")
    s.add_argument("--plot", help="write accuracy vs latency PNG here")
    s.add_argument("--json", action="store_true")
    s.add_argument("--predict", action="store_true", help="also the manifests' variants never measured on --board, "
                   "at their p50 predicted from its op table (marked 'predicted')")
    s.set_defaults(func=cmd_select)

    s = sub.add_parser("report", help="write an HTML + Markdown report of the store: tables, fronts, choices")
    s.add_argument("--store")
    s.add_argument("--out", default="edgekit-report")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("sweep", help="grid of variants -> convert per device -> profile -> select -> report")
    s.add_argument("model")
    s.add_argument("--devices", required=True, help="comma-separated device profiles, e.g. rpi4,coral-usb")
    s.add_argument("--board", action="append", help="board to profile on (repeatable; default: local)")
    s.add_argument("--all-boards", action="store_true")
    s.add_argument("--boards", help="board inventory (default ./boards.yaml)")
    s.add_argument("--host", action="append", help=argparse.SUPPRESS)
    s.add_argument("--profile", help=argparse.SUPPRESS)
    s.add_argument("--identity", help=argparse.SUPPRESS)
    s.add_argument("--python", help=argparse.SUPPRESS)
    s.add_argument("--train")
    s.add_argument("--calibration")
    s.add_argument("--eval")
    s.add_argument("--grid", help="grid YAML: prune, clusters, qat, quantization lists (+ epochs)")
    s.add_argument("--out", default="sweep-out")
    s.add_argument("--jobs", type=int, default=1, help="convert devices in N parallel processes")
    s.add_argument("--executor", choices=("local", "ray"), default="local", help="where conversions run: this "
                   "machine, or a Ray cluster (pip install 'edgekit[ray]'); one task per device and recipe prefix")
    s.add_argument("--ray-address", help="Ray cluster to join (e.g. 10.0.0.5:6379; default: start Ray locally)")
    s.add_argument("--ray-cpus", type=float, default=1.0, help="CPUs each conversion task declares (default 1)")
    s.add_argument("--ray-memory-mb", type=int, default=3000, help="memory each conversion task declares")
    s.add_argument("--ray-retries", type=int, default=2, help="times a task whose worker or node died is rerun")
    s.add_argument("--threads", type=_int_list)
    s.add_argument("--runs", type=int, default=100)
    s.add_argument("--warmup", type=int, default=10)
    s.add_argument("--max-latency-ms", type=float, action="append", help="a budget to choose under (repeatable)")
    s.add_argument("--min-accuracy", type=float)
    s.add_argument("--max-drop", type=float, help="accuracy budget in points for every recipe (default 1.0)")
    s.add_argument("--include-over-budget", action="store_true", help="let select choose over-budget variants")
    s.add_argument("--include-emulated", action="store_true", help="let select choose from latencies measured "
                   "under emulation")
    s.add_argument("--known-hosts")
    s.add_argument("--accept-new-host", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("export", help="bundle a model for an Android app, embedded C (TFLite Micro) or Linux")
    s.add_argument("model", nargs="?", help=".tflite file (or use --manifest and --variant)")
    s.add_argument("--target", required=True, choices=("android", "c-array", "linux"))
    s.add_argument("--manifest", help="manifest.json of convert-for-device")
    s.add_argument("--variant", help="variant name in --manifest")
    s.add_argument("--labels", help="class names, one per line, in output order (default: the manifest's)")
    s.add_argument("--mean", type=float, help="input normalization mean (android metadata; default 0)")
    s.add_argument("--std", type=float, help="input normalization std (android metadata; default 1)")
    s.add_argument("--name", help="base name of the exported files (default: the model's)")
    s.add_argument("--max-bytes", type=int, help="refuse models larger than this (e.g. an MCU's flash budget)")
    s.add_argument("--out", help="output folder (default export-NAME-TARGET)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("sensitivity", help="per-layer accuracy drop when that layer alone is pruned (one shot)")
    s.add_argument("model")
    s.add_argument("--train", help="accepted for symmetry with the recipes; the analysis itself needs --eval")
    s.add_argument("--eval", required=True, help="DATA to measure the accuracy on")
    s.add_argument("--sparsities", type=_float_list, default=[0.3, 0.5, 0.7, 0.9])
    s.add_argument("--method", default="magnitude", choices=("magnitude", "filter"))
    s.add_argument("--plot", help="write the curves (layers as lines) to this PNG")
    s.add_argument("--no-cache", action="store_true", help="measure again even if cached for this model")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_sensitivity)

    s = sub.add_parser("demo", help="train a CNN on sklearn's digits and convert it for rpi4 and coral-usb")
    s.add_argument("--out", default="demo-out")
    s.set_defaults(func=cmd_demo)
    for s in sub.choices.values():  # -v after the command too (SUPPRESS: never resets the one given before it)
        s.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def _log_to_stderr(verbose: bool = False) -> None:
    """The library logs through logging.getLogger("edgekit"): progress lines (INFO) as they are, warnings as
    `edgekit: warning: ...`, and with -v the debug lines (connect, exec, upload, convert) as `edgekit: debug: ...`."""
    import logging

    class Lines(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            msg = record.getMessage()
            if record.levelno >= logging.WARNING:
                return f"edgekit: warning: {msg}"
            if record.levelno <= logging.DEBUG:
                return f"edgekit: debug: [{record.name.removeprefix('edgekit.')}] {msg}"
            return msg
    log = logging.getLogger("edgekit")
    for h in list(log.handlers):
        if getattr(h, "edgekit_cli", False):
            log.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Lines())
    handler.edgekit_cli = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _log_to_stderr(getattr(args, "verbose", False))
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
    except Exception as e:  # a bug of ours: one line unless EDGEKIT_DEBUG asks for the traceback
        if os.environ.get("EDGEKIT_DEBUG"):
            raise
        print(f"edgekit: internal error: {type(e).__name__}: {e} (set EDGEKIT_DEBUG=1 for the traceback; please "
              f"report it)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
