"""The run registry: one SQLite file (standard library `sqlite3`) of runs, their checkpoints and lineage.

    reg = RunRegistry.open()                          # $JAXCOOK_REGISTRY, else <cache>/runs.sqlite
    run_id = reg.start(recipe="sft", config=cfg_dict, log_dir="/abs/runs/sft", base_model="...",
                       dataset={"dataset": "reasoning_gym_math"}, parents=[("init", "/abs/ckpt")])
    reg.add_checkpoint(run_id, "/abs/runs/sft/checkpoints/60", step=60, sha256="...", final=True)
    reg.finish(run_id, final_metrics={...}, best_metrics={...})
    reg.get(run_id)["status"]                          # "finished"
    reg.lineage(run_id)          # [{"role", "checkpoint", "parent_run", "depth"}, ...] up the tree

Tables: `runs` (one row per run: recipe, status, log dir, base model, dataset spec, config, final and
best metrics as JSON text), `parents` (a run's start weights or teacher: the checkpoint path its
config names and, when a registered run wrote it, that run) and `artifacts` (checkpoints with step,
sha256 and whether it is the final one). Everything is text, numbers and JSON: no pickle.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    recipe TEXT NOT NULL,
    status TEXT NOT NULL,           -- running | finished | failed
    log_dir TEXT,
    base_model TEXT,
    dataset TEXT,                   -- JSON: the data source and its options (or the env)
    config TEXT NOT NULL,           -- JSON: the resolved config
    final_metrics TEXT,             -- JSON: {key: last logged value}
    best_metrics TEXT,              -- JSON: {key: {"value": v, "step": s}}
    error TEXT,
    started_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS parents (
    run_id TEXT NOT NULL REFERENCES runs(id),
    role TEXT NOT NULL,             -- init (the weights it starts from) | teacher
    checkpoint TEXT NOT NULL,
    parent_run TEXT REFERENCES runs(id),
    PRIMARY KEY (run_id, role, checkpoint)
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL,             -- checkpoint
    step INTEGER,
    path TEXT NOT NULL,
    sha256 TEXT,
    final INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, path)
);
CREATE INDEX IF NOT EXISTS artifacts_by_path ON artifacts(path);
"""

JSON_COLUMNS = ("dataset", "config", "final_metrics", "best_metrics")
OFF = ("off", "none", "0", "")


class RegistryError(LookupError):
    """A run id that names no run (or several), or a registry file that is not one."""


def registry_path() -> Path | None:
    """`$JAXCOOK_REGISTRY` (`off` = no registry), else `runs.sqlite` in jaxcook's cache folder."""
    from jaxcook.assets import cache_dir

    value = os.environ.get("JAXCOOK_REGISTRY")
    if value is not None:
        return None if value.strip().lower() in OFF else Path(value).expanduser()
    return cache_dir() / "runs.sqlite"


class RunRegistry:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.row_factory = sqlite3.Row
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise RegistryError(f"{self.path} is not a jaxcook run registry ({e})") from None

    @classmethod
    def open(cls) -> RunRegistry | None:
        """The registry at `registry_path()`, or None when it is turned off."""
        path = registry_path()
        return None if path is None else cls(path)

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def start(
        self,
        *,
        recipe: str,
        config: dict,
        log_dir: str | None,
        base_model: str | None = None,
        dataset: Any = None,
        parents: list[tuple[str, str]] = (),
        run_id: str | None = None,
    ) -> str:
        """Add a running run (or mark an existing `run_id` running again, for a resume); its id."""
        run_id = run_id or new_run_id(recipe)
        with self.db:
            self.db.execute(
                "INSERT INTO runs (id, recipe, status, log_dir, base_model, dataset, config, started_at)"
                " VALUES (?, ?, 'running', ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET status='running', error=NULL, finished_at=NULL,"
                " config=excluded.config, base_model=excluded.base_model, dataset=excluded.dataset",
                (run_id, recipe, log_dir, base_model, _dump(dataset), _dump(config), time.time()),
            )
        self.set_parents(run_id, parents)
        return run_id

    def set_parents(self, run_id: str, parents) -> None:
        """Record (role, checkpoint path) parents, each linked to the run that wrote it if registered."""
        with self.db:
            self.db.execute("DELETE FROM parents WHERE run_id = ?", (run_id,))
            for role, checkpoint in parents:
                writer = self.run_of_checkpoint(checkpoint)
                self.db.execute(
                    "INSERT OR REPLACE INTO parents VALUES (?, ?, ?, ?)",
                    (run_id, role, checkpoint, writer["id"] if writer else None),
                )

    def update(self, run_id: str, **fields: Any) -> None:
        """Set columns of a run (`config`, `base_model`, `dataset`, ...; JSON columns take Python values)."""
        if not fields:
            return
        bad = set(fields) - {"config", "base_model", "dataset", "log_dir"}
        if bad:
            raise ValueError(f"cannot update {sorted(bad)}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        values = [_dump(v) if k in JSON_COLUMNS else v for k, v in fields.items()]
        with self.db:
            self.db.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*values, run_id))  # noqa: S608

    def add_checkpoint(
        self, run_id: str, path: str, *, step: int | None, sha256: str | None, final: bool = False
    ) -> None:
        with self.db:
            if final:
                self.db.execute("UPDATE artifacts SET final = 0 WHERE run_id = ?", (run_id,))
            self.db.execute(
                "INSERT OR REPLACE INTO artifacts VALUES (?, 'checkpoint', ?, ?, ?, ?)",
                (run_id, step, path, sha256, int(final)),
            )

    def finish(self, run_id: str, *, final_metrics: dict, best_metrics: dict) -> None:
        with self.db:
            self.db.execute(
                "UPDATE runs SET status='finished', final_metrics=?, best_metrics=?, finished_at=?,"
                " error=NULL WHERE id = ?",
                (_dump(final_metrics), _dump(best_metrics), time.time(), run_id),
            )

    def fail(self, run_id: str, error: str, *, final_metrics: dict | None = None) -> None:
        with self.db:
            self.db.execute(
                "UPDATE runs SET status='failed', error=?, final_metrics=?, finished_at=? WHERE id = ?",
                (error, _dump(final_metrics or {}), time.time(), run_id),
            )

    def get(self, run_id: str) -> dict:
        """The run with this id (or unique id prefix) as a dict, JSON columns decoded."""
        rows = self.db.execute(
            "SELECT * FROM runs WHERE id = ? OR id LIKE ? ORDER BY id = ? DESC",
            (run_id, run_id + "%", run_id),
        ).fetchall()
        exact = [r for r in rows if r["id"] == run_id]
        if exact:
            rows = exact
        if not rows:
            raise RegistryError(
                f"no run {run_id!r} in {self.path} (`python -m jaxcook.runs list` lists them)"
            )
        if len(rows) > 1:
            raise RegistryError(
                f"{run_id!r} matches {len(rows)} runs: {', '.join(r['id'] for r in rows[:5])}"
            )
        return _decode(rows[0])

    def runs(
        self, *, recipe: str | None = None, status: str | None = None, log_dir: str | None = None
    ) -> list[dict]:
        """Runs, newest first, filtered by recipe, status and log dir."""
        where, args = [], []
        for col, value in (("recipe", recipe), ("status", status), ("log_dir", log_dir)):
            if value is not None:
                where.append(f"{col} = ?")
                args.append(value)
        sql = "SELECT * FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "")
        rows = self.db.execute(sql + " ORDER BY started_at DESC, id DESC", args).fetchall()
        return [_decode(r) for r in rows]

    def checkpoints(self, run_id: str) -> list[dict]:
        rows = self.db.execute(
            "SELECT * FROM artifacts WHERE run_id = ? AND kind = 'checkpoint' ORDER BY step", (run_id,)
        ).fetchall()
        return [dict(r) for r in rows]

    def final_checkpoint(self, run_id: str) -> dict | None:
        finals = [c for c in self.checkpoints(run_id) if c["final"]]
        return finals[-1] if finals else None

    def parents(self, run_id: str) -> list[dict]:
        rows = self.db.execute("SELECT * FROM parents WHERE run_id = ? ORDER BY role", (run_id,)).fetchall()
        return [dict(r) for r in rows]

    def children(self, run_id: str) -> list[dict]:
        rows = self.db.execute(
            "SELECT * FROM parents WHERE parent_run = ? ORDER BY run_id", (run_id,)
        ).fetchall()
        return [dict(r) for r in rows]

    def run_of_checkpoint(self, path: str) -> dict | None:
        """The run that wrote the checkpoint at `path` (newest, if several did)."""
        row = self.db.execute(
            "SELECT runs.* FROM artifacts JOIN runs ON runs.id = artifacts.run_id"
            " WHERE artifacts.path = ? ORDER BY runs.started_at DESC LIMIT 1",
            (path,),
        ).fetchone()
        return _decode(row) if row else None

    def lineage(self, run_id: str) -> list[dict]:
        """The ancestors of a run, nearest first, one dict per parent link:
        `{"run_id", "role", "checkpoint", "parent_run", "depth"}`."""
        out, frontier, seen = [], [(self.get(run_id)["id"], 1)], set()
        while frontier:
            current, depth = frontier.pop(0)
            if current in seen:
                continue
            seen.add(current)
            for p in self.parents(current):
                out.append({**p, "depth": depth})
                if p["parent_run"]:
                    frontier.append((p["parent_run"], depth + 1))
        return out


def new_run_id(recipe: str) -> str:
    """`<recipe>-<UTC yyyymmdd-hhmmss>-<4 hex>`: sorts by time, readable, unique enough."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{recipe.rsplit('.', 1)[-1]}-{stamp}-{uuid.uuid4().hex[:4]}"


def _dump(value) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def _decode(row: sqlite3.Row) -> dict:
    out = dict(row)
    for col in JSON_COLUMNS:
        if out.get(col) is not None:
            out[col] = json.loads(out[col])
    return out
