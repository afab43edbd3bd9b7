"""edgekit: take a Keras model to edge hardware and prove, with measurements, which variant to ship where.

The public API is re-exported lazily so `import edgekit` never imports TensorFlow.
"""
__version__ = "0.1.0"

_EXPORTS = {
    "profile": "edgekit.profiling.api",
    "convert_for_device": "edgekit.pipeline",
    "load_profile": "edgekit.profiles",
    "load_recipe": "edgekit.profiles",
    "profile_names": "edgekit.profiles",
    "recipe_names": "edgekit.profiles",
    "read_model": "edgekit.flatbuffer",
    "device_problems": "edgekit.compat",
    "load_manifest": "edgekit.manifest",
    "load_data": "edgekit.data",
    "Dataset": "edgekit.data",
    "Manifest": "edgekit.manifest",
    "Variant": "edgekit.manifest",
    "EdgekitError": "edgekit.errors",
}

__all__ = [*sorted(_EXPORTS), "__version__"]  # noqa: PLE0604 - _EXPORTS keys are strings


def __getattr__(name):
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
