"""The latency store: SQLite (WAL), one row per measurement, committed as soon as it is taken."""
from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median
from typing import Literal, get_args, get_origin, get_type_hints

from .errors import StoreError

DEFAULT_STORE = "edgekit.db"

@dataclass(kw_only=True)
class Measurement:
    """One measurement: what the scheduler records, one row of the store, what table / select / report read.
    Declared once here: the table's columns and COLUMNS are made from it (old stores gain added columns)."""
    settings_key: str  # model sha256 + board + settings: a rerun with the same key is answered by the store
    status: Literal["ok", "failed"]
    error: str | None = None
    model_sha256: str
    model_name: str
    manifest_path: str | None = None
    variant: str | None = None
    board: str
    profile: str
    host: str | None = None
    runtime_name: str | None = None
    runtime_version: str | None = None
    threads: int
    delegate: str
    warmup_runs: int
    min_runs: int
    min_seconds: float
    repeat_index: int
    input: str  # sha256 of the .npy input, or "random"
    n_runs: int | None = None
    load_ms: float | None = None
    first_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    peak_rss_kb: int | None = None
    throttled: int = 0
    cooled_s: float | None = None
    temp_before_c: float | None = None
    temp_after_c: float | None = None
    latencies_ms: list[float] | None = None  # every counted run (JSON in the store)
    fingerprint: dict | None = None  # the board as it reported itself (JSON in the store)
    started_at: str
    finished_at: str
    attempts: int = 1
    emulated: int = 0  # measured under user-mode emulation: not the hardware's latency

    def to_row(self) -> dict:
        return asdict(self)


@dataclass(kw_only=True)
class OpRow:
    """One op of a profiled model (`profile --ops`): its signature and the single-op model that times it."""
    source_sha256: str  # the model it was cut from
    op_index: int  # its place in that model's execution order
    sig_key: str  # sha256 of the signature: ops with the same key cost the same on a board
    op: str
    version: int
    signature: dict  # op, version, shapes, dtypes, quantization kind, options (JSON in the store)
    layer: str | None = None  # the Keras layer it came from, where tensor names tell
    model_sha256: str | None = None  # the single-op model (its measurements are ordinary rows); None: not cuttable
    why: str | None = None  # why it cannot be timed alone


_SQL = {str: "TEXT", int: "INTEGER", float: "REAL", list: "TEXT", dict: "TEXT"}
JSON_COLUMNS = ("latencies_ms", "fingerprint", "signature")


def _column(f: dataclasses.Field, record: type | None = None) -> str:
    hint = get_type_hints(record or Measurement)[f.name]
    args = [a for a in get_args(hint) if a is not type(None)]
    nullable = type(None) in get_args(hint)
    base = args[0] if nullable else hint
    if get_origin(base) is Literal:
        sql = f"TEXT NOT NULL CHECK ({f.name} IN ({', '.join(repr(v) for v in get_args(base))}))"
    else:
        sql = _SQL[get_origin(base) or base] + ("" if nullable else " NOT NULL")
    if f.default not in (dataclasses.MISSING, None):
        sql += f" DEFAULT {f.default}"
    return f"{f.name} {sql}"


COLUMNS = tuple(f.name for f in dataclasses.fields(Measurement))
SCHEMA = ("CREATE TABLE IF NOT EXISTS measurements (\n    id INTEGER PRIMARY KEY,\n    "
          + ",\n    ".join(_column(f) for f in dataclasses.fields(Measurement)) + "\n);\n"
          "CREATE INDEX IF NOT EXISTS measurements_key ON measurements (settings_key, status);\n"
          "CREATE INDEX IF NOT EXISTS measurements_board ON measurements (board, status);\n"
          "CREATE TABLE IF NOT EXISTS ops (\n    "
          + ",\n    ".join(_column(f, OpRow) for f in dataclasses.fields(OpRow))
          + ",\n    UNIQUE (source_sha256, op_index)\n);\n"
          "CREATE INDEX IF NOT EXISTS ops_sig ON ops (sig_key);\n")
# Columns added after the first release, with the value rows of older stores have: such stores open as they are
# (read-only ones read the default; writable ones gain the column).
ADDED = {"emulated": 0}


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
                    for column in ADDED:
                        if column not in self._have():
                            f = next(f for f in dataclasses.fields(Measurement) if f.name == column)
                            self.db.execute(f"ALTER TABLE measurements ADD COLUMN {_column(f)}")
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

    def add(self, row: Measurement | dict) -> int:
        data = row.to_row() if isinstance(row, Measurement) else dict(row)
        for k in JSON_COLUMNS:
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
            return int(cur.lastrowid or 0)
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
        missing = {c: ADDED[c] for c in wanted if c not in self.have}
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

    def add_ops(self, rows: list[OpRow]) -> None:
        """Record a model's ops (again: replaced)."""
        cols = [f.name for f in dataclasses.fields(OpRow)]
        values = [[json.dumps(v) if isinstance(v, dict) else v for v in (getattr(r, c) for c in cols)] for r in rows]
        try:
            with self.db:
                self.db.executemany(f"INSERT OR REPLACE INTO ops ({', '.join(cols)}) VALUES "
                                    f"({', '.join('?' for _ in cols)})", values)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"store {self.path}: cannot write ({e})") from e

    def _has_ops(self) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='ops'").fetchone() is not None

    def kernel_only_ops(self, board: str) -> set[str]:
        """Signatures known only from models never measured whole on `board` (a kernel grid's single-layer models),
        as opposed to ops cut from models that were (`profile --ops`)."""
        if not self._has_ops():
            return set()
        whole = {sha for (sha,) in self.db.execute(
            "SELECT DISTINCT model_sha256 FROM measurements WHERE board = ? AND status = 'ok'", (board,))}
        seen: dict[str, bool] = {}
        for key, src in self.db.execute("SELECT sig_key, source_sha256 FROM ops"):
            seen[key] = seen.get(key, False) or src in whole
        return {k for k, from_whole in seen.items() if not from_whole}

    def ops_of(self, source_sha256: str) -> list[OpRow]:
        if not self._has_ops():
            return []
        rows = self.db.execute("SELECT * FROM ops WHERE source_sha256 = ? ORDER BY op_index", (source_sha256,))
        return [OpRow(**{**dict(r), "signature": json.loads(r["signature"])}) for r in rows]

    def op_latencies(self, board: str, threads: int, delegate: str = "xnnpack") -> dict[str, dict]:
        """The per-op latency table of one board configuration: sig_key -> {p50_ms, signature, op, runs}
        (the median over every measurement of every single-op model with that signature)."""
        if not self._has_ops():
            return {}
        rows = self.db.execute(
            "SELECT o.sig_key, o.op, o.signature, m.p50_ms, m.n_runs FROM ops o JOIN measurements m "
            "ON m.model_sha256 = o.model_sha256 WHERE m.status = 'ok' AND m.board = ? AND m.threads = ? "
            "AND m.delegate = ? AND m.p50_ms IS NOT NULL", (board, threads, delegate))
        grouped: dict[str, dict] = {}
        for key, op, sig, p50, n in rows:
            e = grouped.setdefault(key, {"op": op, "signature": json.loads(sig), "p50s": [], "runs": 0})
            e["p50s"].append(p50)
            e["runs"] += n or 0
        return {k: {"op": e["op"], "signature": e["signature"], "runs": e["runs"],
                    "p50_ms": float(median(e["p50s"]))} for k, e in grouped.items()}

    def close(self) -> None:
        self.db.close()
