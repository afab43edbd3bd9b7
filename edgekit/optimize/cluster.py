"""Weight clustering (sparsity-preserving after pruning) with TF-MOT: apply -> fine-tune -> strip."""
from __future__ import annotations

from ..data import Dataset
from ..errors import OptimizationError
from .train import fine_tune, outputs_probabilities

_INIT = {"kmeans++": "KMEANS_PLUS_PLUS", "linear": "LINEAR", "density": "DENSITY_BASED", "random": "RANDOM"}


def _wrap(model, cfg: dict, preserve_sparsity: bool):
    from .._tf import tfmot
    cl = tfmot.clustering.keras
    init = getattr(cl.CentroidInitialization, _INIT[cfg.get("init", "kmeans++")])
    try:
        wrapped = cl.cluster_weights(model, number_of_clusters=int(cfg["clusters"]),
                                     cluster_centroids_init=init, preserve_sparsity=preserve_sparsity)
    except (ValueError, RuntimeError) as e:
        raise OptimizationError(f"clustering cannot wrap this model: {str(e).splitlines()[0]}") from e
    if wrapped is None:  # TF-MOT returns None for objects it does not recognise (Keras 3 models)
        raise OptimizationError("clustering returned nothing: the model is not a tf_keras model")
    return wrapped


def preflight(model, cfg: dict, preserve_sparsity: bool) -> None:
    from ..modelio import clone
    _wrap(clone(model), cfg, preserve_sparsity)


def cluster(model, cfg: dict, data: Dataset, preserve_sparsity: bool, teacher=None, distill=None):
    """Return (a clustered, stripped copy of `model`, details)."""
    from .._tf import tfmot
    from ..modelio import clone
    wrapped = _wrap(clone(model), cfg, preserve_sparsity)
    fit = fine_tune(wrapped, data, epochs=int(cfg.get("epochs", 3)), lr=1e-4,
                    probabilities=outputs_probabilities(model), teacher=teacher, distill=distill)
    return tfmot.clustering.keras.strip_clustering(wrapped), {"fit": fit}
