"""What to measure: models x boards x threads x repeats, each with a key that identifies its settings."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..flatbuffer import ModelInfo, read_model
from ..remote.inventory import Board


@dataclass(frozen=True)
class ModelRef:
    path: Path
    info: ModelInfo
    name: str
    manifest_path: str | None = None
    variant: str | None = None


@dataclass(frozen=True)
class Settings:
    warmup: int = 10
    runs: int = 100
    min_seconds: float = 0.0
    delegate: str = "xnnpack"
    input_path: Path | None = None
    input_sha: str | None = None


@dataclass(frozen=True)
class Job:
    model: ModelRef
    board: Board
    threads: int
    repeat_index: int
    settings: Settings = field(default_factory=Settings)

    @property
    def key(self) -> str:
        s = self.settings
        parts = [self.model.info.sha256, self.board.name, self.threads, s.delegate, s.warmup, s.runs,
                 s.min_seconds, self.repeat_index, s.input_sha or "random", self.board.runtime]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def label(self) -> str:
        return f"{self.board.name} {self.model.name} t{self.threads}" + (
            f" #{self.repeat_index + 1}" if self.repeat_index else "")


def model_ref(path: str | Path) -> ModelRef:
    """Read the model (failing early on a corrupt file) and find the manifest that describes it, if any."""
    path = Path(path).resolve()
    info = read_model(path)
    manifest = path.parent / "manifest.json"
    if manifest.exists():
        try:
            data = json.loads(manifest.read_text())
            for v in data.get("variants", []):
                if v.get("sha256") == info.sha256:
                    return ModelRef(path, info, v["name"], str(manifest), v["name"])
        except (json.JSONDecodeError, AttributeError, TypeError):
            pass
    return ModelRef(path, info, path.stem)


def build_jobs(models: list[ModelRef], boards: list[Board], threads: list[int] | None, repeat: int,
               settings: Settings) -> dict[str, list[Job]]:
    """Jobs per board name, in order."""
    from ..profiles import load_profile
    per_board = {}
    for b in boards:
        counts = threads or list(load_profile(b.profile).threads)
        # repeats interleaved (every model once, then again): a board whose speed drifts over minutes shifts every
        # model's repeats alike instead of one model's
        per_board[b.name] = [Job(m, b, t, r, settings) for r in range(repeat) for m in models for t in counts]
    return per_board
