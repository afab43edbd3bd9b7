"""Boards in parallel, one job per board at a time (also across processes), each result committed at once."""
from __future__ import annotations

import fcntl
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from collections.abc import Callable

from ..compat import runtime_problem
from ..errors import ConnectError, EdgekitError, RemoteError, TrustError
from ..profiles import Runtime, load_profile
from ..store import Measurement, Store
from .jobs import Job
from .session import BoardSession, open_session


@dataclass
class Options:
    store: str | None = None
    force: bool = False
    timeout: float = 600.0
    retries: int = 2
    backoff: float = 1.0
    known_hosts: str | None = None
    accept_new_host: bool = False
    ask_password: bool = False
    connect_timeout: float = 10.0
    lock_dir: str | None = None
    lock_timeout: float = 3600.0
    batch: int = 16  # jobs per runner start-up (results still stream in one by one)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class BoardLock:
    """An exclusive lock on a board held by this process (flock on a local file)."""

    def __init__(self, board: str, lock_dir: str | None, timeout: float, stop: threading.Event, emit):
        d = Path(lock_dir or Path.home() / ".cache" / "edgekit" / "locks")
        d.mkdir(parents=True, exist_ok=True)
        self.path, self.timeout, self.stop, self.emit, self.board = d / f"{board}.lock", timeout, stop, emit, board

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        start, told = time.monotonic(), False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if not told:
                    self.emit({"event": "waiting", "board": self.board, "message": "board busy (another edgekit "
                               "process is profiling it); waiting"})
                    told = True
                if self.stop.is_set() or time.monotonic() - start > self.timeout:
                    os.close(self.fd)
                    raise RemoteError(f"board {self.board}: still locked by another edgekit after {self.timeout:.0f} s"
                                      ) from None
                time.sleep(0.2)

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _row(job: Job, session: BoardSession | None, started: str, status: str, error: str | None = None,
         result: dict | None = None, attempts: int = 1) -> Measurement:
    s = job.settings
    runtime = (result or {}).get("runtime") or (session.runtime if session else None) or {}
    row: dict[str, Any] = {
        "settings_key": job.key, "status": status, "error": error, "model_sha256": job.model.info.sha256,
        "model_name": job.model.name, "manifest_path": job.model.manifest_path, "variant": job.model.variant,
        "board": job.board.name, "profile": job.board.profile, "host": job.board.host or "localhost",
        "runtime_name": runtime.get("name"), "runtime_version": runtime.get("version"), "threads": job.threads,
        "delegate": s.delegate, "warmup_runs": s.warmup, "min_runs": s.runs, "min_seconds": s.min_seconds,
        "repeat_index": job.repeat_index, "input": s.input_sha or "random", "started_at": started,
        "finished_at": _now(), "attempts": attempts,
    }
    if result and result.get("status") == "ok":
        st = result["stats"]
        fp = result.get("fingerprint") or {}
        before = fp.get("temperatures_before_c") or {}
        after = fp.get("temperatures_c") or {}
        row.update(n_runs=st["n"], load_ms=result["load_ms"], first_ms=result["first_ms"], mean_ms=st["mean_ms"],
                   std_ms=st["std_ms"], min_ms=st["min_ms"], max_ms=st["max_ms"], p50_ms=st["p50_ms"],
                   p90_ms=st["p90_ms"], p99_ms=st["p99_ms"], peak_rss_kb=result.get("peak_rss_kb"),
                   throttled=int(bool(result.get("throttled"))), cooled_s=result.get("cooled_s"),
                   temp_before_c=max(before.values()) if before else None,
                   temp_after_c=max(after.values()) if after else None,
                   latencies_ms=result["latencies_ms"], fingerprint=fp)
    elif session is not None:
        row["fingerprint"] = session.probe.get("fingerprint")
    # as the board reports it (the runner detects user-mode emulation itself); such latencies are not the hardware's
    row["emulated"] = int(bool((row.get("fingerprint") or {}).get("emulated")))
    return Measurement(**row)


class BoardWorker:
    def __init__(self, board, jobs: list[Job], opts: Options, stop: threading.Event, emit: Callable):
        self.board, self.jobs, self.opts, self.stop, self.emit = board, jobs, opts, stop, emit
        self.session: BoardSession | None = None
        self.results: list[dict] = []
        self.bytes_uploaded = 0

    def _connect(self) -> BoardSession:
        if self.session is None:
            self.session = open_session(
                self.board, known_hosts=self.opts.known_hosts, accept_new_host=self.opts.accept_new_host,
                ask_password=self.opts.ask_password, timeout=self.opts.connect_timeout,
                command_timeout=self.opts.timeout)
        return self.session

    def _drop(self) -> None:
        if self.session is not None:
            self.bytes_uploaded += self.session.conn.bytes_uploaded
            self.session.close()
            self.session = None

    def abort(self) -> None:
        """From another thread: close the connection under a running measurement (it then fails, unrecorded)."""
        session = self.session
        if session is not None:
            try:
                session.conn.close()
            except Exception:
                pass

    def _precheck(self, session: BoardSession, job: Job) -> str | None:
        """Why this job cannot run on the board (no runtime, ops its runtime cannot load), or None."""
        rt = session.runtime
        if rt is None:
            return f"no TFLite runtime on {self.board.name} (ai_edge_litert, tflite_runtime or tensorflow) for " \
                   f"{self.board.python}"
        if rt.get("version"):
            problem = runtime_problem(job.model.info, Runtime(rt["name"], rt["version"]))
            if problem:
                return f"not run: {problem}"
        return None

    @staticmethod
    def _outcome(result: dict) -> tuple[str, str | None]:
        if result.get("status") != "ok":
            return "failed", f"runner: {result.get('error', 'unknown error')}"
        return "ok", None

    def _run_batch(self, store: Store, batch: list[Job], tries: dict) -> set[str]:
        """Measure `batch` in one runner start-up, recording each result as it streams in; returns the keys
        finished (recorded).  Connection problems propagate; what was recorded stays recorded."""
        session = self._connect()
        finished, runnable, damaged = set(), [], []
        for job in batch:
            problem = self._precheck(session, job)
            if problem:
                self._record(store, job, _now(), "failed", problem, None, tries.get(job.key, 0) + 1)
                finished.add(job.key)
            else:
                runnable.append(job)
        mark = [_now()]

        def on_result(job: Job, result: dict) -> None:
            if result.get("hash_mismatch"):  # damaged on the board: the single path uploads it again, once
                damaged.append(job)
                return
            status, error = self._outcome(result)
            self._record(store, job, mark[0], status, error, result, tries.get(job.key, 0) + 1)
            finished.add(job.key)
            mark[0] = _now()
        profile = load_profile(self.board.profile)
        if runnable:
            session.measure_batch(runnable, profile, self.opts.timeout, on_result)
        for job in damaged:
            started = _now()
            result = session.measure(job, profile, self.opts.timeout)
            status, error = self._outcome(result)
            self._record(store, job, started, status, error, result, tries.get(job.key, 0) + 1)
            finished.add(job.key)
        return finished

    def run(self) -> None:
        try:
            with BoardLock(self.board.name, self.opts.lock_dir, self.opts.lock_timeout, self.stop, self.emit):
                self._run_jobs(Store(self.opts.store))
        except EdgekitError as e:
            self.emit({"event": "board_error", "board": self.board.name, "message": self.redact(str(e))})
        except Exception as e:
            self.emit({"event": "board_error", "board": self.board.name,
                       "message": self.redact(f"internal error: {type(e).__name__}: {e}")})
        finally:
            self._drop()
            self.emit({"event": "board_done", "board": self.board.name, "bytes_uploaded": self.bytes_uploaded,
                       "stopped": self.stop.is_set()})

    def redact(self, text: str | None) -> str | None:
        """Key file paths never reach the store or the screen."""
        if not text:
            return text
        ident = getattr(self.board, "identity", None)
        for secret in {ident, str(Path(ident).expanduser()) if ident else None}:
            if secret:
                text = text.replace(secret, "<identity key>")
        return text

    def _run_jobs(self, store: Store) -> None:
        """Every job not yet in the store, a batch per runner start-up, until done, stopped or given up."""
        todo = [job for job in self.jobs if self.opts.force or not self._answered(store, job)]
        tries: dict[str, int] = {}  # failed runs each job was part of
        while todo and not self.stop.is_set():
            try:
                finished = self._run_batch(store, todo[:self.opts.batch], tries)
            except TrustError as e:  # host key / auth problems are never retried: every job fails with the reason
                self._fail_all(store, todo, str(e), tries.get(todo[0].key, 0) + 1)
                return
            except (ConnectError, RemoteError) as e:
                todo = self._after_failure(store, todo, tries, e)
                continue
            todo = [j for j in todo if j.key not in finished]

    def _answered(self, store: Store, job: Job) -> bool:
        if store.done(job.key):
            self.emit({"event": "skipped", "job": job.label(), "board": self.board.name})
            return True
        return False

    def _after_failure(self, store: Store, todo: list[Job], tries: dict[str, int], e: Exception) -> list[Job]:
        """A batch broke off.  Each job of it not recorded counts one try; the first of them decides: retried
        after a backoff while it has tries left; then it fails alone if the board still answers (RemoteError),
        or every job left fails if the board cannot be reached (ConnectError).  Returns what is left to do."""
        self._drop()
        recorded = {r["settings_key"] for r in self.results}
        todo = [j for j in todo if j.key not in recorded]
        if not todo:
            return []
        for job in todo[:self.opts.batch]:
            tries[job.key] = tries.get(job.key, 0) + 1
        head, attempts = todo[0], tries[todo[0].key]
        if attempts <= self.opts.retries and not self.stop.is_set():
            delay = self.opts.backoff * 2 ** (attempts - 1)
            self.emit({"event": "retry", "job": head.label(), "board": self.board.name,
                       "message": f"{e}; retrying in {delay:.0f} s"})
            self.stop.wait(delay)
            return todo
        reason = f"{e} (after {attempts} attempts)"
        if isinstance(e, ConnectError):
            self._fail_all(store, todo, reason, attempts)
            return []
        self._record(store, head, _now(), "failed", reason, None, attempts)
        return todo[1:]

    def _fail_all(self, store: Store, todo: list[Job], reason: str, attempts: int) -> None:
        """The board cannot be reached: the first job records its attempts, the rest fail without trying."""
        self._record(store, todo[0], _now(), "failed", reason, None, attempts)
        for job in todo[1:]:
            self._record(store, job, _now(), "failed", reason, None, 0)

    def _record(self, store, job, started, status, error, result, attempts) -> None:
        if status != "ok" and self.stop.is_set():
            return  # stopped by the user, not a board failure: a rerun measures it
        measurement = _row(job, self.session, started, status, self.redact(error), result, attempts)
        row = measurement.to_row()
        row["id"] = store.add(measurement)
        self.results.append(row)
        self.emit({"event": status, "job": job.label(), "board": self.board.name, "row": row})


def run_profile(jobs_by_board: dict[str, list[Job]], opts: Options, emit: Callable = lambda e: None) -> list[dict]:
    """Run every board's jobs, boards in parallel.  Ctrl-C stops cleanly: finished rows are already stored."""
    Store(opts.store).close()  # create the schema once, before the threads race for it
    stop = threading.Event()
    workers = [BoardWorker(jobs[0].board, jobs, opts, stop, emit) for jobs in jobs_by_board.values() if jobs]
    threads = [threading.Thread(target=w.run, name=f"board-{w.board.name}", daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        for w in workers:  # end measurements in flight; rows already stored stay, a rerun does the rest
            w.abort()
        raise
    return [r for w in workers for r in w.results]
