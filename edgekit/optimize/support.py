"""Which layers TF-MOT can optimize, decided by class in one place: pruning wraps only layers with prunable
weights, and every other layer is left as it is with the reason recorded (never TF-MOT's raw refusal)."""
from __future__ import annotations

from ..layers import kind_of


def _prune_registry():
    from .._tf import tfmot  # noqa: F401 - imports TF-MOT with the right Keras
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry
    return prune_registry.PruneRegistry


def prune_skip_reason(layer, m_by_n: bool = False) -> str | None:
    """None when pruning can wrap `layer`; otherwise why it is left as it is."""
    from .._tf import tfmot
    kind, label = kind_of(layer), type(layer).__name__
    if isinstance(layer, tfmot.sparsity.keras.PrunableLayer):
        return None
    if not layer.weights:
        return f"{label}: no weights to prune"
    registry = _prune_registry()
    if not registry.supports(layer):
        return f"{label}: TF-MOT cannot prune this layer class"
    if not registry._LAYERS_WEIGHTS_MAP.get(layer.__class__):  # e.g. BatchNormalization: nothing to prune
        return f"{label}: no prunable weights"
    if m_by_n and kind not in ("Conv2D", "Dense"):
        return f"{label}: 2:4 structure applies to Conv2D and Dense kernels only"
    return None


def skipped_layers(model, reason_of) -> dict[str, str]:
    """layer name -> reason, for every layer `reason_of` refuses."""
    out = {}
    for layer in model.layers:
        why = reason_of(layer)
        if why:
            out[layer.name] = why
    return out


# -- quantization-aware training -----------------------------------------------------------------------------------
_FOLDED_BY_TFMOT = ("Conv2D", "DepthwiseConv2D")  # TF-MOT folds a BatchNormalization that directly follows these


def _qat_registry():
    from .._tf import tfmot  # noqa: F401
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import \
        default_8bit_quantize_registry as r
    return r.Default8BitQuantizeRegistry()


def output_quantize_config():
    """A QuantizeConfig for layers TF-MOT has none for (Rescaling, Normalization, Multiply, a standalone
    BatchNormalization, ...): weights stay as they are (the converter folds or quantizes them), the output gets an
    8-bit fake-quant so QAT sees the same rounding the int8 model will have."""
    from .._tf import tfmot
    q = tfmot.quantization.keras

    class OutputQuantizeConfig(q.QuantizeConfig):
        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [q.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                        narrow_range=False)]

        def get_config(self):
            return {}
    return OutputQuantizeConfig


def noop_quantize_config():
    """For layers left float: annotated all the same (TF-MOT's collaborative schemes ask every layer for a
    config), but with no quantizer at all."""
    base = output_quantize_config()

    class NoOpQuantizeConfig(base):
        def get_output_quantizers(self, layer):
            return []
    return NoOpQuantizeConfig


def _bn_follows_foldable(layer) -> bool:
    """A BatchNormalization right after a Conv2D/DepthwiseConv2D with no activation of its own, used by nothing
    else: TF-MOT folds it (its fold pattern asks `activation: linear`; Conv2D(activation='relu') -> BN is not
    folded and must get a QuantizeConfig of ours)."""
    parent = _conv_before(layer)
    if parent is None or parent.get_config().get("activation", "linear") != "linear":
        return False
    return len(getattr(parent, "_outbound_nodes", [])) == 1


def _conv_before(layer):
    """The Conv2D/DepthwiseConv2D that is `layer`'s only input, or None."""
    nodes = getattr(layer, "_inbound_nodes", [])
    if len(nodes) != 1:
        return None
    parents = nodes[0].inbound_layers
    parents = parents if isinstance(parents, list) else [parents]
    return parents[0] if len(parents) == 1 and type(parents[0]).__name__ in _FOLDED_BY_TFMOT else None


PREPROCESSING = ("Rescaling", "Normalization")


def _preprocesses_input(layer) -> bool:
    """Whether `layer` reads the model's input directly or through other preprocessing layers only."""
    nodes = getattr(layer, "_inbound_nodes", None) or []
    if len(nodes) != 1:
        return False
    inbound = nodes[0].inbound_layers
    inbound = inbound if isinstance(inbound, (list, tuple)) else [inbound]
    return bool(inbound) and all(kind_of(i) == "InputLayer" or (kind_of(i) in PREPROCESSING and _preprocesses_input(i))
                                 for i in inbound)


# int8 pooling ops whose output must have their input's scale.  TF-MOT gives AveragePooling2D a range of its own,
# which an average makes narrower than its input's: the converter then requantizes the pool's input into that
# range, clipping what a max pool beside it reads too (NASNetMobile: 0.972 in Keras QAT, 0.814 as int8).
SAME_SCALE_POOLS = ("AveragePooling1D", "AveragePooling2D", "AveragePooling3D")


def qat_plan(layer) -> tuple[str, str | None]:
    """How QAT treats `layer`: ("tfmot", None) annotated as TF-MOT would, ("output", why) with our output-only
    QuantizeConfig, ("shared", why) annotated with no quantizer (its int8 output takes its input's scale), or
    ("float", why) left float during training (the int8 converter calibrates it)."""
    kind = kind_of(layer)
    if kind == "InputLayer":
        return "skip", None
    if kind == "BatchNormalization":
        if _bn_follows_foldable(layer):
            return "tfmot", None
        why = ("after a conv with its own activation (TF-MOT folds only a linear conv)"
               if _conv_before(layer) is not None else "without a conv before it")
        return "output", f"BatchNormalization {why}: output fake-quantized, folded at conversion"
    if kind in PREPROCESSING and _preprocesses_input(layer):
        return "float", (f"{kind} on the model's input: left float in training, quantized by the converter from "
                         f"calibration, so the model stays integer from its input (no DEQUANTIZE/QUANTIZE pair)")
    if kind == "SeparableConv2D":  # not in TF-MOT's registry, but its layout transform splits an annotated one
        return "tfmot", ("SeparableConv2D: split by TF-MOT into DepthwiseConv2D + 1x1 Conv2D for QAT (the same "
                         "outputs), so both halves are quantized and keep their zeros and clusters")
    if kind in SAME_SCALE_POOLS:
        return "shared", (f"{kind}: no fake-quant of its own on the output (as TF-MOT does for MaxPooling2D): "
                          f"the int8 op shares its input's scale, and its own narrower range made the converter "
                          f"requantize, and clip, the pool's input")
    if kind == "TFOpLambda":
        fn = layer.get_config().get("function")
        return "float", f"TFOpLambda ({fn}): left float in training; the converter quantizes it from calibration"
    try:
        registry = _qat_registry()
        if registry.supports(layer):
            registry.get_quantize_config(layer)
            return "tfmot", None
    except (ValueError, KeyError, RuntimeError):
        pass
    if kind in ("Rescaling", "Normalization", "Multiply", "Reshape", "ZeroPadding2D", "Dropout", "Activation",
                "Add", "Subtract", "Concatenate", "Flatten", "Permute", "Cropping2D", "UpSampling2D", "Maximum",
                "Minimum", "Average", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "LayerNormalization"):
        return "output", f"{kind}: output fake-quantized (edgekit's QuantizeConfig)"
    return "float", f"{kind}: TF-MOT has no QuantizeConfig; left float in training, quantized by the converter"
