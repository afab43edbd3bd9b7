"""Walk and rebuild a tf_keras Sequential/functional model layer by layer (single-output layers, no nesting)."""
from __future__ import annotations

from collections.abc import Callable

from ..errors import OptimizationError


def inbound(layer) -> list:
    """The layers feeding `layer` (its first call)."""
    nodes = layer._inbound_nodes
    if not nodes:
        return []
    got = nodes[0].inbound_layers
    return list(got) if isinstance(got, (list, tuple)) else [got]


def functional_layers(model) -> list:
    """Layers in topological order, with an InputLayer first (Sequential models included)."""
    from .._tf import keras
    layers = list(model.layers)
    if not layers or not isinstance(layers[0], keras.layers.InputLayer):
        first = inbound(layers[0]) if layers else []
        layers = [*first, *layers] if first else layers
    for layer in layers:
        if isinstance(layer, keras.Model):
            raise OptimizationError(f"layer '{layer.name}' is a nested model; flatten the model first")
        if len(layer._inbound_nodes) > 1:
            raise OptimizationError(f"layer '{layer.name}' is shared (called more than once); not supported")
    return layers


def copy_layer(layer, tensors, **config_changes):
    """A new layer of the same class and config (with changes), called on `tensors`."""
    cfg = layer.get_config()
    cfg.update(config_changes)
    new = type(layer).from_config(cfg)
    out = new(tensors if len(tensors) > 1 else tensors[0])
    return new, out


def rebuild(model, replace: Callable | None = None, name: str | None = None):
    """A new functional model; `replace(layer, new_inputs) -> output tensor or None` may swap any layer.
    Layers `replace` leaves alone keep their config and weights."""
    from .._tf import keras
    layers = functional_layers(model)
    outputs = {}
    new_input = None
    for layer in layers:
        if isinstance(layer, keras.layers.InputLayer):
            new_input = keras.Input(shape=layer.get_config()["batch_input_shape"][1:], name=layer.name)
            outputs[layer.name] = new_input
            continue
        ins = [outputs[p.name] for p in inbound(layer)]
        out = replace(layer, ins) if replace else None
        if out is None:
            new, out = copy_layer(layer, ins)
            new.set_weights(layer.get_weights())
        outputs[layer.name] = out
    out_names = [t._keras_history.layer.name for t in model.outputs]
    return keras.Model(new_input, [outputs[n] for n in out_names] if len(out_names) > 1 else outputs[out_names[0]],
                       name=name or model.name)
