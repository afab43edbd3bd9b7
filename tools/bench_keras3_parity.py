"""Does a Keras 3 model go through the TF-MOT recipes as the same model in tf_keras does?  Per keras.applications
family: the tf_keras model (weights=None, seeded), its Keras 3 twin (weights copied, outputs checked equal), and
edgekit's tf_keras rebuild of the twin; the rebuild's layer kinds against the tf_keras model's, and the largest
weight difference after both fine-tune one epoch with edgekit's own fine-tune.  Minutes, where the zoo's Keras 3
cells (tools/bench_zoo.py --keras3) take hours to show the same through whole recipes.

    python tools/bench_keras3_parity.py [--models MobileNetV2,EfficientNetB0,...] [--samples 256]

0 means the two fine-tunes are the same to the bit; a tiny difference (1e-4) can come from the order in which
gradients of a tensor read by several layers are summed, when Keras 3's application builds its branches in
another order."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zoo

GOAL = 1e-3  # largest weight difference after one epoch that still counts as "fine-tunes alike"


def parity(name: str, samples: int) -> list:
    t0 = time.perf_counter()
    same_kinds, dropouts, diff = zoo.keras3_fine_tune_gap(name, samples)
    return [name, "yes" if same_kinds else "NO", str(dropouts), f"{diff:.3g}", f"{time.perf_counter() - t0:.0f}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(zoo.APPLICATIONS))
    ap.add_argument("--samples", type=int, default=256, help="training samples of the one-epoch fine-tune")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    head = ["model", "same layer kinds", "Dropout layers", "max weight diff after 1 epoch", "s"]
    rows = []
    for name in args.models.split(","):
        rows.append(parity(name, args.samples))
        print("# " + " | ".join(rows[-1]), file=sys.stderr, flush=True)
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for r in [head, ["-" * w for w in widths]] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    bad = [r[0] for r in rows if r[1] != "yes" or float(r[3]) > GOAL]
    print(f"\n{'MISS' if bad else 'ok'}: {len(rows) - len(bad)} of {len(rows)} families rebuilt with the same layers "
          f"and fine-tuned within {GOAL:g} of tf_keras" + (f" (not: {', '.join(bad)})" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
