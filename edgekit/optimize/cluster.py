"""Weight clustering (sparsity-preserving after pruning) with TF-MOT: apply -> fine-tune -> strip."""
from __future__ import annotations

import numpy as np

from ..data import Dataset
from ..errors import OptimizationError
from .steps import Cluster
from .train import fine_tune, outputs_probabilities, refresh_batchnorm
from ..layers import kind_of

_INIT = {"kmeans++": "KMEANS_PLUS_PLUS", "linear": "LINEAR", "density": "DENSITY_BASED", "random": "RANDOM"}


CLUSTERABLE = ("Conv2D", "Dense", "DepthwiseConv2D", "Conv1D", "Conv2DTranspose", "SeparableConv2D")


def _eligible(layer, clusters: int) -> bool:
    """Layers with more non-zero weights than clusters (k-means++ needs that many points; a layer pruned to a
    handful of weights is left as it is)."""
    if kind_of(layer) not in CLUSTERABLE or not layer.get_weights():
        return False
    from tensorflow_model_optimization.python.core.clustering.keras.clustering_registry import ClusteringRegistry
    if not ClusteringRegistry.supports(layer):  # TF-MOT matches exact classes: a subclass is left as it is
        return False
    from ..compress.sensitivity import kernel_index
    return int(np.count_nonzero(layer.get_weights()[kernel_index(layer)])) > 2 * clusters


def _zero_masks(model) -> dict[str, list]:
    """Per layer, where each weight array is exactly zero (pruned), for the arrays that have zeros."""
    out = {}
    for layer in model.layers:
        masks = [w == 0 if w.ndim > 1 and (w == 0).any() else None for w in layer.get_weights()]
        if any(m is not None for m in masks):
            out[layer.name] = masks
    return out


def _restore_zeros(model, masks: dict[str, list]) -> int:
    """Zero again the pruned weights that fine-tuning moved in layers clustering left as they were (TF-MOT preserves
    sparsity only in the layers it wraps); returns how many layers needed it."""
    restored = 0
    for name, layer_masks in masks.items():
        layer = model.get_layer(name)
        weights = layer.get_weights()
        if any(m is not None and (w[m] != 0).any() for w, m in zip(weights, layer_masks)):
            layer.set_weights([np.where(m, 0, w) if m is not None else w for w, m in zip(weights, layer_masks)])
            restored += 1
    return restored


def _wrap(model, cfg: Cluster, preserve_sparsity: bool):
    from .._tf import keras, tfmot
    from .train import reseed
    reseed()  # k-means++ initial centroids
    cl = tfmot.clustering.keras
    init = getattr(cl.CentroidInitialization, _INIT[cfg.init])
    n = int(cfg.clusters)
    if not any(_eligible(layer, n) for layer in model.layers):
        raise OptimizationError(f"clustering to {n} centroids: no layer has enough non-zero weights")

    def per_layer(layer):
        if not _eligible(layer, n):
            return layer
        return cl.cluster_weights(layer, number_of_clusters=n, cluster_centroids_init=init,
                                  preserve_sparsity=preserve_sparsity)
    try:
        wrapped = keras.models.clone_model(model, clone_function=per_layer)
    except (ValueError, RuntimeError) as e:
        raise OptimizationError(f"clustering cannot wrap this model: {str(e).splitlines()[0]}") from e
    if wrapped is None:  # TF-MOT returns None for objects it does not recognise (Keras 3 models)
        raise OptimizationError("clustering returned nothing: the model is not a tf_keras model")
    return wrapped


def preflight(model, cfg: Cluster, preserve_sparsity: bool) -> None:
    from ..modelio import clone
    _wrap(clone(model), cfg.with_(clusters=16) if cfg.clusters == "auto" else cfg, preserve_sparsity)


def cluster(model, cfg: Cluster, data: Dataset, preserve_sparsity: bool, teacher=None, distill=None):
    """Return (a clustered, stripped copy of `model`, details)."""
    from .._tf import tfmot
    from ..modelio import clone
    masks = _zero_masks(model) if preserve_sparsity else {}
    wrapped = _wrap(clone(model), cfg, preserve_sparsity)
    fit = fine_tune(wrapped, data, epochs=cfg.epochs, lr=1e-4,
                    probabilities=outputs_probabilities(model), teacher=teacher, distill=distill)
    stripped = tfmot.clustering.keras.strip_clustering(wrapped)
    details: dict = {"fit": fit, "clusters": cfg.clusters}  # the count used, also when a chain back-off fixed it
    if preserve_sparsity and (restored := _restore_zeros(stripped, masks)):
        details["zeros_restored_layers"] = restored
    if (bn := refresh_batchnorm(stripped, data)) is not None:
        details["batchnorm_refreshed"] = bn
    return stripped, details


AUTO_CLUSTERS = (4, 8, 16, 32, 64)  # fewest (strongest) first


def cluster_auto(model, cfg: Cluster, fit: Dataset, val: Dataset, preserve_sparsity: bool, max_drop: float,
                 reference, teacher=None, distill=None, memo=None):
    """The fewest clusters of AUTO_CLUSTERS within the budget on `val` against `reference` (per validation
    sample, is the original model right; so earlier steps' losses count)."""
    from ..compress.sensitivity import correct_of
    from .search import strongest
    n, clustered, details, trace = strongest(
        AUTO_CLUSTERS, lambda k: cluster(model, cfg.with_(clusters=k), fit, preserve_sparsity, teacher=teacher,
                                         distill=distill),
        lambda m: correct_of(m, val), reference, max_drop, "clusters", memo)
    trace["validation_samples"] = len(val)
    return clustered, {**details, "clusters": n, "search": trace}
