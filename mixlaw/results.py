"""The results table: one JSON line per (run, step, split), append-safe, one file per workdir.

Everything the laws need is in this table; the laws never read checkpoints. Schema (columns):

  run_id, phase ('base' | 'cpt'), size_name, n_params, n_params_nonemb, domain, ratio, step,
  tokens_seen (tokens of this phase seen so far; for CPT runs: CPT tokens, 0 = the base model),
  split ('train' | 'validation'), general_loss, domain_loss (NaN where a source had no tokens),
  lr (the schedule's learning rate of the update that led to this step, train and validation
  rows alike), wallclock (seconds of training in this run, summed over resumptions), cpt_seed
  (the CPT data-order seed; 0 for base runs and in tables written before seeds existed),
  warmup_steps (the run's linear-warmup length in steps, from its schedule; None in tables
  written before the column existed).

Writing appends and fsyncs each block of lines, so a kill -9 loses at most the lines being
written. A resumed run first drops its own rows after the checkpoint it resumes from
(`truncate_run`), then rewrites them; `load` keeps the last row per (run_id, step, split).
"""

from __future__ import annotations

import json
import math
import os
from typing import Iterable, Mapping

from mixlaw import workdir as workdir_lib

COLUMNS = (
    "run_id", "phase", "size_name", "n_params", "n_params_nonemb", "domain", "ratio", "step",
    "tokens_seen", "split", "general_loss", "domain_loss", "lr", "wallclock", "cpt_seed",
    "warmup_steps",
)
KEY = ("run_id", "step", "split")
# Columns a row may omit (tables written before they existed).
DEFAULTS = {"cpt_seed": 0, "warmup_steps": None}


def table_path(workdir: str) -> str:
  return workdir_lib.results_path(workdir)


def _encode(row: Mapping) -> str:
  row = {**DEFAULTS, **row}
  missing = [c for c in COLUMNS if c not in row]
  if missing:
    raise ValueError(f"results row lacks columns {missing}: {dict(row)}")
  out = {}
  for c in COLUMNS:
    v = row[c]
    if isinstance(v, float) and not math.isfinite(v):
      v = None  # JSON has no NaN; read back as NaN.
    out[c] = v
  return json.dumps(out, sort_keys=False)


def append(workdir: str, rows: Iterable[Mapping]) -> None:
  """Appends rows to WORKDIR/results.jsonl and fsyncs."""
  lines = [_encode(r) + "\n" for r in rows]
  if not lines:
    return
  os.makedirs(workdir, exist_ok=True)
  with open(table_path(workdir), "a", encoding="utf-8") as f:
    f.write("".join(lines))
    f.flush()
    os.fsync(f.fileno())


def read_rows(workdir: str) -> list[dict]:
  """All rows, deduplicated on (run_id, step, split) keeping the last; torn last line ignored."""
  path = table_path(workdir)
  if not os.path.exists(path):
    return []
  rows: dict[tuple, dict] = {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      if not line.endswith("\n"):
        break  # A line torn by a kill: the run that wrote it rewrites it on resume.
      r = json.loads(line)
      for c in ("general_loss", "domain_loss", "lr"):
        if r.get(c) is None:
          r[c] = float("nan")
      for c, v in DEFAULTS.items():
        r.setdefault(c, v)
      rows[tuple(r[k] for k in KEY)] = r
  return sorted(rows.values(), key=lambda r: (r["run_id"], r["split"], r["step"]))


def truncate_run(workdir: str, run_id: str, after_step: int) -> int:
  """Drops rows of `run_id` with step > after_step (atomic rewrite); returns how many."""
  path = table_path(workdir)
  if not os.path.exists(path):
    return 0
  keep, dropped = [], 0
  with open(path, encoding="utf-8") as f:
    for line in f:
      if not line.endswith("\n"):
        dropped += 1
        continue
      r = json.loads(line)
      if r["run_id"] == run_id and r["step"] > after_step:
        dropped += 1
      else:
        keep.append(line)
  if dropped:
    workdir_lib.atomic_write(path, "".join(keep), fsync=True)
  return dropped


def load(workdir: str):
  """The table as a pandas DataFrame (deduplicated), columns in COLUMNS order."""
  import pandas as pd  # Kept lazy: the trainer does not need pandas.

  return pd.DataFrame(read_rows(workdir), columns=list(COLUMNS))
