"""The results table: one JSON line per (run, step, split), append-safe, one file per workdir.

Everything the laws need is in this table; the laws never read checkpoints. Schema (columns):

  run_id, phase ('base' | 'cpt'), size_name, n_params, n_params_nonemb, domain, ratio, step,
  tokens_seen (tokens of this phase seen so far; for CPT runs: CPT tokens, 0 = the base model),
  split ('train' | 'validation'), general_loss, domain_loss (NaN where a source had no tokens),
  lr (the schedule's learning rate of the update that led to this step, train and validation
  rows alike), wallclock (seconds of training in this run, summed over resumptions), cpt_seed
  (the CPT data-order seed; 0 for base runs and in tables written before seeds existed),
  warmup_steps (the run's linear-warmup length in steps, from its schedule; None in tables
  written before the column existed), sweep_id (the sweep whose table this is: sweep.json's
  "sweep_id", stamped on every row `append` writes; None in tables written before it existed).

Writing appends and fsyncs each block of lines, so a kill -9 loses at most the lines being
written. A resumed run first drops its own rows after the checkpoint it resumes from
(`truncate_run`), then rewrites them. Reading checks every line and refuses, in one line naming
the file, line, run and step, a table that mixes sweeps or holds one (run_id, step, split)
twice with different losses; identical repeats collapse to one row.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Iterable, Mapping

from mixlaw import workdir as workdir_lib
from mixlaw.errors import MixlawError

COLUMNS = (
    "run_id", "phase", "size_name", "n_params", "n_params_nonemb", "domain", "ratio", "step",
    "tokens_seen", "split", "general_loss", "domain_loss", "lr", "wallclock", "cpt_seed",
    "warmup_steps", "sweep_id",
)
KEY = ("run_id", "step", "split")
# Columns a row may omit (tables written before they existed).
DEFAULTS = {"cpt_seed": 0, "warmup_steps": None, "sweep_id": None}
LOSSES = ("general_loss", "domain_loss")


class ResultsError(MixlawError, ValueError):
  """A results table that cannot be read as one sweep's rows."""


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
  """Appends rows to WORKDIR/results.jsonl and fsyncs; rows without a sweep_id get the
  workdir's (`sweep_id`)."""
  rows = list(rows)
  if not rows:
    return
  os.makedirs(workdir, exist_ok=True)
  sid = sweep_id(workdir)
  lines = [_encode(r if r.get("sweep_id") is not None else {**r, "sweep_id": sid}) + "\n"
           for r in rows]
  with open(table_path(workdir), "a", encoding="utf-8") as f:
    f.write("".join(lines))
    f.flush()
    os.fsync(f.fileno())


_IDS: dict = {}  # (sweep.json, its stat) -> its sweep id: a run appends rows every step.


def sweep_id(workdir: str) -> str | None:
  """The sweep id of the workdir's table (sweep.json "sweep_id"); the first row written into a
  workdir mints it. None: a table begun before sweep ids existed (its rows carry none)."""
  path = workdir_lib.sweep_path(workdir)
  try:
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_ino, st.st_mtime_ns, st.st_size)
  except FileNotFoundError:
    key = None
  if key in _IDS:
    return _IDS[key]
  sweep = workdir_lib.read_sweep(workdir)
  if workdir_lib.SWEEP_ID in sweep:
    _IDS[key] = sweep[workdir_lib.SWEEP_ID]
    return _IDS[key]
  path = table_path(workdir)
  sid = None if os.path.isfile(path) and os.path.getsize(path) else workdir_lib.new_sweep_id()
  workdir_lib.write_sweep(workdir, {**sweep, workdir_lib.SWEEP_ID: sid})
  return sid


def _lines(path: str):
  """(line number, text) of every complete line, then the table's sha256 (noted for the
  fits.json written from it). A last line without its newline was torn by a kill: skipped
  (the run that wrote it rewrites it on resume)."""
  if os.path.isdir(path):
    raise ResultsError(f"{path} is a directory, not a results table: move it aside")
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise ResultsError(f"{path}: cannot read ({e.strerror})") from None
  parts = data.split(b"\n")
  for i, raw in enumerate(parts[:-1], start=1):
    try:
      yield i, raw.decode("utf-8")
    except UnicodeDecodeError:
      raise ResultsError(f"{path}:{i}: not UTF-8 text; a results table is JSON lines") from None
  return hashlib.sha256(data).hexdigest()


REQUIRED = tuple(c for c in COLUMNS if c not in DEFAULTS)


def _parse(path: str, i: int, text: str) -> dict:
  """Line i of the table as a row; ResultsError (naming the line) if it is not one."""
  try:
    r = json.loads(text)
  except json.JSONDecodeError as e:
    raise ResultsError(f"{path}:{i}: not a JSON row ({e.msg} at column {e.colno}): fix or "
                       "delete that line") from None
  if not isinstance(r, dict):
    raise ResultsError(f"{path}:{i}: a row must be a JSON object, got {type(r).__name__}: fix "
                       "or delete that line")
  missing = [c for c in REQUIRED if c not in r]
  if missing:
    raise ResultsError(f"{path}:{i}: row lacks column(s) {', '.join(missing)} (a row has "
                       f"{', '.join(REQUIRED)}): fix or delete that line")
  if not (isinstance(r["run_id"], str) and isinstance(r["step"], int)
          and not isinstance(r["step"], bool) and r["split"] in ("train", "validation")):
    raise ResultsError(f"{path}:{i}: run_id must be text, step an integer and split 'train' "
                       f"or 'validation', got {r['run_id']!r}, {r['step']!r}, {r['split']!r}")
  return r


def _same(a: dict, b: dict) -> bool:
  return all(a.get(c) == b.get(c) for c in LOSSES)


def _sweep_name(sid) -> str:
  return f"sweep {sid}" if sid is not None else "no sweep id (an earlier mixlaw)"


def read_rows(workdir: str) -> list[dict]:
  """All rows, one per (run_id, step, split); torn last line ignored. ResultsError (one line:
  file, line, run, step) for a line that is not a row, rows of several sweeps, or two rows of
  one (run_id, step, split) with different losses."""
  path = table_path(workdir)
  if not os.path.lexists(path):
    return []
  rows: dict[tuple, dict] = {}
  where: dict[tuple, int] = {}
  first = None  # (line, row) of the table's first row: its sweep is the table's.
  lines = _lines(path)
  while True:
    try:
      i, text = next(lines)
    except StopIteration as done:
      workdir_lib.note_table_read(workdir, done.value)
      break
    if not text.strip():
      continue
    r = _parse(path, i, text)
    key = tuple(r[k] for k in KEY)
    first = first or (i, r)
    if r.get("sweep_id") != first[1].get("sweep_id"):
      raise ResultsError(
          f"{path}:{i}: run {r['run_id']} step {r['step']} is from "
          f"{_sweep_name(r.get('sweep_id'))}, line {first[0]} from "
          f"{_sweep_name(first[1].get('sweep_id'))}: a results table holds one sweep; move one "
          "sweep's rows to a workdir of its own")
    if key in rows and not _same(rows[key], r):
      losses = ", ".join(f"{c} {rows[key].get(c)} vs {r.get(c)}" for c in LOSSES)
      raise ResultsError(
          f"{path}:{i}: run {r['run_id']} step {r['step']} ({r['split']}) is also at line "
          f"{where[key]} with other losses ({losses}): rows of two runs under one id; keep "
          "one of those lines")
    rows[key], where[key] = r, i
  for r in rows.values():
    for c in ("general_loss", "domain_loss", "lr"):
      if r.get(c) is None:
        r[c] = float("nan")
    for c, v in DEFAULTS.items():
      r.setdefault(c, v)
  return sorted(rows.values(), key=lambda r: (r["run_id"], r["split"], r["step"]))


def same_rows(workdir: str, rows: Iterable[Mapping]) -> bool:
  """Whether the workdir's table holds exactly `rows` (sweep ids aside)."""
  def encoded(rs):
    return sorted(_encode({**r, "sweep_id": None}) for r in rs)
  return encoded(read_rows(workdir)) == encoded(rows)


def truncate_run(workdir: str, run_id: str, after_step: int) -> int:
  """Drops rows of `run_id` with step > after_step, and a torn last line (atomic rewrite);
  returns how many lines went."""
  path = table_path(workdir)
  if not os.path.exists(path):
    return 0
  keep, dropped = [], 0
  for i, text in _lines(path):
    if text.strip():
      r = _parse(path, i, text)
      if r["run_id"] == run_id and r["step"] > after_step:
        dropped += 1
        continue
    keep.append(text + "\n")
  with open(path, "rb") as f:
    torn = f.seek(0, os.SEEK_END) > 0 and f.seek(-1, os.SEEK_END) >= 0 and f.read(1) != b"\n"
  if dropped or torn:
    workdir_lib.atomic_write(path, "".join(keep), fsync=True)
  return dropped + int(torn)


def load(workdir: str):
  """The table as a pandas DataFrame (deduplicated), columns in COLUMNS order."""
  import pandas as pd  # Kept lazy: the trainer does not need pandas.

  return pd.DataFrame(read_rows(workdir), columns=list(COLUMNS))
