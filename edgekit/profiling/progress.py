"""Progress of a profiling run: a rich bar on a terminal, one plain line per event otherwise."""
from __future__ import annotations

import sys
import threading


class Progress:
    def __init__(self, total: int, quiet: bool = False, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.done, self.quiet = total, 0, quiet
        self.board_errors: list[str] = []
        self.uploaded: dict[str, int] = {}
        self.lock = threading.Lock()
        self.bar = None
        if not quiet and self.stream.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn
            self.bar = RichProgress(TextColumn("profiling"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.description}"), transient=True)
            self.task = self.bar.add_task("", total=total)
            self.bar.start()

    def _line(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.console.print(text, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def event(self, e: dict) -> None:
        with self.lock:
            kind = e["event"]
            if kind in ("ok", "failed", "skipped"):
                self.done += 1
                if self.bar is not None:
                    self.bar.update(self.task, completed=self.done, description=e["job"])
            prefix = f"[{self.done}/{self.total}]"
            if kind == "ok":
                r = e["row"]
                flag = " (throttled)" if r["throttled"] else ""
                self._line(f"{prefix} {e['job']}: p50 {r['p50_ms']:.3f} ms, p90 {r['p90_ms']:.3f} ms, "
                           f"{r['n_runs']} runs, {r['runtime_name']} {r['runtime_version']}{flag}")
            elif kind == "failed":
                self._line(f"{prefix} {e['job']}: FAILED: {e['row']['error']}")
            elif kind == "skipped":
                self._line(f"{prefix} {e['job']}: already in the store (use --force to measure again)")
            elif kind == "board_done":
                self.uploaded[e["board"]] = e["bytes_uploaded"]
                state = "stopped" if e.get("stopped") else "finished"
                self._line(f"board {e['board']}: {state}, uploaded {e['bytes_uploaded']:,} bytes")
            elif kind == "board_error":
                self.board_errors.append(f"{e['board']}: {e['message']}")  # printed in the final summary
            else:
                self._line(f"{e.get('job', e['board'])}: {e['message']}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
