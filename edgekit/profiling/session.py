"""One board, connected: content-addressed deployment of the runner and models, probing, measuring."""
from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path

from ..errors import RemoteError
from ..remote.base import Connection
from ..remote.connect import connect
from ..remote.inventory import Board

RUNNER = Path(__file__).with_name("runner.py")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_json_line(text: str, board: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    raise RemoteError(f"board {board}: runner printed no result ({text.strip()[-200:] or 'no output'})")


class ContentCache:
    """Files deployed to a board's cache folder by content (sha256 in the name), uploaded once, atomically."""
    conn: Connection
    cache: str
    verified: set[str]

    def ensure(self, local: Path, sha: str, suffix: str, prefix: str = "", force: bool = False) -> str:
        """Upload `local` as <cache>/<prefix><sha><suffix> unless it is already there; atomic."""
        remote = f"{self.cache}/{prefix}{sha}{suffix}"
        if not force and remote in self.verified:
            return remote
        if force or self.conn.size(remote) != local.stat().st_size:
            self.conn.put(local, remote)
        self.verified.add(remote)
        return remote

    def forget(self, remote: str) -> None:
        self.verified.discard(remote)


class BoardSession(ContentCache):
    def __init__(self, board: Board, conn: Connection, command_timeout: float = 60.0):
        self.board, self.conn = board, conn
        self.command_timeout = command_timeout  # every remote wait obeys the user's --timeout
        if hasattr(conn, "set_timeout"):
            conn.set_timeout(command_timeout)
        home = conn.home()
        wd = board.workdir or ".cache/edgekit"
        self.cache = wd if wd.startswith("/") else f"{home.rstrip('/')}/{wd}"
        conn.makedirs(self.cache)
        self.verified: set[str] = set()
        self.runner_sha = sha256_file(RUNNER)
        self.runner = self.ensure(RUNNER, self.runner_sha, ".py", prefix="runner-")
        self.probe = self._probe()
        if self.probe.get("runner_sha256") != self.runner_sha:  # damaged copy on the board: replace it once
            self.ensure(RUNNER, self.runner_sha, ".py", prefix="runner-", force=True)
            self.probe = self._probe()
            if self.probe.get("runner_sha256") != self.runner_sha:
                raise RemoteError(f"board {board.name}: the runner on the board does not match after re-upload")

    @classmethod
    def open(cls, board: Board, command_timeout: float = 60.0, **connect_args) -> BoardSession:
        conn = connect(board, **connect_args)
        try:
            return cls(board, conn, command_timeout)
        except BaseException:
            conn.close()
            raise

    def _probe(self) -> dict:
        res = self.conn.run([self.board.python, self.runner, "--probe", "--watch-stdin"],
                            timeout=self.command_timeout)
        if res.returncode == 127 or (res.returncode != 0 and not res.stdout.strip()):
            raise RemoteError(f"board {self.board.name}: cannot run {self.board.python!r} "
                              f"({(res.stderr.strip().splitlines() or ['exit ' + str(res.returncode)])[-1]})")
        return parse_json_line(res.stdout, self.board.name)

    @property
    def runtime(self) -> dict | None:
        """The runtime the runner will use: the board's forced one, else the first runtime its device profile names
        that the board has, else the first the board has (the runner's own order)."""
        found = self.probe.get("runtimes") or []
        if self.board.runtime != "auto":
            return next((r for r in found if r["module"] == self.board.runtime), None)
        for wanted in self._profile_runtimes:
            for r in found:
                if r["name"] == wanted:
                    return r
        return found[0] if found else None

    @property
    def runtime_module(self) -> str:
        """The runner's --runtime argument for `runtime`."""
        rt = self.runtime
        return rt["module"] if rt else self.board.runtime

    @cached_property
    def _profile_runtimes(self) -> list[str]:
        from ..profiles import load_profile  # boards name profiles that were checked when they were loaded
        return [r.name for r in load_profile(self.board.profile).runtimes]

    def job_args(self, job, profile) -> list[str]:
        """Deploy the model (and input), content-addressed; the runner's arguments for this job."""
        s = job.settings
        remote_model = self.ensure(job.model.path, job.model.info.sha256, ".tflite")
        args = ["--model", remote_model, "--expect-sha256", job.model.info.sha256, "--threads", str(job.threads),
                "--delegate", s.delegate, "--warmup", str(s.warmup), "--runs", str(s.runs),
                "--min-seconds", str(s.min_seconds)]
        if s.input_path is not None:
            args += ["--input", self.ensure(s.input_path, s.input_sha, ".npy")]
        th = profile.thermal
        if th.max_temp_c is not None:
            args += ["--max-temp", str(th.max_temp_c), "--cool-wait", str(th.cool_down_s)]
        for zone in th.zones:
            args += ["--thermal-zone", zone]
        args += ["--throttle-probe", th.throttle_probe]
        return args

    def measure_batch(self, jobs: list, profile, timeout: float, on_result) -> None:
        """Measure `jobs` in one runner start-up; `on_result(job, result)` as each finishes (streamed).  Each job
        may take `timeout` seconds on the board.  Raises RemoteError if the runner stops before the last one."""
        argvs = [["--runtime", self.runtime_module, *self.job_args(job, profile)] for job in jobs]
        got: set[int] = set()

        def line(text: str) -> None:
            text = text.strip()
            if not text.startswith("{"):
                return
            try:
                result = json.loads(text)
            except json.JSONDecodeError:
                return
            index = result.pop("job", None)
            if isinstance(index, int) and 0 <= index < len(jobs) and index not in got:
                got.add(index)
                on_result(jobs[index], result)
        res = self.conn.run([self.board.python, self.runner, "--watch-stdin", "--batch", json.dumps(argvs),
                             "--job-timeout", str(timeout)], timeout=timeout * (len(jobs) + 1), on_line=line)
        if len(got) < len(jobs):
            tail = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1][:200]
            raise RemoteError(f"board {self.board.name}: the runner stopped after {len(got)} of {len(jobs)} "
                              f"models ({tail})")

    def measure(self, job, profile, timeout: float) -> dict:
        """Deploy the model (content-addressed) and run the runner once; returns its JSON result."""
        args = self.job_args(job, profile)
        remote_model = args[1]
        result = self.run_runner(args, timeout=timeout)
        if result.get("hash_mismatch"):  # damaged on the board: upload again, once
            self.forget(remote_model)
            self.ensure(job.model.path, job.model.info.sha256, ".tflite", force=True)
            result = self.run_runner(args, timeout=timeout)
        return result

    def run_runner(self, args: list[str], timeout: float) -> dict:
        argv = [self.board.python, self.runner, "--watch-stdin", "--runtime", self.runtime_module, *args]
        res = self.conn.run(argv, timeout=timeout)
        return parse_json_line(res.stdout + "\n" + res.stderr, self.board.name) if res.stdout.strip() == "" \
            else parse_json_line(res.stdout, self.board.name)

    def close(self) -> None:
        self.conn.close()


class AdbSession(ContentCache):
    """An Android device: the user's benchmark_model binary instead of the Python runner."""

    def __init__(self, board: Board, conn: Connection):
        self.board, self.conn = board, conn
        self.cache = conn.home()
        conn.makedirs(self.cache)
        self.verified: set[str] = set()
        if not board.benchmark_binary:
            raise RemoteError(f"board {board.name}: Android boards need 'benchmark_binary' (a benchmark_model "
                              f"build for the phone's ABI)")
        local = Path(board.benchmark_binary).expanduser()
        if not local.is_file():
            raise RemoteError(f"board {board.name}: benchmark_binary {local} does not exist")
        self.binary = self.ensure(local, sha256_file(local), "", prefix="benchmark_model-")
        conn.run(["chmod", "755", self.binary])
        self.probe = {"runtimes": [{"name": "benchmark_model", "module": "benchmark_model", "version": None}],
                      "fingerprint": {}}

    @property
    def runtime(self) -> dict:
        return {"name": "benchmark_model", "module": "benchmark_model", "version": None}

    def measure(self, job, profile, timeout: float) -> dict:
        from ..remote.adb import benchmark_argv, parse_benchmark_output
        s = job.settings
        remote_model = self.ensure(job.model.path, job.model.info.sha256, ".tflite")
        argv = benchmark_argv(self.binary, remote_model, job.threads, s.warmup, s.runs, s.min_seconds, s.delegate)
        res = self.conn.run(argv, timeout=timeout)
        return parse_benchmark_output(res.stdout + "\n" + res.stderr)

    def measure_batch(self, jobs: list, profile, timeout: float, on_result) -> None:
        for job in jobs:  # benchmark_model runs one model per start
            on_result(job, self.measure(job, profile, timeout))

    def close(self) -> None:
        self.conn.close()


def open_session(board: Board, command_timeout: float = 60.0, **connect_args):
    if board.transport == "adb":
        from ..remote.adb import AdbConnection
        conn = AdbConnection(board.name, board.serial or "")
        try:
            return AdbSession(board, conn)
        except BaseException:
            conn.close()
            raise
    return BoardSession.open(board, command_timeout, **connect_args)
