"""Quantization-aware training, with TF-MOT's collaborative schemes so sparsity / clusters survive it."""
from __future__ import annotations

import re

from ..data import Dataset
from ..errors import OptimizationError
from .train import fine_tune, outputs_probabilities


def _scheme(name: str):
    from .._tf import tfmot
    if name == "PQAT":
        return tfmot.quantization.keras.collab_opts.Default8BitPrunePreserveQuantizeScheme()
    if name == "CQAT":
        return tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=False)
    if name == "PCQAT":
        return tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)
    return None


def _apply(model, scheme_name: str):
    from .._tf import tfmot
    q = tfmot.quantization.keras
    try:
        annotated = q.quantize_annotate_model(model)
        scheme = _scheme(scheme_name)
        with q.quantize_scope():
            return q.quantize_apply(annotated, scheme) if scheme is not None else q.quantize_apply(annotated)
    except (ValueError, RuntimeError, TypeError) as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        m = re.search(r"Layer (\S+):<class '[\w.]*?(\w+)'> is not supported", text)
        if m:
            text = (f"layer '{m.group(1)}' ({m.group(2)}) is not supported; give it a QuantizeConfig through "
                    f"tfmot's quantize_annotate_layer or choose a recipe without QAT")
        raise OptimizationError(f"quantization-aware training cannot quantize this model: {text[:400]}") from e


def preflight(model) -> None:
    """Fail fast (before any training) on a layer QAT cannot quantize."""
    from ..modelio import clone
    _apply(clone(model), "QAT")


def qat(model, cfg: dict, data: Dataset, scheme_name: str, teacher=None, distill=None):
    """Return (a quantization-aware-trained copy of `model` (still wrapped; the converter reads it), details)."""
    from ..modelio import clone
    qmodel = _apply(clone(model), scheme_name)
    fit = fine_tune(qmodel, data, epochs=int(cfg.get("epochs", 3)), lr=1e-4,
                    probabilities=outputs_probabilities(model), teacher=teacher, distill=distill)
    return qmodel, {"fit": fit}
