"""Where does a quantized model lose accuracy?  Each Keras layer's output against the matching tensor of the
.tflite (LiteRT with every intermediate tensor kept), on a few calibration samples: relative error per layer."""
from __future__ import annotations

from collections.abc import Collection

import numpy as np
from .layers import kind_of


def _matches(tensor_name: str, layer: str) -> bool:
    parts = set()
    for piece in tensor_name.split(";"):
        parts.update(piece.split("/"))
    return layer in parts or f"quant_{layer}" in parts


def _next_only(layer):
    """The one layer that takes `layer`'s output, or None."""
    nodes = getattr(layer, "_outbound_nodes", [])
    if len(nodes) == 1:
        return getattr(nodes[0], "outbound_layer", None) or getattr(nodes[0], "operation", None)
    return None


def _fusable_activation(layer) -> bool:
    """A ReLU / ReLU6 layer, which the converter fuses into the op before it."""
    kind = kind_of(layer)
    cfg = layer.get_config() if kind in ("ReLU", "Activation") else {}
    if kind == "ReLU":
        return not cfg.get("negative_slope") and not cfg.get("threshold") and cfg.get("max_value") in (None, 6.0)
    return kind == "Activation" and cfg.get("activation") in ("relu", "relu6")


def _chain(layer) -> list:
    """`layer`, the BatchNormalization the converter folds into it, and the ReLU / ReLU6 it fuses after them: the
    Keras outputs the layer's int8 tensor can stand for, deepest last."""
    out = [layer]
    nxt = _next_only(layer)
    if nxt is not None and kind_of(nxt) == "BatchNormalization":
        out.append(nxt)
        nxt = _next_only(nxt)
    if nxt is not None and _fusable_activation(nxt):
        out.append(nxt)
    return out


_ELEMENTWISE = ("Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "ThresholdedReLU", "Softmax")


def _unfused_after(chain: list) -> list:
    """The activation layers right after `chain` that the converter does not fuse into its op (swish, sigmoid,
    LeakyReLU, ELU...): ops of their own.  A layer kept float needs them float too, or its float output is quantized
    again one op later, range and all (an outlier unit then still rounds every other unit to zero)."""
    out = []
    nxt = _next_only(chain[-1])
    while nxt is not None and kind_of(nxt) in _ELEMENTWISE and not _fusable_activation(nxt):
        out.append(nxt)
        nxt = _next_only(nxt)
    return out


def _compared(chain: list, tensor_name: str):
    """Which of `chain` the int8 tensor holds: the fused activation when the tensor is named after it too (a conv's
    output before its ReLU6 has negative values the int8 tensor cannot: MobileNetV2's depthwise convs looked 73%
    wrong), else the folded BatchNormalization, else the layer."""
    if len(chain) > 1 and _fusable_activation(chain[-1]) and _matches(tensor_name, chain[-1].name):
        return chain[-1]
    return chain[1] if len(chain) > 1 and kind_of(chain[1]) == "BatchNormalization" else chain[0]


def worst_layers(model_bytes: bytes, keras_model, x: np.ndarray, top: int = 3, samples: int = 16,
                 input_too: bool = True, skip: Collection[str] = ()) -> list[dict]:
    """The `top` layers whose int8 output differs most from the float model's: [{layer, kind, relative_error,
    tensors}] (error = |q - f| / |f| per output channel over `samples` inputs, averaged over the channels), most
    wrong first.  Layers with no matching tensor are skipped.  With `input_too`, the model's input quantization is
    a candidate as well (layer 'input', kind 'input quantization').  Layers named in `skip` (those int8-selective
    keeps float: their outputs carry the error of the int8 tensors before them) are not candidates."""
    from ai_edge_litert.interpreter import Interpreter
    from ._quiet import captured_stderr
    from .validate import dequantize_output, quantize_input
    x = x[:samples]
    with captured_stderr():
        it = Interpreter(model_content=model_bytes, experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    produced_at = {}
    for pos, op in enumerate(it._get_ops_details()):
        for t in op["outputs"]:
            produced_at[int(t)] = pos
    details = [d for d in it.get_tensor_details() if d["index"] in produced_at]
    from .keras3 import is_keras3_model
    if is_keras3_model(keras_model):
        import keras
    else:
        from ._tf import keras
    # a fresh copy: layers reused across models (pruning wrappers, stripped copies) have several graph nodes,
    # and `layer.output` would belong to another model
    copy = keras.models.clone_model(keras_model)
    copy.set_weights(keras_model.get_weights())
    keras_model = copy
    # layers with weights (where a user can act: keep them float or int16) plus the model's output; ops that the
    # converter fuses (activations, TF-op layers) have no tensor of their own to compare
    final = keras_model.layers[-1]
    layers = [layer for layer in keras_model.layers
              if (layer is final or (layer.weights and kind_of(layer) != "BatchNormalization"))
              and not isinstance(layer.output, (list, tuple)) and layer.name not in skip]
    chains = {layer.name: ([layer] if layer is final else _chain(layer)) for layer in layers}
    members = list({id(m): m for layer in layers for m in chains[layer.name]}.values())
    outs = keras.Model(keras_model.inputs, [m.output for m in members]).predict(x, verbose=0) if members else []
    by_name = dict(zip((m.name for m in members), outs if isinstance(outs, list) else [outs]))
    chosen = {}
    float_outs = []
    for layer in layers:
        want = tuple(by_name[layer.name].shape[1:])
        if layer is final:  # output tensors are renamed (StatefulPartitionedCall:0)
            cands = [d for d in details if d["index"] == it.get_output_details()[0]["index"]]
        else:
            cands = [d for d in details if _matches(d["name"], layer.name) and tuple(d["shape"][1:]) == want]
        if cands:
            d = max(cands, key=lambda d: produced_at[d["index"]])
            chosen[layer.name] = (layer, d)
            float_outs.append(by_name[_compared(chains[layer.name], d["name"]).name])
        else:
            float_outs.append(None)
    inp = it.get_input_details()[0]
    # the input itself: an int8 model's first QUANTIZE (float input) or its int8 input tensor; one scale for all
    # channels rounds a channel of small values away when another is wide (unnormalized sensor data, a raw offset)
    entry = None
    if input_too:
        first = next((int(op["outputs"][0]) for op in it._get_ops_details()
                      if op["op_name"] == "QUANTIZE" and int(inp["index"]) in [int(t) for t in op["inputs"]]), None)
        entry = next((d for d in details if d["index"] == first), None) if first is not None else inp
        if entry is not None and not np.issubdtype(entry["dtype"], np.integer):
            entry = None
    if not chosen and entry is None:
        return []
    got: dict[str, list] = {name: [] for name in chosen}
    seen_in: list = []
    for i in range(len(x)):
        it.set_tensor(inp["index"], quantize_input(x[i:i + 1], inp))
        it.invoke()
        for name, (_, d) in chosen.items():
            got[name].append(dequantize_output(it.get_tensor(d["index"]), {"dtype": d["dtype"],
                                                                             "quantization": d["quantization"]}))
        if entry is not None:
            seen_in.append(dequantize_output(it.get_tensor(entry["index"]), {"dtype": entry["dtype"],
                                                                              "quantization": entry["quantization"]}))
    out: list[dict] = []
    if entry is not None:
        f = np.asarray(x, np.float32)
        out.append({"layer": "input", "kind": "input quantization",
                    "relative_error": round(_channel_error(f, np.concatenate(seen_in, axis=0).reshape(f.shape)), 4),
                    "tensors": [entry["name"]]})
    for (layer, f) in zip(layers, float_outs):
        if f is None:
            continue
        q = np.concatenate(got[layer.name], axis=0).reshape(f.shape)
        err = _channel_error(f, q)
        with_it = [layer.name] + ([a.name for a in _unfused_after(chains[layer.name])] if layer is not final else [])
        out.append({"layer": layer.name, "kind": kind_of(layer), "relative_error": round(err, 4),
                    "tensors": sorted({d["name"] for d in details if any(_matches(d["name"], n) for n in with_it)}
                                      | {chosen[layer.name][1]["name"]})})
    out.sort(key=lambda r: -r["relative_error"])
    return out[:top]


def _channel_error(f: np.ndarray, q: np.ndarray) -> float:
    """|q - f| / |f| per channel (last axis), averaged over the channels: one wide-range channel must not hide the
    others rounded to 0."""
    fc, qc = f.reshape(-1, f.shape[-1]), q.reshape(-1, f.shape[-1])
    norms = np.linalg.norm(fc, axis=0)
    live = norms > 1e-6 * (norms.max() + 1e-12)
    return float(np.mean(np.linalg.norm(qc - fc, axis=0)[live] / norms[live])) if live.any() else 0.0


def error_note(mode: str, largest: list[dict], kept_float: list[str], hint: str = "",
               reference: str = "the float model") -> str | None:
    """The warning line of a variant over budget: where its `mode` error is largest (`largest`, from worst_layers
    with the layers int8-selective keeps float skipped; `reference`: what they were compared with), or, when every
    layer it could name is kept float already, that the error comes from the int8 tensors before them."""
    kept = f" (kept float already: {', '.join(kept_float)})" if kept_float else ""
    if largest:
        worst = ", ".join(f"'{w['layer']}' ({w['kind']}, {w['relative_error']:.3f})" for w in largest)
        if largest[0]["kind"] == "input quantization":  # before any layer: keeping layers float cannot help
            hint = ("; one int8 scale covers all the input's channels, so scale them to similar ranges before the "
                    "model")
        return f"largest {mode} error vs {reference} (relative, per layer output): {worst}{hint}{kept}"
    if kept_float:
        return (f"{mode} error remains with {', '.join(kept_float)} kept float: it comes from the tensors still "
                f"{mode} before them (the input's quantization scale, or activations between the layers)")
    return None
