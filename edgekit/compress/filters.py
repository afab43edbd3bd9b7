"""Structured filter pruning: remove whole output channels (ranked by L1 norm) and rebuild a genuinely smaller dense
model.  Channels joined by a residual Add are pruned together; BatchNormalization, DepthwiseConv2D, pooling,
Flatten and Concatenate follow their inputs; model outputs and anything we cannot follow (Reshape, ...) are kept."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import OptimizationError
from .flops import count
from .graph import copy_layer, functional_layers, inbound, rebuild
from ..layers import kind_of

SOURCES = ("Conv2D", "Dense")
FOLLOW = ("BatchNormalization", "Activation", "ReLU", "LeakyReLU", "PReLU", "Dropout", "MaxPooling2D",
          "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "ZeroPadding2D", "DepthwiseConv2D",
          "SpatialDropout2D")
MERGE = ("Add", "Subtract", "Multiply", "Maximum", "Minimum", "Average")
MIN_CHANNELS = 2


@dataclass(frozen=True)
class Segments:
    """What a tensor's channels (last axis) are made of: consecutive runs, each `(group, count)` owned by one channel
    group (the layer whose filters they are, merged with the layers a residual Add ties them to)."""
    runs: tuple[tuple[str, int], ...]

    @property
    def channels(self) -> int:
        return sum(n for _, n in self.runs)


@dataclass(frozen=True)
class Flat:
    """A Flatten of `inner`: `spatial` positions one after another, each holding inner's channels."""
    spatial: int
    inner: Segments


Spec = Segments | Flat


def _own(groups: _Groups, name: str, n: int, frozen: bool = False) -> Segments:
    """A new group of `n` channels for this tensor alone."""
    return Segments(((groups.new(name, n, frozen=frozen), n),))


class _Groups:
    def __init__(self):
        self.parent, self.size, self.frozen, self.members = {}, {}, set(), {}

    def new(self, gid, size, frozen=False):
        self.parent[gid], self.size[gid], self.members[gid] = gid, size, []
        if frozen:
            self.frozen.add(gid)
        return gid

    def find(self, g):
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.members[ra] += self.members.pop(rb, [])
            if rb in self.frozen:
                self.frozen.add(ra)

    def freeze(self, spec: Spec) -> None:
        """Channels this tensor carries cannot be pruned (an output, or a layer we cannot follow reads them)."""
        for g, _ in (spec.inner if isinstance(spec, Flat) else spec).runs:
            self.frozen.add(self.find(g))


def analyse(model) -> tuple[list, _Groups, dict[str, Spec], dict[str, list[Spec]]]:
    """Channel specs of every layer output and the channel groups."""
    layers = functional_layers(model)
    groups = _Groups()
    spec_of: dict[str, Spec] = {}  # layer -> what its output's channels are
    input_spec: dict[str, list[Spec]] = {}  # layer -> what its inputs' channels are
    out_names = {t._keras_history.layer.name for t in model.outputs}
    for layer in layers:
        kind = kind_of(layer)
        parents = inbound(layer)
        specs = [spec_of[p.name] for p in parents]
        input_spec[layer.name] = specs
        if not parents:  # InputLayer
            c = int(layer.get_config()["batch_input_shape"][-1])
            spec_of[layer.name] = _own(groups, layer.name, c, frozen=True)
        elif kind in SOURCES:
            n = layer.filters if kind == "Conv2D" else layer.units
            groups.new(layer.name, n, frozen=layer.name in out_names)
            groups.members[layer.name].append(layer.name)
            if kind == "Conv2D" and getattr(layer, "groups", 1) != 1:
                groups.freeze(specs[0])
                groups.frozen.add(layer.name)
            spec_of[layer.name] = Segments(((layer.name, n),))
        elif kind in FOLLOW:
            if kind == "DepthwiseConv2D" and layer.depth_multiplier != 1:
                groups.freeze(specs[0])
                spec_of[layer.name] = _own(groups, layer.name, int(layer.output_shape[-1]), frozen=True)
            else:
                spec_of[layer.name] = specs[0]
        elif kind in MERGE:
            heads = [s.runs[0][0] for s in specs if isinstance(s, Segments) and len(s.runs) == 1]
            if len(heads) == len(specs):  # each input one group: tie them (pruned together)
                for g in heads[1:]:
                    groups.union(heads[0], g)
                spec_of[layer.name] = specs[0]
            else:
                for s in specs:
                    groups.freeze(s)
                spec_of[layer.name] = _own(groups, layer.name, int(layer.output_shape[-1]), frozen=True)
        elif kind == "Concatenate" and layer.axis in (-1, len(layer.output_shape) - 1) and \
                all(isinstance(s, Segments) for s in specs):
            spec_of[layer.name] = Segments(tuple(run for s in specs if isinstance(s, Segments) for run in s.runs))
        elif kind == "Flatten" and isinstance(specs[0], Segments):
            spec_of[layer.name] = Flat(int(np.prod(layer.input_shape[1:-1])), specs[0])
        else:
            for s in specs:
                groups.freeze(s)
            shape = layer.output_shape
            spec_of[layer.name] = _own(groups, layer.name, int(shape[-1]) if not isinstance(shape, list) else 0,
                                       frozen=True)
        if layer.name in out_names:
            groups.freeze(spec_of[layer.name])
    return layers, groups, spec_of, input_spec


def _importance(model, groups) -> dict:
    """Per group root: each channel's summed, per-layer-normalised L1 filter norm."""
    imp: dict = {}
    for layer_name in [m for ms in groups.members.values() for m in ms]:
        k = model.get_layer(layer_name).get_weights()[0]
        norms = np.abs(k).reshape(-1, k.shape[-1]).sum(axis=0)
        norms = norms / (norms.max() or 1.0)
        root = groups.find(layer_name)
        imp[root] = imp.get(root, 0) + norms
    return imp


def _kept(spec: Spec, keep: dict, groups: _Groups) -> np.ndarray:
    """Original channel indices that survive, for a tensor with this spec."""
    if isinstance(spec, Flat):
        k = _kept(spec.inner, keep, groups)
        return (np.arange(spec.spatial)[:, None] * spec.inner.channels + k[None, :]).reshape(-1)
    out, offset = [], 0
    for g, n in spec.runs:
        root = groups.find(g)
        out.append(offset + (keep[root] if root in keep else np.arange(n)))
        offset += n
    return np.concatenate(out) if out else np.arange(0)


def keep_count(n: int, fraction: float, multiple: int = 1) -> int:
    """Channels a group of `n` keeps when pruned by `fraction`: with `multiple` > 1 a multiple of it (a group no
    larger than one tile stays whole: removing channels inside a tile saves no time)."""
    f = min(max(fraction, 0.0), 0.95)
    if multiple <= 1:
        return min(n, max(MIN_CHANNELS, int(round(n * (1 - f)))))
    if n <= multiple:
        return n
    return min(n, max(multiple, int(round(n * (1 - f) / multiple)) * multiple))


def _counts(groups, imp: dict, fractions, layer_weights, multiple) -> dict:
    out = {}
    for root, scores in imp.items():
        if root in groups.frozen:
            continue
        f = fractions if isinstance(fractions, (int, float)) else fractions.get(root, 0.0)
        if layer_weights:
            f *= min(layer_weights.get(m, 1.0) for m in groups.members[root])
        out[root] = (keep_count(len(scores), f, multiple), len(scores))
    return out


def plan(model, fractions: dict | float, layer_weights: dict | None = None, multiple: int = 1) -> dict:
    """{group root: (channels kept, channels)} for every prunable channel group (see `prune_filters`)."""
    _, groups, _, _ = analyse(model)
    return _counts(groups, _importance(model, groups), fractions, layer_weights, multiple)


def prune_filters(model, fractions: dict | float, layer_weights: dict | None = None, multiple: int = 1,
                  counts: dict | None = None):
    """A smaller copy of `model`: each prunable channel group loses `fraction` of its channels (lowest L1 first).
    `fractions` is one number or {group root: fraction}; `layer_weights` scales a layer's group fraction;
    `multiple` keeps channel counts at multiples of the target's kernel tile; `counts` ({group root: channels
    kept}) overrides all of that."""
    _layers, groups, _spec_of, input_spec = analyse(model)
    imp = _importance(model, groups)
    counts = counts or {r: k for r, (k, _) in _counts(groups, imp, fractions, layer_weights, multiple).items()}
    keep = {root: np.sort(np.argsort(-imp[root], kind="stable")[:k]) for root, k in counts.items()}

    def replace(layer, ins):
        kind = kind_of(layer)
        if kind not in SOURCES + ("BatchNormalization", "DepthwiseConv2D"):
            return None
        w = layer.get_weights()
        k_in = _kept(input_spec[layer.name][0], keep, groups)
        if kind in SOURCES:
            root = groups.find(layer.name)
            k_out = keep.get(root, np.arange(w[0].shape[-1]))
            w = [w[0][..., k_in, :][..., k_out]] + [b[k_out] for b in w[1:]]
            change = {"filters": len(k_out)} if kind == "Conv2D" else {"units": len(k_out)}
            new, out = copy_layer(layer, ins, **change)
        elif kind == "DepthwiseConv2D":
            w = [w[0][:, :, k_in, :]] + [b[k_in] for b in w[1:]]
            new, out = copy_layer(layer, ins)
        else:
            w = [v[k_in] for v in w]
            new, out = copy_layer(layer, ins)
        new.set_weights(w)
        return out
    return rebuild(model, replace, name=f"{model.name}_filters")


def prune_to_flops(model, target_flops: float, layer_weights: dict | None = None, tol: float = 0.02,
                   multiple: int = 1):
    """Search the uniform prune fraction (scaled per layer by `layer_weights`) that leaves about `target_flops`
    (a fraction, e.g. 0.5) of the MACs; returns (model, fraction of MACs left, prune fraction).  With `multiple`
    > 1, channel counts stay multiples of it, MACs are counted as the kernels do them (channels rounded up to the
    tile), and whole tiles are then given back while the model stays within the target: a cut on paper is a cut
    in time, and no deeper than asked."""
    def macs(m):
        return count(m, multiple)["effective_macs" if multiple > 1 else "macs"]
    base = macs(model)
    if not 0.05 <= target_flops < 1:
        raise OptimizationError(f"target_flops must be in [0.05, 1), got {target_flops}")
    lo, hi, best = 0.0, 0.95, None
    for _ in range(14):
        mid = (lo + hi) / 2
        cand = prune_filters(model, mid, layer_weights, multiple)
        frac = macs(cand) / base
        if frac > target_flops:
            lo = mid
        else:
            hi, best = mid, (cand, frac, mid)
        if best and abs(best[1] - target_flops) <= tol:
            break
    if best is None:
        floor = macs(prune_filters(model, 0.95, layer_weights, multiple)) / base
        tile = (f" with channels in multiples of {multiple} (the device's int8 kernel tile; groups of at most "
                f"{multiple} channels stay whole)") if multiple > 1 else ""
        raise OptimizationError(f"cannot reach {target_flops:.0%} of the MACs{tile}: the least this model can keep "
                                f"is {floor:.0%} (outputs, Reshape and similar layers are kept whole); raise "
                                f"target_flops{' or set channel_multiple lower' if multiple > 1 else ''}")
    if multiple > 1:
        best = _give_back_tiles(model, best, target_flops, layer_weights, multiple, macs, base)
    return best


def _give_back_tiles(model, best, target_flops, layer_weights, multiple, macs, base):
    """Tile steps overshoot the target: give whole tiles back, the one that lands closest to it first."""
    cand, frac, fraction = best
    counts = {r: k for r, (k, _) in plan(model, fraction, layer_weights, multiple).items()}
    sizes = {r: n for r, (_, n) in plan(model, 0.0).items()}
    while True:
        tries = []
        for root, k in counts.items():
            if k + multiple <= sizes[root]:
                more = {**counts, root: k + multiple}
                m = prune_filters(model, 0.0, counts=more)
                f = macs(m) / base
                if f <= target_flops:
                    tries.append((f, root, m, more))
        if not tries:
            return cand, frac, fraction
        frac, _, cand, counts = max(tries, key=lambda t: t[0])
