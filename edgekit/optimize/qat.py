"""Quantization-aware training, with TF-MOT's collaborative schemes so sparsity / clusters survive it."""
from __future__ import annotations

import re

from ..data import Dataset
from ..errors import OptimizationError
from .steps import Qat
from .train import fine_tune, outputs_probabilities


def vectorize_per_channel_clustering() -> None:
    """TF-MOT's per-channel clustering (what CQAT/PCQAT use on every Conv2D whose channels hold equally many distinct
    values, i.e. after clustering) loops over the output channels in Python, several ops per channel, forward and
    backward.  ResNet50V2 has ~25,000 of them: tracing its training step took over 30 minutes in one thread and
    ~20 GB for the graph alone.  The same computation as batched ops (one argmin, one gather with batch_dims), same
    results and gradients; other aggregations keep TF-MOT's own code."""
    from tensorflow_model_optimization.python.core.clustering.keras import clustering_algorithm as ca
    cls = ca.ClusteringAlgorithmPerChannel
    if getattr(cls, "_edgekit_vectorized", False):
        return
    from .._tf import tf
    original = cls.get_clustered_weight

    def perms(self):  # (to channels first, back); the channel axis is TF-MOT's choice for the data format
        return ((1, 0, 2, 3), (1, 0, 2, 3)) if self.data_format == "channels_first" else ((3, 0, 1, 2), (1, 2, 3, 0))

    def get_pulling_indices(self, weight):
        to_c, back = perms(self)
        w = tf.transpose(weight, perm=to_c)  # [C, a, b, c]
        centroids = tf.reshape(self.cluster_centroids, [tf.shape(self.cluster_centroids)[0], 1, 1, 1, -1])
        return tf.transpose(tf.argmin(tf.abs(tf.expand_dims(w, -1) - centroids), axis=-1), perm=back)

    def get_clustered_weight(self, pulling_indices, original_weight):
        if self.cluster_gradient_aggregation != ca.GradientAggregation.SUM:
            return original(self, pulling_indices, original_weight)
        to_c, back = perms(self)
        idx = tf.transpose(pulling_indices, perm=to_c)
        clustered = tf.transpose(tf.gather(self.cluster_centroids, idx, batch_dims=1), perm=back)
        return self.add_gradient_to_original_weight(clustered, tf.identity(original_weight))

    cls._edgekit_loop = (cls.get_pulling_indices, original)  # TF-MOT's own, for the test that compares them
    cls.get_pulling_indices = get_pulling_indices
    cls.get_clustered_weight = get_clustered_weight
    cls._edgekit_vectorized = True


_RELU_AFTER: set[str] = set()  # layers of the model being wrapped whose output a ReLU layer takes (see below)


def quantize_weights_before_relu() -> None:
    """TF-MOT's LayerReLUQuantize gives a Conv2D / DepthwiseConv2D / Dense that a standalone ReLU (or
    Activation('relu')) follows a NoOpQuantizeConfig, meant only to keep a fake-quant off the tensor between them:
    that also leaves the layer's weights out of QAT, so under PQAT / CQAT / PCQAT they train freely and lose their
    zeros and clusters (MobileNetV3's squeeze-excite convs: 95% sparsity pruned, 36% left in the int8 model).  Such
    a layer now gets its registry's config (the scheme's weight quantizer) without the output quantizer
    (`_KnownOnly`), so the tensor before the ReLU stays unquantized as TF-MOT intended.  Installed once."""
    from .._tf import tfmot  # noqa: F401
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import \
        default_8bit_transforms as t
    cls = t.LayerReLUQuantize
    if getattr(cls, "_edgekit_weights_kept", False):
        return
    original = cls.replacement

    def replacement(self, match_layer):
        node = match_layer.input_layers[0]
        if node.layer["class_name"] in ("Conv2D", "DepthwiseConv2D", "Dense"):
            _RELU_AFTER.add(node.layer["config"]["name"])
            node.metadata["quantize_config"] = None  # the registry's, through _KnownOnly
            return match_layer
        return original(self, match_layer)
    cls.replacement = replacement
    cls._edgekit_weights_kept = True


def _scheme(name: str):
    from .._tf import tfmot
    vectorize_per_channel_clustering()
    quantize_weights_before_relu()
    if name == "PQAT":
        scheme = tfmot.quantization.keras.collab_opts.Default8BitPrunePreserveQuantizeScheme()
    elif name == "CQAT":
        scheme = tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=False)
    elif name == "PCQAT":
        scheme = tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)
    else:
        scheme = tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()
    inner = scheme.get_quantize_registry
    scheme.get_quantize_registry = lambda: _KnownOnly(inner())
    return scheme


class _KnownOnly:
    """The collaborative schemes' registries say they support any layer, then fail inside TF-MOT's default
    registry (e.g. on a TFOpLambda that follows a quantized layer); ask the default registry first."""

    def __init__(self, inner):
        from .support import _qat_registry
        self._inner, self._default = inner, _qat_registry()

    def supports(self, layer):
        return self._default.supports(layer) and self._inner.supports(layer)

    def get_quantize_config(self, layer):
        """TF-MOT's cluster-preserving registry hands every Conv2D (and every Dense) one shared weight quantizer, and
        that quantizer switches `preserve_sparsity` off for good when it meets a layer with no zero weights: one
        unpruned conv then wipes every other conv's sparsity during PCQAT. Each layer gets its own copy."""
        import copy
        config = self._inner.get_quantize_config(layer)
        if getattr(config, "weight_quantizer", None) is not None and hasattr(config.weight_quantizer,
                                                                            "preserve_sparsity"):
            config.weight_quantizer = copy.copy(config.weight_quantizer)
        if layer.name in _RELU_AFTER and hasattr(config, "activation_attrs"):  # quantize_weights_before_relu
            config = copy.copy(config)
            config.activation_attrs, config.quantize_output = [], False
        return config

    def __getattr__(self, name):
        return getattr(self._inner, name)


def _annotate(model):
    """Annotate what TF-MOT supports as it would, give the usual rest (Rescaling, Multiply, standalone
    BatchNormalization, ...) our output-only QuantizeConfig, leave the remainder float; returns (model, notes)."""
    from .._tf import keras, tfmot
    from .support import noop_quantize_config, output_quantize_config, qat_plan
    q = tfmot.quantization.keras
    config_class, noop_class = output_quantize_config(), noop_quantize_config()
    notes = {}

    def per_layer(layer):
        how, why = qat_plan(layer)
        if why:
            notes[layer.name] = why
        if how == "tfmot":
            return q.quantize_annotate_layer(layer)
        if how == "output":
            return q.quantize_annotate_layer(layer, quantize_config=config_class())
        if how == "shared":
            return q.quantize_annotate_layer(layer, quantize_config=noop_class())
        return layer
    annotated = keras.models.clone_model(model, clone_function=per_layer)
    return annotated, notes, {"OutputQuantizeConfig": config_class, "NoOpQuantizeConfig": noop_class}


def _apply(model, scheme_name: str):
    """Returns (QAT model, {layer: how it was handled when not plainly by TF-MOT})."""
    from .._tf import tfmot
    q = tfmot.quantization.keras
    try:
        annotated, notes, configs = _annotate(model)
        scheme = _scheme(scheme_name)
        _RELU_AFTER.clear()
        with q.quantize_scope(configs):
            out = q.quantize_apply(annotated, scheme)
        return out, notes
    except (ValueError, RuntimeError, TypeError, KeyError, AttributeError) as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        m = re.search(r"Layer (\S+):<class '[\w.]*?(\w+)'> is not supported", text)
        m2 = re.search(r"unsupported layer <class '[\w.]*?(\w+)'>", text)
        m3 = re.search(r"Unknown layer: '(\w+)'", text)
        if m3:
            text = (f"layer class {m3.group(1)} is the model's own and not registered with Keras "
                    f"(keras.utils.register_keras_serializable), so TF-MOT cannot rebuild the model around it")
        elif m:
            text = f"layer '{m.group(1)}' ({m.group(2)}) is not supported"
        elif m2:
            text = f"layer class {m2.group(1)} is not supported"
        raise OptimizationError(f"quantization-aware training cannot quantize this model: {text[:300]}") from e


def preflight(model, scheme: str = "QAT") -> None:
    """Fail fast (before any training) on a layer QAT cannot quantize, or a model too large to train here.  Wrapping
    a 900-layer model (NASNetMobile) takes a minute, so the verdict is remembered in edgekit's cache by the
    architecture (no weights: wrapping depends on the layers only) and the TensorFlow / TF-MOT / edgekit versions:
    the same model converted for a second device, or again, is checked in a second."""
    from .. import __version__, cache
    from .._tf import tf, tfmot
    from ..modelio import clone
    check_memory(model, scheme, "before any training")
    key = cache.new_hash("qat-preflight", __version__, tf.__version__, getattr(tfmot, "__version__", ""),
                         model.to_json()).hexdigest()
    hit = cache.read("preflight", key)
    if hit is not None and "error" in hit:
        raise OptimizationError(str(hit["error"]))
    if hit is not None:
        return
    try:
        _apply(clone(model), "QAT")  # no training
    except OptimizationError as e:
        cache.write("preflight", key, {"error": str(e)})
        raise
    cache.write("preflight", key, {"ok": True})


# The whole process's peak during QAT training, per parameter, measured: plain QAT 54 and PQAT 43 bytes over the
# process before it (an 11.8M-parameter conv model); the cluster-preserving schemes' quantizer keeps per-weight
# state: PCQAT 265 there, and ResNet50V2 (23.6M parameters) peaked at 5,118 MB (175 per parameter) once its
# per-channel clustering ran as batched ops (with TF-MOT's loop over channels: 19,965 MB).
BASE_MB = 1000
BYTES_PER_PARAM = {"QAT": 60, "PQAT": 60, "CQAT": 300, "PCQAT": 300}


def memory_needed_mb(params: int, scheme: str) -> float:
    return BASE_MB + params * BYTES_PER_PARAM.get(scheme, 300) / 1e6


def check_memory(model, scheme: str, when: str) -> None:
    """ResourceLimitError when QAT of this model would need more memory than this process can have (what it holds
    now plus what the machine has available): the recipe fails alone with one line instead of the kernel's
    out-of-memory killer ending the whole run."""
    import os

    from ..errors import ResourceLimitError
    from ..memory import allowed_mb, available_mb, rss_mb
    params = int(model.count_params())
    need = memory_needed_mb(params, scheme)
    free, held, cap = available_mb(), rss_mb(os.getpid()), allowed_mb()
    machine = free + held if free is not None and held is not None else None
    limits = [x for x in (machine, cap) if x is not None]
    if not limits or need <= min(limits):
        return
    can = min(limits)
    raise ResourceLimitError(f"{scheme} training of {params:,} parameters needs about {need:,.0f} MB "
                             f"(measured {BYTES_PER_PARAM.get(scheme, 300)} bytes per parameter); this process can "
                             f"have {can:,.0f} MB {when}" + (" (EDGEKIT_MEMORY_MB)" if can == cap else ""))


WARM_BATCHES, WARM_BATCH = 8, 32


def warm_ranges(qmodel, data: Dataset) -> None:
    """Set every activation range from the data before QAT trains.  TF-MOT starts each range at [-6, 6] and moves
    it by an EMA of decay 0.999 per step, so over a fine-tune of a few hundred steps it stays near [-6, 6]: a tensor
    that lives in [0, 0.004] (EfficientNet's Rescaling(1/255) on [0, 1] input) then quantizes to zero and the model
    collapses to chance (0.85 -> 0.10 before any training).  Forward passes in training mode (no weight update)
    with a fast EMA instead: the first batch sets each range, the next ones average in at decay 0.5."""
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops
    original = quant_ops.MovingAvgQuantize
    x = data.sample(WARM_BATCHES * WARM_BATCH).x.astype("float32")
    try:
        for i, start in enumerate(range(0, len(x), WARM_BATCH)):
            decay = 0.0 if i == 0 else 0.5

            def fast(*args, _decay=decay, **kwargs):
                kwargs["ema_decay"] = _decay
                return original(*args, **kwargs)
            quant_ops.MovingAvgQuantize = fast
            qmodel(x[start:start + WARM_BATCH], training=True)
    finally:
        quant_ops.MovingAvgQuantize = original


def qat(model, cfg: Qat, data: Dataset, scheme_name: str, teacher=None, distill=None):
    """Return (a quantization-aware-trained copy of `model` (still wrapped; the converter reads it), details)."""
    from ..modelio import clone
    check_memory(model, scheme_name, "now")
    qmodel, notes = _apply(clone(model), scheme_name)
    warm_ranges(qmodel, data)
    fit = fine_tune(qmodel, data, epochs=cfg.epochs, lr=1e-4,
                    probabilities=outputs_probabilities(model), teacher=teacher, distill=distill)
    details = {"fit": fit}
    if notes:
        details["layers_handled"] = notes
    return qmodel, details
