"""Device profiles (device_profiles/*.yaml) and conversion recipes (converters/*.yaml) as frozen dataclasses."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Literal, get_args
from importlib import resources
from pathlib import Path

from .errors import ConfigError
from .optimize.steps import STEPS, Cluster, Distill, Factorize, Filters, Prune, Qat
from .record import parse, rule, to_dict
from .schema import read_yaml

RuntimeName = Literal["ai-edge-litert", "tflite-runtime", "tensorflow.lite"]
Delegate = Literal["xnnpack", "edgetpu", "gpu", "none"]
QuantMode = Literal["float32", "float16", "dynamic", "int8", "int16x8"]
IODtype = Literal["float32", "int8", "uint8", "int16"]
PostStep = Literal["edgetpu_compile"]
RUNTIMES: tuple[str, ...] = get_args(RuntimeName)
DELEGATES: tuple[str, ...] = get_args(Delegate)
QUANT_MODES: tuple[str, ...] = get_args(QuantMode)
IO_DTYPES: tuple[str, ...] = get_args(IODtype)
POST_STEPS: tuple[str, ...] = get_args(PostStep)


def _tile_check(value) -> str | None:
    ok = value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)
    return None if ok else f"must be a positive integer or 'auto', got {value!r}"


@dataclass(frozen=True)
class Runtime:
    name: RuntimeName
    version: str


@dataclass(frozen=True)
class QuantizationRules:
    modes: tuple[QuantMode, ...]
    io_dtypes: tuple[IODtype, ...]
    static_shapes: bool = False


@dataclass(frozen=True)
class Thermal:
    zones: tuple[str, ...] = ()  # thermal zone files the runner reads (default: every /sys/class/thermal zone)
    max_temp_c: float | None = rule(None, minimum=0, maximum=150)
    cool_down_s: int = rule(0, minimum=0)
    throttle_probe: Literal["vcgencmd", "jetson_nvpmodel", "none"] = "none"


@dataclass(frozen=True)
class Software:
    """The board's software as the profile assumes it; `boards --check` names any difference."""
    os: str | None = None
    python: str | None = None
    numpy: str | None = None


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    arch: Literal["aarch64", "armv7l", "x86_64"]
    runtimes: tuple[Runtime, ...] = rule(check=lambda v: None if v else "must name at least one runtime")
    delegates: tuple[Delegate, ...] = rule()
    threads: tuple[int, ...] = rule(minimum=1, check=lambda v: None if v else "must list positive thread counts")
    quantization: QuantizationRules = rule()
    default_recipes: tuple[str, ...] = rule()
    cores: int | None = rule(None, minimum=1)
    memory_mb: int | None = rule(None, minimum=1)
    max_model_bytes: int | None = rule(None, minimum=1)  # a hard limit (flash, an asset budget): over it, a problem
    # an accelerator's on-chip parameter cache (the Edge TPU's ~8 MB): a larger model still runs, with the rest of
    # its parameters streamed from host memory on every inference, so it is a warning, not a problem
    param_cache_bytes: int | None = rule(None, minimum=1)
    thermal: Thermal = Thermal()
    software: Software = Software()
    channel_multiple: int | str = rule(8, check=_tile_check)  # int8 kernel channel tile; 'auto' = this machine's CPU
    source: str = rule("", internal=True)  # the file it came from

    @property
    def quant_modes(self) -> tuple[str, ...]:
        return self.quantization.modes

    @property
    def io_dtypes(self) -> tuple[str, ...]:
        return self.quantization.io_dtypes

    @property
    def static_shapes(self) -> bool:
        return self.quantization.static_shapes

    @property
    def runtime(self) -> Runtime:
        """The runtime the profile assumes first (compatibility is judged against it)."""
        return self.runtimes[0]

    @property
    def edgetpu(self) -> bool:
        return "edgetpu" in self.delegates

    def to_dict(self) -> dict:
        return to_dict(self)


DEFAULT_MAX_DROP = 1.0  # points


@dataclass(frozen=True)
class OptimizeSpec:
    """`optimize:` of a recipe file; `prune` is a Prune, or a Filters when it says `structure: filters`."""
    factorize: Factorize | None = None
    distill: Distill | None = None
    prune: dict | None = None
    cluster: Cluster | None = None
    qat: Qat | None = None


@dataclass(frozen=True)
class QuantizationSpec:
    mode: QuantMode
    io: IODtype | None = None  # default: int8 for int8 models, float32 otherwise
    selective: bool = False  # int8 only: keep the layers with the largest int8 error float


@dataclass(frozen=True)
class RecipeFile:
    """A recipe file (converters/*.yaml) as written."""
    name: str
    description: str
    quantization: QuantizationSpec
    max_drop: float = rule(DEFAULT_MAX_DROP, minimum=0.0, maximum=100.0)  # points below the Keras model
    optimize: OptimizeSpec = OptimizeSpec()
    post: tuple[PostStep, ...] = ()


@dataclass(frozen=True)
class Recipe:
    """A recipe resolved for the pipeline: io decided, structured filter pruning split from magnitude pruning."""
    name: str
    description: str
    mode: str
    io: str
    prune: Prune | None = None
    cluster: Cluster | None = None
    qat: Qat | None = None
    post: tuple[str, ...] = ()
    source: str = ""
    factorize: Factorize | None = None
    filters: Filters | None = None  # structured filter pruning (prune: {structure: filters, target_flops: ...})
    distill: Distill | None = None  # knowledge distillation in every fine-tune of this recipe
    max_drop: float = DEFAULT_MAX_DROP  # accuracy budget: points below the original Keras model
    selective: bool = False  # int8: when over budget, keep the layers with the largest int8 error in float

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(s for s in STEPS if getattr(self, s) is not None)

    @property
    def qat_scheme(self) -> str | None:
        """The TF-MOT collaborative scheme QAT uses so earlier steps survive it."""
        if not self.qat:
            return None
        return {(True, True): "PCQAT", (False, True): "CQAT", (True, False): "PQAT"}.get(
            (self.prune is not None, self.cluster is not None), "QAT")

    def given(self, step: str) -> dict | None:
        """A step's settings as the recipe wrote them."""
        settings = getattr(self, step)
        return None if settings is None else settings.given

    def config(self) -> dict:
        """Everything that changes the produced model (not the name or description)."""
        out: dict[str, Any] = {"optimize": {k: self.given(k) for k in self.steps}, "distill": self.given("distill"),
               "mode": self.mode, "io": self.io, "post": list(self.post)}
        if self.selective:
            out["selective"] = True
        if self.auto or self.selective:
            out["max_drop"] = self.max_drop  # the budget decides the strength
        return out

    @property
    def auto(self) -> bool:
        """Some strength is searched within the accuracy budget (`target: auto`)."""
        return any(STEPS[s].searched(getattr(self, s)) for s in self.steps)

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description,
                "optimize": {k: self.given(k) for k in self.steps},
                "quantization": {"mode": self.mode, "io": self.io}, "post": list(self.post),
                "qat_scheme": self.qat_scheme, "max_drop": self.max_drop}


def _data_dir(package: str) -> Path:
    return Path(str(resources.files(f"edgekit.{package}")))


def _check_name(name: str, path: Path) -> None:
    if name != path.stem:
        raise ConfigError(f"{path.name}: 'name' is {name!r} but the file is {path.stem}.yaml")


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
    path = _find("device_profiles", name, "device profile")
    profile = parse(DeviceProfile, read_yaml(path), path.name, source=path.name)
    _check_name(profile.name, path)
    return profile


def load_recipe(name: str) -> Recipe:
    """Load a conversion recipe by name (or from a .yaml path), validated."""
    path = _find("converters", name, "recipe")
    f = parse(RecipeFile, read_yaml(path), path.name)
    _check_name(f.name, path)
    source, q, opt = path.name, f.quantization, f.optimize
    io = q.io or ("int8" if q.mode == "int8" else "float32")
    if q.selective and (q.mode != "int8" or io != "float32" or "edgetpu_compile" in f.post):
        raise ConfigError(f"{source}: 'quantization.selective' needs mode int8 with io float32 (float layers sit "
                          f"between int8 ones) and no Edge TPU compile")
    if q.mode != "int8" and io in ("int8", "uint8"):
        raise ConfigError(f"{source}: 'quantization.io' {io} needs 'quantization.mode' int8")
    if opt.qat and q.mode != "int8":
        raise ConfigError(f"{source}: 'optimize.qat' needs 'quantization.mode' int8, got {q.mode}")
    if "edgetpu_compile" in f.post and q.mode != "int8":
        raise ConfigError(f"{source}: 'post: edgetpu_compile' needs full-integer int8 quantization")
    prune, filters = None, None
    if opt.prune is not None:
        if opt.prune.get("structure") == "filters":
            given = opt.prune if "target_latency" in opt.prune else {
                **opt.prune, "target_flops": opt.prune.get("target_flops", 0.5)}
            filters = Filters.of(given, source, "optimize.prune.")
        else:
            prune = Prune.of(opt.prune, source, "optimize.prune.")
            if prune.target is None and prune.structure != "2:4":
                raise ConfigError(f"{source}: 'optimize.prune' needs 'target' (a sparsity such as 0.8, or auto)")
    return Recipe(name=f.name, description=f.description, mode=q.mode, io=io, prune=prune, cluster=opt.cluster,
                  qat=opt.qat, post=f.post, source=source, factorize=opt.factorize, filters=filters,
                  distill=opt.distill, max_drop=f.max_drop, selective=q.selective)


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
