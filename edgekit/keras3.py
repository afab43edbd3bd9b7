"""Keras 3 models: loaded with Keras 3 itself (post-training recipes convert them directly), and rebuilt as an
equivalent tf_keras model, layer by layer with the weights copied, for the TF-MOT recipes (TF-MOT has no Keras 3
support).  The rebuild is checked to give the same outputs before any training."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ModelLoadError, OptimizationError

TOLERANCE = 1e-4  # max |difference| of the rebuilt model's outputs on the calibration samples
_KERAS3_ONLY = ("lora_rank", "lora_alpha", "lora_enabled", "quantization_config", "synchronized")


def _keras3():
    from . import _tf  # noqa: F401 - TensorFlow first, with tf_keras for tf.keras
    import keras
    return keras


def is_keras3_model(model) -> bool:
    return type(model).__module__.startswith("keras.") or type(model).__module__ == "keras"


def load(path: Path):
    keras = _keras3()
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"model {path}: cannot load with Keras 3 ({first[:300]})") from e
    if not isinstance(model, keras.Model):
        raise ModelLoadError(f"model {path}: loaded object is not a Keras model")
    return model


def _plain(value):
    """Keras 3 config values tf_keras reads differently: dtype policies become their names."""
    if isinstance(value, dict) and value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
        return value.get("config", {}).get("name", "float32")
    return value


def _activation_name(op) -> str | None:
    act = op.get_config().get("activation")
    if isinstance(act, dict):  # a serialized function
        act = act.get("config", {}).get("name") if isinstance(act.get("config"), dict) else act.get("config")
    return act if isinstance(act, str) else None


def _hard_sigmoid(name: str):
    """Keras 3's hard_sigmoid, relu6(x + 3) / 6, written as tf_keras' own MobileNetV3 writes it (an add, a ReLU(6)
    layer and a multiply), which prune, cluster and QAT take.  tf_keras' 'hard_sigmoid' is another function
    (clip(0.2 x + 0.5, 0, 1)), so the name cannot be carried over as it is."""
    import tf_keras

    def build(x):
        relu6 = tf_keras.layers.ReLU(6.0, name=f"{name}/relu6")(_operator("Add", f"{name}/add")(x, 3.0))
        return _operator("Multiply", f"{name}/mul")(relu6, 1.0 / 6.0)
    return build


def _hard_silu(name: str):
    """Keras 3's hard_silu / hard_swish, x * relu6(x + 3) / 6, as tf_keras' MobileNetV3 writes its hard-swish."""
    import tf_keras
    sigmoid = _hard_sigmoid(name)

    def build(x):
        return tf_keras.layers.Multiply(name=name)([x, sigmoid(x)])
    return build


# Keras 3 activations tf_keras lacks or defines differently: the same function in tf_keras terms
_ACTIVATIONS = {"hard_silu": _hard_silu, "hard_swish": _hard_silu, "hard_sigmoid": _hard_sigmoid}
_RENAMED = {"silu": "swish"}


# Keras 3 operations on tensors that are not layers (`x + 3.0`, `x * (1 / 6)` in a functional model): the same
# arithmetic as the TFOpLambda layers tf_keras records for `+ - * /` (its own applications have them), named after
# the Keras 3 operation: auto-generated names would differ at each rebuild, and so would the cache keys
_OPERATORS = {"Add": "__operators__.add", "Subtract": "math.subtract", "Multiply": "math.multiply",
              "Divide": "math.truediv", "TrueDivide": "math.truediv"}


def _operator(kind: str, name: str):
    """A TFOpLambda layer doing `kind` (a key of _OPERATORS), with a name of ours."""
    import tensorflow as tf
    from tf_keras.src.layers.core.tf_op_layer import TFOpLambda
    function = tf
    for part in _OPERATORS[kind].split("."):
        function = getattr(function, part)
    return TFOpLambda(function, name=name)


def _layer(op):
    """The tf_keras twin of one Keras 3 layer (same class name and settings; a few activations and tensor
    operators as the equivalent tf_keras layers), or OptimizationError naming it."""
    import tf_keras
    kind = type(op).__name__
    if not isinstance(op, _keras3().layers.Layer):  # an operation such as keras.ops.add
        if kind in _OPERATORS:
            return _operator(kind, op.name)
        raise OptimizationError(f"operation '{op.name}' ({kind}) has no tf_keras equivalent here")
    act = _activation_name(op) if kind == "Activation" else None
    if act in _ACTIVATIONS:
        return _ACTIVATIONS[act](op.name)
    if act in _RENAMED:
        return tf_keras.layers.Activation(_RENAMED[act], name=op.name)
    # initializers are dropped (the weights are copied over; Keras 3's carry arguments tf_keras lacks)
    cfg = {k: _plain(v) for k, v in op.get_config().items()
           if k not in _KERAS3_ONLY and not k.endswith("_initializer")}
    for _ in range(8):  # drop settings tf_keras does not know, one by one
        try:
            layer = tf_keras.layers.deserialize({"class_name": kind, "config": cfg})
            if not isinstance(layer, tf_keras.layers.Layer):
                raise ValueError(f"unknown layer class {kind}")
            return layer
        except TypeError as e:
            bad = str(e).split("'")[1] if "'" in str(e) else None
            if not bad or bad not in cfg:
                break
            cfg.pop(bad)
        except (ValueError, KeyError) as e:
            raise OptimizationError(f"layer '{op.name}' ({kind}) has no tf_keras equivalent: "
                                    f"{str(e).splitlines()[0][:160]}") from None
    raise OptimizationError(f"layer '{op.name}' ({kind}) cannot be rebuilt in tf_keras")


def to_tf_keras(model, check_x: np.ndarray | None = None):
    """An equivalent tf_keras functional model; raises OptimizationError naming the first layer it cannot carry."""
    import tf_keras
    from keras import tree
    keras = _keras3()
    if not isinstance(model, keras.Model) or not hasattr(model, "_operations"):
        raise OptimizationError("only functional or Sequential Keras 3 models can be rebuilt in tf_keras")
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs, model.outputs, name=model.name)  # its functional graph
    made: dict[int, object] = {}  # id(Keras 3 tensor) -> tf_keras tensor
    inputs = []
    for t in model.inputs:
        x = tf_keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=t.name)
        made[id(t)] = x
        inputs.append(x)
    twins = {}
    pending = [(op, node) for op in model.operations if type(op).__name__ != "InputLayer"
               for node in op._inbound_nodes]
    for _ in range(len(pending) + 1):
        if not pending:
            break
        left = []
        for op, node in pending:
            ins = tree.flatten((node.arguments.args, node.arguments.kwargs))
            tensors = [t for t in ins if isinstance(t, keras.KerasTensor)]
            if not all(id(t) in made for t in tensors):
                left.append((op, node))
                continue
            if op.name not in twins:
                twins[op.name] = (_layer(op), op)

            def swap(v):
                return made[id(v)] if isinstance(v, keras.KerasTensor) else v
            args = tree.map_structure(swap, node.arguments.args)
            kwargs = tree.map_structure(swap, node.arguments.kwargs)
            # Keras 3 records `training=False` in the node of a layer such as Dropout and overrides it with the
            # model's own mode when the model runs; a tf_keras layer would keep it, and train with its dropout off
            kwargs.pop("training", None)
            out = twins[op.name][0](*args, **kwargs)
            for a, b in zip(tree.flatten(node.output_tensors), tree.flatten(out)):
                made[id(a)] = b
        if len(left) == len(pending):
            break
        pending = left
    missing = [t for t in model.outputs if id(t) not in made]
    if missing:
        raise OptimizationError("the Keras 3 graph could not be rebuilt in tf_keras (unreachable outputs)")
    twin = tf_keras.Model(inputs, [made[id(t)] for t in model.outputs] if len(model.outputs) > 1
                          else made[id(model.outputs[0])], name=model.name)
    for new, old in twins.values():
        if isinstance(new, tf_keras.layers.Layer) and getattr(old, "weights", None):
            try:
                new.set_weights([np.asarray(w) for w in old.get_weights()])
            except ValueError as e:
                raise OptimizationError(f"layer '{old.name}' ({type(old).__name__}): its weights do not fit the "
                                        f"tf_keras layer ({str(e).splitlines()[0][:120]})") from None
    if check_x is not None:
        a = np.asarray(model.predict(check_x, verbose=0))
        b = np.asarray(twin.predict(check_x, verbose=0))
        diff = float(np.max(np.abs(a - b))) if a.shape == b.shape else float("inf")
        if not diff <= TOLERANCE:
            raise OptimizationError(f"the tf_keras rebuild of this Keras 3 model differs by {diff:.3g} (> "
                                    f"{TOLERANCE:g}) on the calibration data")
    return twin
