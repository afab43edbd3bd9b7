"""`profile(models, boards, ...)`: the library call behind `edgekit profile` and `edgekit sweep`."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..remote.inventory import Board
from .jobs import Settings, build_jobs, model_ref
from .progress import Progress
from .scheduler import Options, run_profile


@dataclass
class ProfileResult:
    rows: list[dict]  # this run's measurements (ok and failed), as stored
    keys: set[str]  # settings keys of every job asked for (the store answers for those already measured)
    total: int
    done: int
    board_errors: list[str] = field(default_factory=list)
    bytes_uploaded: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] != "ok"]

    @property
    def missing(self) -> int:
        """Jobs that ended with no row at all (their board dropped out)."""
        return self.total - self.done

    @property
    def ok(self) -> bool:
        return not (self.failed or self.board_errors or self.missing)


def input_settings(settings: Settings, input_path: str | Path | None) -> Settings:
    """Settings with a fixed input (.npy), content-addressed like the models."""
    if input_path is None:
        return settings
    from .session import sha256_file
    p = Path(input_path)
    if not p.is_file() or p.suffix != ".npy":
        raise ConfigError(f"--input {p}: expected an existing .npy file")
    return Settings(**{**settings.__dict__, "input_path": p.resolve(), "input_sha": sha256_file(p)})


def profile(models: Sequence[str | Path], boards: Sequence[Board], *, threads: list[int] | None = None, repeat: int = 1,
            settings: Settings | None = None, input_path: str | Path | None = None,
            options: Options | None = None, quiet: bool = False) -> ProfileResult:
    """Measure every model on every board (each board's profile's thread counts unless `threads`), `repeat`
    times, into the store `options.store`; boards in parallel, one job per board at a time.  Progress goes to
    stderr (a bar on a terminal) unless `quiet`."""
    refs = [model_ref(m) for m in models]
    jobs = build_jobs(refs, list(boards), threads, repeat, input_settings(settings or Settings(), input_path))
    progress = Progress(sum(len(j) for j in jobs.values()), quiet=quiet)
    try:
        rows = run_profile(jobs, options or Options(), progress.event)
    finally:
        progress.close()
    return ProfileResult(rows=rows, keys={j.key for js in jobs.values() for j in js}, total=progress.total,
                         done=progress.done, board_errors=list(progress.board_errors),
                         bytes_uploaded=dict(progress.uploaded))
