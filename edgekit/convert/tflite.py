"""The TFLite converter in each quantization mode a recipe can ask for."""
from __future__ import annotations

import re

import numpy as np

from ..data import CALIBRATION_SAMPLES, Dataset
from ..errors import ConversionError


def representative_dataset(data: Dataset, n: int = CALIBRATION_SAMPLES):
    x = data.sample(n).x.astype(np.float32)

    def gen():
        for i in range(x.shape[0]):
            yield [x[i:i + 1]]
    return gen


def _converter(model, static_batch: bool):
    from .._tf import tf
    if not static_batch:
        return tf.lite.TFLiteConverter.from_keras_model(model)
    spec = model.inputs[0]
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([1, *spec.shape[1:]], spec.dtype, name="input"))
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], variables_holder(model))


def variables_holder(model):
    """What tracks a model's variables for the converter and for a SavedModel: the model itself, or for a Keras 3
    model a tf.Module holding them.  Handed a Keras 3 model, neither the converter nor a SavedModel freezes its
    variables: they stayed READ_VARIABLE ops, so int8 calibration failed (EfficientNetB0 for coral) and a float
    flatbuffer read uninitialized weights (DenseNet121 converted in a child process: accuracy 0.11)."""
    from .._tf import tf
    from ..keras3 import is_keras3_model
    if not is_keras3_model(model):
        return model
    holder = tf.Module()
    holder.tf_variables = [getattr(v, "value", v) for v in model.variables]
    return holder


def convert(model, mode: str, io: str = "float32", calibration: Dataset | None = None,
            static_batch: bool = False, stats: dict | None = None, rebuild: tuple | None = None,
            dense_per_tensor: bool = False) -> bytes:
    """Convert a tf_keras model; returns the flatbuffer bytes.  `static_batch` fixes the batch at 1.  A large
    model is converted in a child process with a memory and time limit (`convert.isolated`; its peak memory goes
    into `stats`; `rebuild`: (the model before QAT, the QAT scheme) when `model` is a QAT model, so the child
    rebuilds and traces it instead of this process).  `dense_per_tensor`: dynamic range with one weight scale per
    dense layer instead of one per output channel (FULLY_CONNECTED v9 instead of v12, which runtimes before 2.17,
    such as tflite-runtime 2.14, cannot load)."""
    if len(model.inputs) != 1:
        raise ConversionError(f"models with {len(model.inputs)} inputs are not supported yet (one input)")
    if mode in ("int8", "int16x8") and calibration is None:
        raise ConversionError(f"{mode} quantization needs calibration data (--calibration or --train)")
    from .isolated import convert_isolated, isolate
    if isolate(model):
        return convert_isolated(model, mode, io, calibration, static_batch, stats, rebuild, dense_per_tensor)
    return finish(_converter(model, static_batch), mode, io, calibration, dense_per_tensor)


def convert_loadable(model, mode: str, io: str, calibration: Dataset | None, static_batch: bool, runtime,
                     stats: dict | None = None, rebuild: tuple | None = None) -> tuple[bytes, str | None]:
    """`convert`, and when `runtime` (a device profile's) cannot load a dynamic-range model (per-channel dense
    weights, FULLY_CONNECTED v12, need 2.17), again with one weight scale per dense layer (v9), kept if the runtime
    loads that: (flatbuffer, compat.DENSE_PER_TENSOR when so built, else None)."""
    from ..compat import DENSE_PER_TENSOR, unloadable
    first = convert(model, mode, io, calibration, static_batch, stats, rebuild)
    if mode != "dynamic" or not unloadable(first, runtime):
        return first, None
    per_tensor = convert(model, mode, io, calibration, static_batch, stats, rebuild, dense_per_tensor=True)
    return (first, None) if unloadable(per_tensor, runtime) else (per_tensor, DENSE_PER_TENSOR)


def finish(conv, mode: str, io: str, calibration: Dataset | None, dense_per_tensor: bool = False) -> bytes:
    """Set a converter up for `mode` and `io` and run it (here, or in the isolated child)."""
    from .._tf import tf
    from .._quiet import captured_stderr
    if mode != "float32":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if dense_per_tensor:
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    if mode == "float16":
        conv.target_spec.supported_types = [tf.float16]
    elif mode in ("int8", "int16x8"):
        if calibration is None:
            raise ConversionError(f"{mode} quantization needs calibration data (--calibration or --train)")
        conv.representative_dataset = representative_dataset(calibration)
        if mode == "int8":
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if io in ("int8", "uint8"):
                conv.inference_input_type = conv.inference_output_type = getattr(tf, io)
        else:
            conv.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
            if io == "int16":
                conv.inference_input_type = conv.inference_output_type = tf.int16
    try:
        with captured_stderr((1, 2)):  # also what the converter prints about a Keras 3 model's export
            return conv.convert()
    except Exception as e:
        raise ConversionError(f"TFLite converter failed ({mode}): {converter_error(str(e)) or type(e).__name__}") \
            from e


_AT = re.compile(r'fused\["[^"]*", "([^"@]+)@')
_OP = re.compile(r"'(tfl\.\w+)' op ([^:!]+)")


def converter_error(text: str) -> str:
    """The converter's error in one line, naming the Keras layer where MLIR's location gives it: `fused["AvgPool:",
    "densenet121/quant_pool2_pool/AvgPool@..."]` -> at layer 'pool2_pool'."""
    lines = [ln for ln in text.splitlines() if "error" in ln.lower()] or text.splitlines()
    first = lines[0].strip() if lines else ""
    at, op = _AT.search(first), _OP.search(first)
    if at and op:
        parts = at.group(1).split("/")
        layer = (parts[1] if len(parts) > 2 else parts[0]).removeprefix("quant_")  # QAT's wrapper
        return f"at layer '{layer}' ({op.group(1)}): {op.group(2).strip()}"
    return first[:400]


def convert_selective(model, calibration: Dataset, keep_float: list[str], static_batch: bool = False) -> bytes:
    """int8 with the ops producing the tensors named in `keep_float` left in float (LiteRT's quantization
    debugger, `denylisted_nodes`); inputs and outputs stay float32."""
    from .._tf import tf
    from .._quiet import captured_stderr
    conv = _converter(model, static_batch)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative_dataset(calibration)
    try:
        with captured_stderr((1, 2)):
            opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(keep_float))
            dbg = tf.lite.experimental.QuantizationDebugger(
                converter=conv, debug_dataset=representative_dataset(calibration), debug_options=opts)
            return dbg.get_nondebug_quantized_model()
    except Exception as e:
        raise ConversionError(f"selective int8 conversion failed: {converter_error(str(e)) or type(e).__name__}") \
            from e
