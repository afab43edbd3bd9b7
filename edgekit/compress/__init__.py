"""Compression beyond uniform TF-MOT pruning: sensitivity analysis, per-layer sparsity allocation, structured
filter pruning, low-rank factorization, knowledge distillation, and MAC/parameter counting."""
