"""What kind of Keras layer this is, by class rather than by name: a subclass of a Keras layer counts as that layer
(`class MyConv(Conv2D)` is a Conv2D to pruning, clustering, filter pruning and MAC counting), and a class that is
not one can be declared as one with `register_layer(MyLayer, "Conv2D")`."""
from __future__ import annotations

_KERAS_MODULES = ("keras", "tf_keras", "tensorflow")
_REGISTERED: dict[type, str] = {}


def register_layer(cls: type, kind: str) -> None:
    """Treat layers of `cls` (and its subclasses) as Keras `kind` (e.g. "Conv2D", "Dense") everywhere edgekit
    decides what a layer is.  The class must behave like that layer (same weights and config keys)."""
    _REGISTERED[cls] = kind


def kind_of(layer) -> str:
    """The name of the most specific Keras layer class `layer` is an instance of (or its registered kind); its own
    class name when it derives from none (a custom layer)."""
    for cls in type(layer).__mro__:
        if cls in _REGISTERED:
            return _REGISTERED[cls]
        if cls.__module__.split(".")[0] in _KERAS_MODULES:
            return cls.__name__
    return type(layer).__name__
