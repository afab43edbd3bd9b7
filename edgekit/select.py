"""Choosing the variant to ship: join manifests (accuracy, size, fit) with measured latencies, Pareto fronts,
budgets, and bootstrap confidence intervals.  No TensorFlow."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .manifest import Variant, load_manifest

PERCENTILES = {"p50": 50, "p90": 90, "p99": 99}


@dataclass
class Candidate:
    variant: str
    manifest: str
    board: str
    profile: str
    threads: int
    delegate: str
    accuracy: float | None
    bytes: int
    gzip_bytes: int
    latency_ms: float  # the chosen percentile, median over repeats
    ci_low_ms: float | None = None
    ci_high_ms: float | None = None
    measurements: int = 0
    runs: int = 0
    model_sha256: str = ""
    on_front: bool = False
    straddles_budget: bool = False
    failed: list[str] = field(default_factory=list)
    model: str = ""  # the source model's name, set when candidates come from more than one model
    emulated: bool = False  # measured under emulation (--include-emulated): not the hardware's latency
    predicted: bool = False  # never measured on this board: latency predicted from its op table (--predict)
    ids: list[int] = field(default_factory=list, repr=False)  # its store rows (the bootstrap reads them); not output

    @property
    def label(self) -> str:
        return (f"{self.model}/" if self.model else "") + f"{self.variant} t{self.threads}" + (
            "" if self.delegate == "xnnpack" else f" {self.delegate}") + (" (predicted)" if self.predicted else "")


@dataclass
class Budget:
    max_latency_ms: float | None = None
    min_accuracy: float | None = None
    max_bytes: int | None = None
    confidence: float | None = None

    def describe(self, pct: str) -> str:
        parts = []
        if self.max_latency_ms is not None:
            parts.append(f"under {self.max_latency_ms:g} ms {pct}")
        if self.min_accuracy is not None:
            parts.append(f"accuracy >= {self.min_accuracy:g}")
        if self.max_bytes is not None:
            parts.append(f"<= {self.max_bytes:,} bytes")
        return ", ".join(parts) or "no budget"


@dataclass
class Decision:
    target: str
    percentile: str
    budget: dict
    candidates: list[Candidate]
    front: list[str]
    chosen: Candidate | None
    reason: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["chosen"] = asdict(self.chosen) if self.chosen else None
        for c in [*d["candidates"], d["chosen"]]:
            if c:
                c.pop("ids", None)
        return d


def bootstrap_ci(latencies: np.ndarray, q: float, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of the q-th percentile, computed exactly instead of by resampling.

    The q-quantile of a bootstrap resample is the k-th order statistic (k = ceil(q n)); it is <= x_(j) exactly when
    at least k of the n draws are <= x_(j), which happens with probability P(Binomial(n, j/n) >= k).  That is the
    whole bootstrap distribution (as if resampled infinitely often), evaluated exactly (the binomial's tail as a
    regularized incomplete beta function): O(n log n), so intervals for hundreds of candidates cost milliseconds.
    """
    xs = np.sort(np.asarray(latencies, dtype=np.float64))
    n = xs.size
    if n < 2:
        return float(xs[0]), float(xs[0])
    k = max(1, int(np.ceil(q / 100.0 * n)))
    from scipy.special import betainc  # scipy.stats would cost ~0.5 s more to import
    p = np.arange(1, n + 1) / n
    # P(Binomial(n, j/n) >= k) = I_{j/n}(k, n - k + 1): the probability that the bootstrap quantile <= x_(j)
    cdf = betainc(k, n - k + 1, p) if k <= n else np.zeros(n)
    cdf[-1] = 1.0
    a = (1 - confidence) / 2
    lo = xs[min(int(np.searchsorted(cdf, a)), n - 1)]
    hi = xs[min(int(np.searchsorted(cdf, 1 - a)), n - 1)]
    return float(lo), float(hi)


def pareto_front(cands: list[Candidate]) -> list[Candidate]:
    """Non-dominated candidates: higher accuracy, lower latency, fewer bytes (vectorised, O(n^2) in numpy)."""
    if not cands:
        return []
    k = np.array([[c.accuracy if c.accuracy is not None else -1.0, -c.latency_ms, -float(c.bytes)] for c in cands])
    ge = (k[:, None, :] >= k[None, :, :]).all(axis=2)  # ge[i, j]: i is at least as good as j everywhere
    gt = (k[:, None, :] > k[None, :, :]).any(axis=2)
    dominated = np.asarray((ge & gt).any(axis=0), dtype=bool).tolist()
    return sorted([c for c, d in zip(cands, dominated) if not d], key=lambda c: c.latency_ms)


def _manifest_variants(paths: list[str]) -> tuple[dict[str, tuple[str, Variant, str]], dict[str, str]]:
    """sha256 -> (manifest path, Variant, the manifest's device); and manifest path -> its model's name, when the
    manifests describe more than one model (else empty: labels stay short)."""
    out, models = {}, {}
    for p in paths:
        m = load_manifest(p)
        src = m.source_model or {}
        name = Path(src["path"]).stem if src.get("path") else (src.get("name") or Path(p).parent.name)
        models[str(p)] = (src.get("sha256") or str(Path(p).resolve().parent), name)
        for v in m.variants:
            out[v.sha256] = (str(p), v, m.device)
    if len({key for key, _ in models.values()}) <= 1:
        return out, {}
    names: dict[str, str] = {}
    for p, (key, name) in models.items():
        clash = any(n == name and k != key for k, n in models.values())
        names[p] = f"{name}@{Path(p).resolve().parent.name}" if clash else name
    return out, names


def _compatible(variant, manifest_path: str, manifest_device: str, profile: str, cache: dict) -> bool:
    """The manifest's verdict when it was made for this profile; otherwise re-check the flatbuffer."""
    if profile == manifest_device:
        return variant.compatible
    key = (variant.sha256, profile)
    if key not in cache:
        from .compat import device_problems
        from .flatbuffer import read_model
        from .profiles import load_profile
        from .manifest import variant_file
        path = variant_file(manifest_path, variant)
        cache[key] = not device_problems(read_model(path), load_profile(profile))[0]
    return cache[key]


def gather(store, board: str | None, device: str | None, manifests: list[str] | None, percentile: str,
           include_throttled: bool, include_over_budget: bool = False,
           include_emulated: bool = False, predict: bool = False) -> tuple[list[Candidate], list[str]]:
    """Candidates (one per variant x board x threads x delegate) from the store and the manifests; with `predict`
    (one board) also the manifests' variants never measured there, at their predicted p50."""
    if percentile not in PERCENTILES:
        raise ConfigError(f"--percentile must be one of {', '.join(PERCENTILES)}")
    col = f"{percentile}_ms"
    rows = store.rows(board=board, profile=device, columns=(
        "model_sha256", "board", "profile", "threads", "delegate", "throttled", "manifest_path", col, "mean_ms",
        "n_runs", "emulated"))
    for r in rows:
        r["lat"] = r[col] if r[col] is not None else r["mean_ms"]  # adb (benchmark_model) rows: mean only
    notes = []
    if not rows:
        where = f"board '{board}'" if board else f"boards of profile '{device}'"
        raise ConfigError(f"the store {store.path} has no measurements on {where}; run `edgekit profile` first")
    manifest_paths = manifests or sorted({r["manifest_path"] for r in rows if r["manifest_path"]})
    missing = [p for p in manifest_paths if not Path(p).exists()]
    if missing:
        raise ConfigError(f"manifest {missing[0]} does not exist")
    variants, model_names = _manifest_variants(manifest_paths)
    throttled_skipped = emulated_skipped = 0
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["emulated"] and not include_emulated:
            emulated_skipped += 1
            continue
        if r["throttled"] and not include_throttled:
            throttled_skipped += 1
            continue
        if r["model_sha256"] not in variants:
            continue
        groups.setdefault((r["model_sha256"], r["board"], r["threads"], r["delegate"]), []).append(r)
    if emulated_skipped:
        notes.append(f"{emulated_skipped} measurements taken under emulation (not the hardware's latency) were left "
                     f"out (--include-emulated)")
    if throttled_skipped:
        notes.append(f"{throttled_skipped} measurements taken while throttled were left out (--include-throttled)")
    cands: list[Candidate] = []
    incompatible, over = 0, set()
    fit_cache: dict[tuple, bool] = {}
    for (sha, b, threads, delegate), rs in groups.items():
        mpath, v, mdevice = variants[sha]
        if v.within_budget is False and not include_over_budget:
            over.add(v.name)
            continue
        if not _compatible(v, mpath, mdevice, rs[0]["profile"], fit_cache):
            incompatible += 1
            continue
        lat = float(np.median([r["lat"] for r in rs]))
        cands.append(Candidate(variant=v.name, manifest=mpath, board=b, profile=rs[0]["profile"], threads=threads,
                               delegate=delegate, accuracy=v.accuracy, bytes=v.bytes, gzip_bytes=v.gzip_bytes,
                               latency_ms=lat, measurements=len(rs), runs=sum(r["n_runs"] or 0 for r in rs),
                               model_sha256=sha, model=model_names.get(mpath, ""),
                               emulated=any(r["emulated"] for r in rs)))
        cands[-1].ids = [r["id"] for r in rs]  # for the bootstrap
    if predict:
        notes += _predicted(store, cands, variants, model_names, rows, board, percentile, fit_cache,
                            include_over_budget, over)
    if over:
        notes.append(f"left out as over their accuracy budget: {', '.join(sorted(over))} (--include-over-budget)")
    if incompatible:
        notes.append(f"{incompatible} measured configurations were left out: not compatible with their board's profile")
    return cands, notes


def _predicted(store, cands: list[Candidate], variants: dict, model_names: dict, rows: list[dict],
               board: str | None, percentile: str, fit_cache: dict, include_over_budget: bool,
               over: set) -> list[str]:
    """Candidates for the variants not measured on `board` (XNNPACK, at each thread count its op table has), marked
    predicted; notes on what was predicted and what could not be."""
    from .manifest import variant_file
    from .predict import OpTable, predict as predict_latency
    if not board:
        raise ConfigError("--predict needs --board (a prediction is for one board's op table)")
    if percentile != "p50":
        raise ConfigError("--predict gives p50 latencies only: use --percentile p50")
    measured = {(c.model_sha256, c.threads, c.delegate) for c in cands}
    on_board = [r for r in rows if r["board"] == board]
    profile = on_board[0]["profile"] if on_board else ""
    threads = sorted({r["threads"] for r in on_board}) or [1]
    made, unusable = 0, []
    tables = {t: OpTable.of(store, board, t) for t in threads}  # read once, used for every variant
    for sha, (mpath, v, mdevice) in variants.items():
        for t in threads:
            if (sha, t, "xnnpack") in measured:
                continue
            if v.within_budget is False and not include_over_budget:
                over.add(v.name)
                continue
            if not _compatible(v, mpath, mdevice, profile, fit_cache):
                continue
            p = predict_latency(store, variant_file(mpath, v), board, t, table=tables[t])
            if p.missing or not p.ops_ms:
                unusable.append(f"{v.name} t{t}")
                continue
            cands.append(Candidate(variant=v.name, manifest=mpath, board=board, profile=profile, threads=t,
                                   delegate="xnnpack", accuracy=v.accuracy, bytes=v.bytes, gzip_bytes=v.gzip_bytes,
                                   latency_ms=p.ms, model_sha256=sha, model=model_names.get(mpath, ""),
                                   predicted=True))
            made += 1
    notes = []
    if made:
        notes.append(f"{made} latencies are predicted from board {board}'s op table, not measured (marked "
                     f"'predicted'); measure a choice with `edgekit profile` before shipping it")
    if unusable:
        notes.append(f"no prediction for {', '.join(unusable)}: ops of a kind board {board}'s table has never measured "
                     f"(`edgekit lut build --board {board} --like MODEL`)")
    return notes


def _attach_ci(store, cands: list[Candidate], percentile: str, confidence: float) -> None:
    q = PERCENTILES[percentile]
    for c in cands:
        lat = store.latencies(c.ids)
        if lat:
            c.ci_low_ms, c.ci_high_ms = bootstrap_ci(np.asarray(lat), q, confidence)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x faster" if a > b else f"{b / a:.1f}x slower"


def choose(cands: list[Candidate], budget: Budget, percentile: str) -> tuple[Candidate | None, str]:
    for c in cands:
        c.failed = []
        lat = c.ci_high_ms if (budget.confidence and c.ci_high_ms is not None) else c.latency_ms
        if budget.max_latency_ms is not None:
            if lat > budget.max_latency_ms:
                c.failed.append("latency")
            if c.ci_low_ms is not None and c.ci_high_ms is not None and \
                    c.ci_low_ms <= budget.max_latency_ms < c.ci_high_ms:
                c.straddles_budget = True
        if budget.min_accuracy is not None and (c.accuracy is None or c.accuracy < budget.min_accuracy):
            c.failed.append("accuracy")
        if budget.max_bytes is not None and c.bytes > budget.max_bytes:
            c.failed.append("size")
    ok = sorted([c for c in cands if not c.failed],
                key=lambda c: (-(c.accuracy if c.accuracy is not None else -1), c.latency_ms, c.bytes))
    what = budget.describe(percentile)
    if not ok:
        counts: dict[str, int] = {}
        for c in cands:
            for f in c.failed:
                counts[f] = counts.get(f, 0) + 1
        failing = ", ".join(f"{k} ({n} of {len(cands)})" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))

        def violation(c):
            v = 0.0
            if budget.max_latency_ms is not None:
                v += max(0.0, c.latency_ms / budget.max_latency_ms - 1)
            if budget.min_accuracy is not None:
                v += max(0.0, (budget.min_accuracy - (c.accuracy or 0)) * 10)
            if budget.max_bytes is not None:
                v += max(0.0, c.bytes / budget.max_bytes - 1)
            return v
        near = min(cands, key=violation)
        acc = f"{near.accuracy:.4f}" if near.accuracy is not None else "unknown"
        return None, (f"nothing meets {what}: failing {failing}; closest: {near.label} on {near.board} "
                      f"({near.latency_ms:.3g} ms {percentile}, accuracy {acc}, {near.bytes:,} bytes)")
    best = ok[0]
    reason = f"most accurate {what}" if what != "no budget" else "most accurate"
    if best.accuracy is not None:
        reason += f" (accuracy {best.accuracy:.4f}, {best.latency_ms:.3g} ms {percentile}, {best.bytes:,} bytes)"
    if len(ok) > 1:
        nxt = ok[1]
        if best.accuracy is not None and nxt.accuracy is not None:
            gap = 100 * (best.accuracy - nxt.accuracy)
            acc_text = f"{gap:.1f} points lower" if gap >= 0.05 else "same accuracy"
            reason += f"; next best {nxt.label}: {acc_text}, {_ratio(best.latency_ms, nxt.latency_ms)}"
    if best.predicted:
        reason += "; its latency is predicted, not measured: profile it before shipping"
    if best.straddles_budget:
        reason += "; its confidence interval straddles the latency budget (use --confidence to be strict)"
    return best, reason


def select(store, *, board: str | None = None, device: str | None = None, budget: Budget | None = None,
           percentile: str = "p50", manifests: list[str] | None = None, include_throttled: bool = False,
           include_over_budget: bool = False, include_emulated: bool = False,
           ci_level: float = 0.95, predict: bool = False) -> Decision:
    if not board and not device:
        raise ConfigError("say which target: --board NAME or --device PROFILE")
    budget = budget or Budget()
    if budget.confidence is not None and not 0.5 <= budget.confidence < 1:
        raise ConfigError("--confidence must be between 0.5 and 1, e.g. 0.95")
    if predict and not manifests:
        raise ConfigError("--predict needs --manifest (the variants to predict are the manifests' own)")
    cands, notes = gather(store, board, device, manifests, percentile, include_throttled, include_over_budget,
                          include_emulated, predict)
    if not cands and any("emulation" in n for n in notes):
        raise ConfigError("every measurement on this target was taken under emulation, which says nothing about the "
                          "hardware's latency; pass --include-emulated to choose from them anyway")
    if not cands and any("throttled" in n for n in notes):
        raise ConfigError("every measurement on this target was taken while the board was hot or throttled; "
                          "let it cool and profile again with --force, or pass --include-throttled")
    if not cands:
        raise ConfigError("no measured, compatible variant with a manifest for this target "
                          "(profile the .tflite files of a convert-for-device output folder)")
    front = pareto_front(cands)
    for c in front:
        c.on_front = True
    _attach_ci(store, cands, percentile, budget.confidence or ci_level)
    chosen, reason = choose(cands, budget, percentile)
    target = f"board {board}" if board else f"device {device}"
    cands.sort(key=lambda c: c.latency_ms)
    return Decision(target=target, percentile=percentile, budget=asdict(budget), candidates=cands,
                    front=[c.label + f" @ {c.board}" for c in front], chosen=chosen, reason=reason, notes=notes)
