"""TF-MOT optimizations (prune, cluster, QAT and the collaborative schemes), always on a copy of the model."""
