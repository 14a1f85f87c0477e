"""The workdir: every path in it, run ids, run.json / sweep.json / fits.json, one atomic write.

Standard library only (every layer may import it, `mixlaw.laws` included). Layout:

  WORKDIR/results.jsonl          the results table (mixlaw.results)
  WORKDIR/sweep.json             the sweep's plan, execution units and fit options (mixlaw.sweep)
  WORKDIR/fits.json              the laws' fits (mixlaw.laws)
  WORKDIR/report.{md,html}, figures/   the report (mixlaw.report)
  WORKDIR/demo.json              the demo's stage times (mixlaw.demo)
  WORKDIR/runs/RUN_ID/           run.json, config.gin, tb/, checkpoints/ (a single run's)
  WORKDIR/runs/GROUP_ID/checkpoints/   an ensemble's stacked checkpoint

Run ids: base_SIZE (base pretraining), cpt_SIZE_rR_sS (CPT at ratio R, 4 decimals, CPT seed S),
ens_SIZE_DIGEST (an ensemble: its size and a digest of its members' ids).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import socket
import uuid

from mixlaw.errors import MixlawError

RESULTS = "results.jsonl"
SWEEP = "sweep.json"
FITS = "fits.json"
DEMO = "demo.json"
REPORT_MD, REPORT_HTML = "report.md", "report.html"
FIGURES = "figures"
RUNS = "runs"
RUN_INFO = "run.json"
RUN_CONFIG = "config.gin"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tb"
FIT_OPTIONS = "fit_options"  # The key of sweep.json holding the experiment's fit settings.


class WorkdirError(MixlawError, ValueError):
  """A workdir file is unreadable or malformed."""


# ---------------------------------------------------------------------------------- writing
def atomic_write(path: str, data: str | bytes, *, fsync: bool = False) -> None:
  """Writes `data` to `path` through a temporary file and os.replace: a reader (or a kill)
  sees the old file or the new one, never a part. `fsync`: durable before the replace."""
  # Unique across hosts sharing a filesystem (a pid alone repeats on other hosts).
  tmp = f"{path}.tmp.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
  binary = isinstance(data, bytes)
  with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
    f.write(data)
    if fsync:
      f.flush()
      os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json(path: str, obj, *, indent: int = 2, **kw) -> None:
  atomic_write(path, json.dumps(obj, indent=indent, **kw))


def read_json(path: str):
  """The JSON content of `path`, or None if it does not exist."""
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise WorkdirError(f"{path}: unreadable ({e})") from None


# ------------------------------------------------------------------------------------ paths
def results_path(workdir: str) -> str:
  return os.path.join(workdir, RESULTS)


def sweep_path(workdir: str) -> str:
  return os.path.join(workdir, SWEEP)


def fits_path(workdir: str) -> str:
  return os.path.join(workdir, FITS)


def demo_path(workdir: str) -> str:
  return os.path.join(workdir, DEMO)


def report_paths(workdir: str) -> dict:
  return {"md": os.path.join(workdir, REPORT_MD), "html": os.path.join(workdir, REPORT_HTML)}


def figures_dir(workdir: str) -> str:
  return os.path.join(workdir, FIGURES)


def run_dir(workdir: str, run_id: str) -> str:
  return os.path.join(workdir, RUNS, run_id)


def run_info_path(workdir: str, run_id: str) -> str:
  return os.path.join(run_dir(workdir, run_id), RUN_INFO)


def run_config_path(workdir: str, run_id: str) -> str:
  return os.path.join(run_dir(workdir, run_id), RUN_CONFIG)


def tensorboard_dir(workdir: str, run_id: str) -> str:
  return os.path.join(run_dir(workdir, run_id), TENSORBOARD)


def checkpoint_dir(workdir: str, run_id: str) -> str:
  """Checkpoints of a single run, or of an ensemble (run_id: its group id)."""
  return os.path.join(run_dir(workdir, run_id), CHECKPOINTS)


# ---------------------------------------------------------------------------------- run ids
_BASE = re.compile(r"base_(?P<size>.+)")
_CPT = re.compile(r"cpt_(?P<size>.+)_r(?P<ratio>\d+\.\d{4})_s(?P<cpt_seed>\d+)")
_GROUP = re.compile(r"ens_(?P<size>.+)_(?P<digest>[0-9a-f]{10})")


def base_run_id(size: str) -> str:
  return f"base_{size}"


def cpt_run_id(size: str, ratio: float, cpt_seed: int) -> str:
  return f"cpt_{size}_r{ratio:.4f}_s{cpt_seed}"


def group_id(size: str, run_ids) -> str:
  """Id of an ensemble: its size and a digest of its members (a new member set, a new group)."""
  digest = hashlib.sha1(",".join(sorted(run_ids)).encode()).hexdigest()[:10]
  return f"ens_{size}_{digest}"


def parse_run_id(run_id: str) -> dict:
  """{'kind': 'base' | 'cpt' | 'group', 'size', and for CPT 'ratio', 'cpt_seed'}; {} if the id
  is none of these."""
  for kind, pattern in (("cpt", _CPT), ("group", _GROUP), ("base", _BASE)):
    m = pattern.fullmatch(run_id)
    if m:
      out = {"kind": kind, "size": m["size"]}
      if kind == "cpt":
        out.update(ratio=float(m["ratio"]), cpt_seed=int(m["cpt_seed"]))
      return out
  return {}


# ----------------------------------------------------------------------------- run.json
def read_run(workdir: str, run_id: str) -> dict:
  """runs/RUN_ID/run.json ({} if the run has not started)."""
  return read_json(run_info_path(workdir, run_id)) or {}


def write_run(workdir: str, run_id: str, info: dict, config: str | None = None) -> None:
  """Writes runs/RUN_ID/run.json (and config.gin, the operative gin config, when given)."""
  os.makedirs(run_dir(workdir, run_id), exist_ok=True)
  if config is not None:
    atomic_write(run_config_path(workdir, run_id), config)
  write_json(run_info_path(workdir, run_id), info, default=str)


def read_runs(workdir: str) -> dict:
  """{run_id: run.json} of every run in the workdir."""
  out = {}
  for path in sorted(glob.glob(os.path.join(workdir, RUNS, "*", RUN_INFO))):
    info = read_json(path)
    out[info.get("run_id") or os.path.basename(os.path.dirname(path))] = info
  return out


# --------------------------------------------------------------------------- sweep.json
def read_sweep(workdir: str) -> dict:
  """sweep.json ({} if absent)."""
  out = read_json(sweep_path(workdir))
  if out is None:
    return {}
  if not isinstance(out, dict):
    raise WorkdirError(f"{sweep_path(workdir)}: not a JSON object")
  return out


def write_sweep(workdir: str, sweep: dict) -> None:
  os.makedirs(workdir, exist_ok=True)
  write_json(sweep_path(workdir), sweep)


def read_fit_options(workdir: str) -> dict:
  """The experiment's fit settings: sweep.json's "fit_options" ({} if absent)."""
  opts = read_sweep(workdir).get(FIT_OPTIONS) or {}
  if not isinstance(opts, dict):
    raise WorkdirError(f'{sweep_path(workdir)}: "{FIT_OPTIONS}" must be an object, got '
                       f"{type(opts).__name__}")
  return opts


# ---------------------------------------------------------------------------- fits.json
def read_fits(workdir: str) -> dict | None:
  """fits.json (None if absent)."""
  return read_json(fits_path(workdir))


def write_fits(workdir: str, fits: dict) -> None:
  write_json(fits_path(workdir), fits, indent=1, allow_nan=False)


def write_demo(workdir: str, info: dict) -> None:
  write_json(demo_path(workdir), info)
