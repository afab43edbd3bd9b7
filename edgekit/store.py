"""The latency store: SQLite (WAL), one row per measurement, committed as soon as it is taken."""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from .errors import StoreError

DEFAULT_STORE = "edgekit.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY,
    settings_key TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error TEXT,
    model_sha256 TEXT NOT NULL,
    model_name TEXT NOT NULL,
    manifest_path TEXT,
    variant TEXT,
    board TEXT NOT NULL,
    profile TEXT NOT NULL,
    host TEXT,
    runtime_name TEXT,
    runtime_version TEXT,
    threads INTEGER NOT NULL,
    delegate TEXT NOT NULL,
    warmup_runs INTEGER NOT NULL,
    min_runs INTEGER NOT NULL,
    min_seconds REAL NOT NULL,
    repeat_index INTEGER NOT NULL,
    input TEXT NOT NULL,
    n_runs INTEGER,
    load_ms REAL,
    first_ms REAL,
    mean_ms REAL,
    std_ms REAL,
    min_ms REAL,
    max_ms REAL,
    p50_ms REAL,
    p90_ms REAL,
    p99_ms REAL,
    peak_rss_kb INTEGER,
    throttled INTEGER NOT NULL DEFAULT 0,
    cooled_s REAL,
    temp_before_c REAL,
    temp_after_c REAL,
    latencies_ms TEXT,
    fingerprint TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    emulated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS measurements_key ON measurements (settings_key, status);
CREATE INDEX IF NOT EXISTS measurements_board ON measurements (board, status);
"""
COLUMNS = ("settings_key", "status", "error", "model_sha256", "model_name", "manifest_path", "variant", "board",
           "profile", "host", "runtime_name", "runtime_version", "threads", "delegate", "warmup_runs", "min_runs",
           "min_seconds", "repeat_index", "input", "n_runs", "load_ms", "first_ms", "mean_ms", "std_ms", "min_ms",
           "max_ms", "p50_ms", "p90_ms", "p99_ms", "peak_rss_kb", "throttled", "cooled_s", "temp_before_c",
           "temp_after_c", "latencies_ms", "fingerprint", "started_at", "finished_at", "attempts", "emulated")
# Columns added after the first release, with the value rows of older stores have: such stores open as they are
# (read-only ones read the default; writable ones gain the column).
ADDED = {"emulated": ("INTEGER NOT NULL DEFAULT 0", 0)}


def store_path(path: str | Path | None) -> Path:
    return Path(path or os.environ.get("EDGEKIT_STORE") or DEFAULT_STORE)


class Store:
    """One SQLite connection; open one per thread."""

    def __init__(self, path: str | Path | None = None, create: bool = True):
        """`create=False` opens an existing store read-only (table, select, report never alter the file)."""
        self.path = store_path(path)
        if not create and not self.path.exists():
            raise StoreError(f"store {self.path} does not exist (run `edgekit profile` first or pass --store)")
        try:
            if create:
                self.db = sqlite3.connect(str(self.path), timeout=30)
            else:
                self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA busy_timeout=30000")
            self._check_ours(create)
            if create:
                self.db.execute("PRAGMA journal_mode=WAL")
                with self.db:
                    self.db.executescript(SCHEMA)
                    for column, (decl, _) in ADDED.items():
                        if column not in self._have():
                            self.db.execute(f"ALTER TABLE measurements ADD COLUMN {column} {decl}")
            self.have = self._have()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"store {self.path}: {e}") from e

    def _check_ours(self, create: bool) -> None:
        """A SQLite file that is not an edgekit store is refused before anything is written to it."""
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables and create:
            return  # new and empty: ours to create
        have = {r[1] for r in self.db.execute("PRAGMA table_info(measurements)")} if "measurements" in tables \
            else set()
        if not {"settings_key", "model_sha256", "board", "latencies_ms"} <= have:
            self.db.close()
            raise StoreError(f"{self.path} is not an edgekit store (its tables: {', '.join(sorted(tables)[:5])}); "
                             f"left untouched")

    def _have(self) -> set[str]:
        return {r[1] for r in self.db.execute("PRAGMA table_info(measurements)")}

    def add(self, row: dict) -> int:
        data = dict(row)
        for k in ("latencies_ms", "fingerprint"):
            if data.get(k) is not None and not isinstance(data[k], str):
                data[k] = json.dumps(data[k])
        unknown = set(data) - set(COLUMNS)
        if unknown:
            raise StoreError(f"unknown store columns: {sorted(unknown)}")
        cols = [c for c in COLUMNS if c in data]
        try:
            with self.db:  # one transaction: the row is there entirely or not at all
                cur = self.db.execute(f"INSERT INTO measurements ({', '.join(cols)}) VALUES "
                                      f"({', '.join('?' for _ in cols)})", [data[c] for c in cols])
            return int(cur.lastrowid)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"store {self.path}: cannot write ({e})") from e

    def done(self, settings_key: str) -> bool:
        row = self.db.execute("SELECT 1 FROM measurements WHERE settings_key = ? AND status = 'ok' LIMIT 1",
                              (settings_key,)).fetchone()
        return row is not None

    def rows(self, board: str | None = None, status: str | None = "ok", raw: bool = False,
             profile: str | None = None, columns: tuple[str, ...] | None = None) -> list[dict]:
        """Measurements (without raw latencies unless `raw`; only `columns` when given), filtered by board,
        profile and status."""
        if columns is not None and set(columns) - set(COLUMNS):
            raise StoreError(f"unknown store columns: {sorted(set(columns) - set(COLUMNS))}")
        wanted = [c for c in (columns or COLUMNS) if raw or c != "latencies_ms"]
        missing = {c: ADDED[c][1] for c in wanted if c not in self.have}
        cols = "*" if raw else ", ".join(c for c in wanted if c not in missing) + ", id"
        sql, args = f"SELECT {cols} FROM measurements WHERE 1=1", []
        for column, value in (("board", board), ("profile", profile), ("status", status)):
            if value:
                sql += f" AND {column} = ?"
                args.append(value)
        sql += " ORDER BY id"
        return [{**missing, **dict(r)} for r in self.db.execute(sql, args)]

    def latencies(self, ids: list[int]) -> list[float]:
        """Every raw run latency (ms) of these measurements, pooled."""
        out: list[float] = []
        for (raw,) in self.db.execute(f"SELECT latencies_ms FROM measurements WHERE id IN "
                                      f"({','.join('?' * len(ids))})", list(ids)):
            out += json.loads(raw) if raw else []
        return out

    def close(self) -> None:
        self.db.close()
