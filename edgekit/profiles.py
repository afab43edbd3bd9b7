"""Device profiles (device_profiles/*.yaml) and conversion recipes (converters/*.yaml) as frozen dataclasses."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import ConfigError
from .schema import Field, check, read_yaml

RUNTIMES = ("ai-edge-litert", "tflite-runtime", "tensorflow.lite")
DELEGATES = ("xnnpack", "edgetpu", "gpu", "none")
QUANT_MODES = ("float32", "float16", "dynamic", "int8", "int16x8")
IO_DTYPES = ("float32", "int8", "uint8", "int16")
POST_STEPS = ("edgetpu_compile",)

_RUNTIME = {"name": Field(str, required=True, choices=RUNTIMES), "version": Field(str, required=True)}
PROFILE_SCHEMA = {
    "name": Field(str, required=True),
    "description": Field(str, required=True),
    "arch": Field(str, required=True, choices=("aarch64", "armv7l", "x86_64")),
    "cores": Field(int, minimum=1),
    "memory_mb": Field(int, minimum=1),
    "runtimes": Field(list, required=True, item=dict, nested=_RUNTIME),
    "delegates": Field(list, required=True, item=str, choices=DELEGATES),
    "threads": Field(list, required=True, item=int),
    "quantization": Field(dict, required=True, nested={
        "modes": Field(list, required=True, item=str, choices=QUANT_MODES),
        "io_dtypes": Field(list, required=True, item=str, choices=IO_DTYPES),
        "static_shapes": Field(bool),
    }),
    "max_model_bytes": Field(int, minimum=1),
    "channel_multiple": Field((int, str)),
    "default_recipes": Field(list, required=True, item=str),
    # the board's software as the profile assumes it (stated, checked against what a board reports by `boards check`)
    "software": Field(dict, nested={"os": Field(str), "python": Field(str), "numpy": Field(str)}),
    "thermal": Field(dict, nested={
        "zones": Field(list, item=str),
        "max_temp_c": Field(float, minimum=0, maximum=150),
        "cool_down_s": Field(int, minimum=0),
        "throttle_probe": Field(str, choices=("vcgencmd", "jetson_nvpmodel", "none")),
    }),
}

_PRUNE = {
    "target": Field((int, float, str)),  # a sparsity in [0, 0.99], or "auto": the strongest within max_drop
    "schedule": Field(str, choices=("constant", "polynomial")),
    "structure": Field(str, choices=("2:4", "filters"), nullable=True),
    "allocation": Field(str, choices=("uniform", "sensitivity")),
    "target_flops": Field((int, float, str)),  # share of MACs kept in [0.05, 0.99], or "auto"
    "channel_multiple": Field((int, str)),
    "epochs": Field(int, minimum=1),
}
_FACTORIZE = {"energy": Field((int, float, str)), "rank": Field(int, minimum=1),
              "epochs": Field(int, minimum=1)}
_DISTILL = {"temperature": Field(float, minimum=0.5, maximum=50), "alpha": Field(float, minimum=0.0, maximum=1.0)}
_CLUSTER = {
    "clusters": Field((int, str), required=True),  # 2..256, or "auto": the fewest within max_drop
    "init": Field(str, choices=("kmeans++", "linear", "density", "random")),
    "epochs": Field(int, minimum=1),
}
_QAT = {"epochs": Field(int, minimum=1)}
RECIPE_SCHEMA = {
    "name": Field(str, required=True),
    "description": Field(str, required=True),
    "max_drop": Field(float, minimum=0.0, maximum=100.0),  # accuracy budget, points below the Keras model
    "optimize": Field(dict, nested={
        "factorize": Field(dict, nested=_FACTORIZE),
        "distill": Field(dict, nested=_DISTILL),
        "prune": Field(dict, nested=_PRUNE),
        "cluster": Field(dict, nested=_CLUSTER),
        "qat": Field(dict, nested=_QAT),
    }),
    "quantization": Field(dict, required=True, nested={
        "mode": Field(str, required=True, choices=QUANT_MODES),
        "io": Field(str, choices=IO_DTYPES),
        "selective": Field(bool),  # int8 only: keep the layers with the largest int8 error float
    }),
    "post": Field(list, item=str, choices=POST_STEPS),
}


DEFAULT_MAX_DROP = 1.0  # points


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    arch: str
    runtimes: tuple[Runtime, ...]
    delegates: tuple[str, ...]
    threads: tuple[int, ...]
    quant_modes: tuple[str, ...]
    io_dtypes: tuple[str, ...]
    static_shapes: bool
    default_recipes: tuple[str, ...]
    cores: int | None = None
    memory_mb: int | None = None
    max_model_bytes: int | None = None
    thermal: dict = field(default_factory=dict)
    source: str = ""
    channel_multiple: int | str = 8  # int8 kernel channel tile; 'auto' = this machine's CPU
    software: dict = field(default_factory=dict)  # os / python / numpy the profile assumes

    @property
    def runtime(self) -> Runtime:
        """The runtime the profile assumes first (compatibility is judged against it)."""
        return self.runtimes[0]

    @property
    def edgetpu(self) -> bool:
        return "edgetpu" in self.delegates

    def to_dict(self) -> dict:
        return {
            "name": self.name, "description": self.description, "arch": self.arch,
            "cores": self.cores, "memory_mb": self.memory_mb,
            "runtimes": [{"name": r.name, "version": r.version} for r in self.runtimes],
            "delegates": list(self.delegates), "threads": list(self.threads),
            "quantization": {"modes": list(self.quant_modes), "io_dtypes": list(self.io_dtypes),
                             "static_shapes": self.static_shapes},
            "max_model_bytes": self.max_model_bytes, "default_recipes": list(self.default_recipes),
            "thermal": dict(self.thermal), "channel_multiple": self.channel_multiple, "software": dict(self.software),
        }


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    mode: str
    io: str
    prune: dict | None = None
    cluster: dict | None = None
    qat: dict | None = None
    post: tuple[str, ...] = ()
    source: str = ""
    factorize: dict | None = None
    filters: dict | None = None  # structured filter pruning (prune: {structure: filters, target_flops: ...})
    distill: dict | None = None  # knowledge distillation in every fine-tune of this recipe
    max_drop: float = DEFAULT_MAX_DROP  # accuracy budget: points below the original Keras model
    selective: bool = False  # int8: when over budget, keep the layers with the largest int8 error in float

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(s for s in ("factorize", "filters", "prune", "cluster", "qat") if getattr(self, s))

    @property
    def qat_scheme(self) -> str | None:
        """The TF-MOT collaborative scheme QAT uses so earlier steps survive it."""
        if not self.qat:
            return None
        return {(True, True): "PCQAT", (False, True): "CQAT", (True, False): "PQAT"}.get(
            (bool(self.prune), bool(self.cluster)), "QAT")

    def config(self) -> dict:
        """Everything that changes the produced model (not the name or description)."""
        out = {"optimize": {k: getattr(self, k) for k in self.steps}, "distill": self.distill, "mode": self.mode,
               "io": self.io, "post": list(self.post)}
        if self.selective:
            out["selective"] = True
        if self.auto or self.selective:
            out["max_drop"] = self.max_drop  # the budget decides the strength
        return out

    @property
    def auto(self) -> bool:
        """Some strength is searched within the accuracy budget (`target: auto`)."""
        return "auto" in ((self.prune or {}).get("target"), (self.cluster or {}).get("clusters"),
                          (self.filters or {}).get("target_flops"), (self.factorize or {}).get("energy"))

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description,
                "optimize": {k: getattr(self, k) for k in self.steps},
                "quantization": {"mode": self.mode, "io": self.io}, "post": list(self.post),
                "qat_scheme": self.qat_scheme, "max_drop": self.max_drop}


def _data_dir(package: str) -> Path:
    return Path(str(resources.files(f"edgekit.{package}")))


def _load_validated(package: str, name: str, what: str, schema: dict) -> tuple[dict, str]:
    """Find, parse and validate a data file; its `name` must match the file name."""
    path = _find(package, name, what)
    data = read_yaml(path)
    check(data, schema, path.name)
    if data["name"] != path.stem:
        raise ConfigError(f"{path.name}: 'name' is {data['name']!r} but the file is {path.stem}.yaml")
    return data, path.name


def _names(package: str) -> list[str]:
    return sorted(p.stem for p in _data_dir(package).glob("*.yaml"))


def _find(package: str, name: str, what: str) -> Path:
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"{what} file {name} does not exist")
        return path
    path = _data_dir(package) / f"{name}.yaml"
    if not path.is_file():
        known = _names(package)
        hint = difflib.get_close_matches(name, known, n=1)
        extra = f"; did you mean '{hint[0]}'?" if hint else ""
        raise ConfigError(f"unknown {what} '{name}' (known: {', '.join(known)}){extra}")
    return path


def profile_names() -> list[str]:
    return _names("device_profiles")


def recipe_names() -> list[str]:
    return _names("converters")


def load_profile(name: str) -> DeviceProfile:
    """Load a device profile by name (or from a .yaml path), validated."""
    data, source = _load_validated("device_profiles", name, "device profile", PROFILE_SCHEMA)
    if not data["threads"] or any(t < 1 for t in data["threads"]):
        raise ConfigError(f"{source}: 'threads' must list positive thread counts")
    q = data["quantization"]
    tile = data.get("channel_multiple", 8)
    if not (tile == "auto" or (isinstance(tile, int) and not isinstance(tile, bool) and tile >= 1)):
        raise ConfigError(f"{source}: 'channel_multiple' must be a positive integer or 'auto', got {tile!r}")
    return DeviceProfile(
        name=data["name"], description=data["description"], arch=data["arch"],
        runtimes=tuple(Runtime(r["name"], str(r["version"])) for r in data["runtimes"]),
        delegates=tuple(data["delegates"]), threads=tuple(data["threads"]),
        quant_modes=tuple(q["modes"]), io_dtypes=tuple(q["io_dtypes"]),
        static_shapes=bool(q.get("static_shapes", False)),
        default_recipes=tuple(data["default_recipes"]), cores=data.get("cores"),
        memory_mb=data.get("memory_mb"), max_model_bytes=data.get("max_model_bytes"),
        thermal=dict(data.get("thermal") or {}), source=source, channel_multiple=tile,
        software={k: str(v) for k, v in (data.get("software") or {}).items()})


def load_recipe(name: str) -> Recipe:
    """Load a conversion recipe by name (or from a .yaml path), validated."""
    data, source = _load_validated("converters", name, "recipe", RECIPE_SCHEMA)
    opt = data.get("optimize") or {}
    q = data["quantization"]
    io = q.get("io", "int8" if q["mode"] == "int8" else "float32")
    if q.get("selective") and (q["mode"] != "int8" or io != "float32" or "edgetpu_compile" in (data.get("post") or ())):
        raise ConfigError(f"{source}: 'quantization.selective' needs mode int8 with io float32 (float layers sit "
                          f"between int8 ones) and no Edge TPU compile")
    if q["mode"] != "int8" and io in ("int8", "uint8"):
        raise ConfigError(f"{source}: 'quantization.io' {io} needs 'quantization.mode' int8")
    if opt.get("qat") and q["mode"] not in ("int8",):
        raise ConfigError(f"{source}: 'optimize.qat' needs 'quantization.mode' int8, got {q['mode']}")
    post = tuple(data.get("post") or ())
    if "edgetpu_compile" in post and (q["mode"] != "int8"):
        raise ConfigError(f"{source}: 'post: edgetpu_compile' needs full-integer int8 quantization")
    prune, filters = opt.get("prune"), None
    if prune and prune.get("structure") == "filters":
        prune, filters = None, dict(opt["prune"])
        filters.setdefault("target_flops", 0.5)
        tile = filters.get("channel_multiple", "device")
        if not (tile == "device" or (isinstance(tile, int) and not isinstance(tile, bool) and tile >= 1)):
            raise ConfigError(f"{source}: 'optimize.prune.channel_multiple' must be a positive integer or "
                              f"'device' (the device profile's int8 kernel tile), got {tile!r}")
    elif prune and "target" not in prune and prune.get("structure") != "2:4":
        raise ConfigError(f"{source}: 'optimize.prune' needs 'target' (a sparsity such as 0.8, or auto)")
    clusters = (opt.get("cluster") or {}).get("clusters")
    if clusters is not None and not (clusters == "auto" or isinstance(clusters, int) and not isinstance(clusters, bool)
                                     and 2 <= clusters <= 256):
        raise ConfigError(f"{source}: 'optimize.cluster.clusters' must be 2..256 or 'auto', got {clusters!r}")
    for where, value, lo, hi in (("optimize.prune.target_flops", (filters or {}).get("target_flops"), 0.05, 0.99),
                                 ("optimize.factorize.energy", (opt.get("factorize") or {}).get("energy"), 0.1,
                                  0.9999)):
        if value is not None and not (value == "auto" or isinstance(value, (int, float))
                                      and not isinstance(value, bool) and lo <= value <= hi):
            raise ConfigError(f"{source}: '{where}' must be between {lo} and {hi} or 'auto', got {value!r}")
    target = (prune or {}).get("target")
    if isinstance(target, str) and target != "auto" or isinstance(target, (int, float)) and not 0 <= target <= 0.99:
        raise ConfigError(f"{source}: 'optimize.prune.target' must be a sparsity between 0 and 0.99 or 'auto', "
                          f"got {target!r}")
    return Recipe(name=data["name"], description=data["description"], mode=q["mode"], io=io,
                  prune=prune, cluster=opt.get("cluster"), qat=opt.get("qat"), post=post, source=source,
                  factorize=opt.get("factorize"), filters=filters, distill=opt.get("distill"),
                  max_drop=float(data.get("max_drop", DEFAULT_MAX_DROP)), selective=bool(q.get("selective")))


def check_recipe_fits(recipe: Recipe, profile: DeviceProfile) -> None:
    """Raise ConfigError when the profile cannot run what the recipe produces."""
    why = []
    if recipe.mode not in profile.quant_modes:
        why.append(f"quantization {recipe.mode} (allowed: {', '.join(profile.quant_modes)})")
    if recipe.io not in profile.io_dtypes:
        why.append(f"{recipe.io} input/output (allowed: {', '.join(profile.io_dtypes)})")
    if "edgetpu_compile" in recipe.post and not profile.edgetpu:
        why.append("an Edge TPU compile step but the device has no Edge TPU")
    if why:
        raise ConfigError(f"recipe '{recipe.name}' cannot run on device '{profile.name}': {'; '.join(why)}")


def load_profiles() -> list[DeviceProfile]:
    return [load_profile(n) for n in profile_names()]


def load_recipes() -> list[Recipe]:
    return [load_recipe(n) for n in recipe_names()]
