import json
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from edgekit.select import Budget, Candidate, bootstrap_ci, choose, pareto_front


def cand(name, acc, lat, size, lo=None, hi=None):
    return Candidate(variant=name, manifest="m.json", board="b", profile="local", threads=1, delegate="xnnpack",
                     accuracy=acc, bytes=size, gzip_bytes=size, latency_ms=lat, ci_low_ms=lo, ci_high_ms=hi)


def test_pareto_front_drops_dominated_variants():
    a, b, c, d = cand("a", 0.98, 10, 100), cand("b", 0.97, 5, 50), cand("c", 0.96, 6, 60), cand("d", 0.99, 20, 400)
    front = {x.variant for x in pareto_front([a, b, c, d])}
    assert front == {"a", "b", "d"}  # c is worse than b on every axis


def test_choice_under_budget_explains_itself():
    cs = [cand("fp32", 0.981, 9.0, 400), cand("int8", 0.979, 3.0, 100), cand("pcqat", 0.975, 2.9, 40)]
    best, reason = choose(cs, Budget(max_latency_ms=5), "p90")
    assert best.variant == "int8"
    assert reason.startswith("most accurate under 5 ms p90") and "next best pcqat t1: 0.4 points lower" in reason
    best, _ = choose(cs, Budget(max_latency_ms=5, max_bytes=50), "p90")
    assert best.variant == "pcqat"


def test_nothing_meets_the_budget_names_the_constraint_and_the_closest():
    cs = [cand("fp32", 0.981, 9.0, 400), cand("int8", 0.979, 3.0, 100)]
    best, reason = choose(cs, Budget(max_latency_ms=2, min_accuracy=0.9), "p50")
    assert best is None
    assert "failing latency (2 of 2)" in reason and "closest: int8 t1" in reason


def test_confidence_uses_the_upper_bound_and_marks_straddlers():
    cs = [cand("edge", 0.98, 4.8, 100, lo=4.5, hi=5.3), cand("safe", 0.97, 3.0, 100, lo=2.9, hi=3.1)]
    best, reason = choose(cs, Budget(max_latency_ms=5), "p50")
    assert best.variant == "edge" and best.straddles_budget and "straddles" in reason
    best, _ = choose(cs, Budget(max_latency_ms=5, confidence=0.95), "p50")
    assert best.variant == "safe"


def test_bootstrap_interval_covers_the_percentile():
    x = np.random.default_rng(1).gamma(4.0, 0.5, 2000)
    lo, hi = bootstrap_ci(x, 90)
    assert lo < np.percentile(x, 90) < hi and hi - lo < 0.5


@pytest.fixture(scope="module")
def profiled(rpi4_manifest, tmp_path_factory):
    """The rpi4 variants measured on the local board (real runner, real store)."""
    out = rpi4_manifest[1]
    tmp = tmp_path_factory.mktemp("sel")
    store = tmp / "s.db"
    models = [out / f"{n}.tflite" for n in ("fp32", "dynamic", "int8", "pruned-int8", "pcqat-int8")]
    proc = run_cli("profile", *models, "--board", "local", "--threads", "1", "--runs", "200", "--store", store,
                   env={"HOME": str(tmp)})
    assert proc.returncode == 0, proc.stderr
    return store, out


def test_select_end_to_end_with_plot_and_json(profiled, tmp_path):
    store, _out = profiled
    plot = tmp_path / "front.png"
    proc = run_cli("select", "--board", "local", "--store", store, "--plot", plot, "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    names = {c["variant"] for c in d["candidates"]}
    assert names == {"fp32", "dynamic", "int8", "pruned-int8", "pcqat-int8"}  # dynamic runs on `local`
    assert d["chosen"]["accuracy"] == max(c["accuracy"] for c in d["candidates"])
    assert all(c["ci_low_ms"] <= c["latency_ms"] <= c["ci_high_ms"] for c in d["candidates"])
    assert d["front"] and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_select_under_a_size_budget_and_an_impossible_one(profiled):
    store, _ = profiled
    proc = run_cli("select", "--board", "local", "--store", store, "--max-bytes", "50000", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["chosen"]["variant"] in {"pcqat-int8", "dynamic"}
    proc = run_cli("select", "--board", "local", "--store", store, "--max-latency-ms", "0.000001")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "nothing meets under 1e-06 ms p50: failing latency (5 of 5)" in proc.stdout


def test_select_bad_input(profiled, tmp_path):
    store, _ = profiled
    assert_one_line_error(run_cli("select", "--board", "nope", "--store", store), "no measurements on board 'nope'")
    assert_one_line_error(run_cli("select", "--board", "local", "--store", tmp_path / "x.db"), "does not exist")
    assert_one_line_error(run_cli("select", "--board", "local", "--store", store, "--manifest",
                                  tmp_path / "m.json"), "does not exist")


def test_report_is_self_contained_and_renders_in_chromium(profiled, tmp_path):
    import re
    import shutil
    import subprocess
    store, _ = profiled
    proc = run_cli("report", "--store", store, "--out", tmp_path / "rep", "--json")
    assert proc.returncode == 0, proc.stderr
    paths = json.loads(proc.stdout)
    page = Path(paths["html"]).read_text()
    assert "data:image/png;base64," in page and "Chosen:" in page and "Fingerprint" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page must not load anything from a network"
    md = Path(paths["markdown"]).read_text()
    assert md.startswith("# edgekit report") and "## Board local" in md and "## Variants" in md
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (`make test` installs it when root)")
    shot = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600", f"--screenshot={shot}",
                    f"file://{paths['html']}"], capture_output=True, timeout=120)
    from PIL import Image
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 1600)
    colours = img.getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 50, "a rendered report has text, tables and a plot, not a blank page"
