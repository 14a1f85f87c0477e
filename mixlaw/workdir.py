"""The workdir: every path in it, run ids, run.json / sweep.json / fits.json, one atomic write.

Standard library only (every layer may import it, `mixlaw.laws` included). Layout:

  WORKDIR/results.jsonl          the results table (mixlaw.results)
  WORKDIR/sweep.json             the sweep's plan, execution units and fit options (mixlaw.sweep)
  WORKDIR/fits.json              the laws' fits (mixlaw.laws)
  WORKDIR/report.{md,html}, figures/   the report (mixlaw.report)
  WORKDIR/demo.json              the demo's stage times (mixlaw.demo)
  WORKDIR/runs/RUN_ID/           run.json, config.gin, tb/, checkpoints/ (a single run's)
  WORKDIR/runs/GROUP_ID/checkpoints/   an ensemble's stacked checkpoint
  WORKDIR/.previous/TIME/        what `--fresh` / `--replace` moved aside (nothing is deleted)

Nothing here deletes: a workdir's earlier contents move to .previous/ (`move_to_previous`), and
every run id that becomes a path is one file name (`check_run_id`), so no path read from a
workdir file leads outside it. The sweep id (sweep.json "sweep_id") names the one sweep whose
rows the results table holds; fits.json records the sha256 of the table it was fitted from.

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
import tempfile
import time
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
SWEEP_ID = "sweep_id"  # The key of sweep.json naming the sweep of the results table's rows.
RESULTS_SHA256 = "results_sha256"  # The key of fits.json: the table it was fitted from.
PREVIOUS = ".previous"
# The entries of a workdir that --fresh and --replace move aside (anything else stays).
LAYOUT = (RESULTS, SWEEP, FITS, DEMO, REPORT_MD, REPORT_HTML, FIGURES, RUNS)


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
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise WorkdirError(f"{path}: unreadable ({e})") from None


def ensure_writable(workdir: str, create: bool = True) -> None:
  """Checks, before any work, that files can be written in `workdir` (created if missing, with
  `create`; else a missing one is left to the caller's read to report); WorkdirError (one
  line) if not."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"workdir {workdir} is a file, not a directory: pass a directory with "
                       "--workdir (it is created if missing)")
  if not create and not os.path.exists(workdir):
    return
  try:
    os.makedirs(workdir, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=workdir, prefix=".write-check.")
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(f"workdir {workdir} cannot be written ({e.strerror}): make it writable "
                       "or pass another --workdir") from None
  table = results_path(workdir)
  if os.path.isfile(table) and not os.access(table, os.W_OK):
    raise WorkdirError(f"{table} cannot be written (read-only): make it writable or pass "
                       "another --workdir")


def file_sha256(path: str) -> str | None:
  """The sha256 of a file's bytes (None if it does not exist)."""
  if not os.path.isfile(path):
    return None
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def move_to_previous(workdir: str, names=LAYOUT) -> str | None:
  """Moves the workdir's entries `names` (default: its whole layout) into a new folder
  WORKDIR/.previous/TIME/ and returns it (None if none existed). A symlink moves as a link;
  nothing is followed, copied or deleted."""
  present = [n for n in names if os.path.lexists(os.path.join(workdir, n))]
  if not present:
    return None
  stamp = time.strftime("%Y%m%d-%H%M%S")
  dest, k = os.path.join(workdir, PREVIOUS, stamp), 1
  while os.path.lexists(dest):
    k += 1
    dest = os.path.join(workdir, PREVIOUS, f"{stamp}-{k}")
  root = os.path.realpath(workdir)
  try:
    os.makedirs(dest)
    if os.path.commonpath([root, os.path.realpath(dest)]) != root:
      raise WorkdirError(f"{os.path.join(workdir, PREVIOUS)} leads outside the workdir (to "
                         f"{os.path.realpath(dest)}): remove that link")
    for n in present:
      os.rename(os.path.join(workdir, n), os.path.join(dest, n))
  except OSError as e:
    raise WorkdirError(f"cannot move {workdir}'s earlier contents to {dest} ({e.strerror})"
                       ) from None
  return dest


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
  return os.path.join(workdir, RUNS, check_run_id(run_id))


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
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_run_id(run_id, where: str = "") -> str:
  """`run_id` if it is one file name (letters, digits, _ . -; not starting with a dot), so
  that WORKDIR/runs/RUN_ID never leads outside the workdir; WorkdirError otherwise."""
  if not (isinstance(run_id, str) and _NAME.fullmatch(run_id)):
    raise WorkdirError(f"{where}{run_id!r} is not a run id (one file name of letters, digits, "
                       "'_', '.', '-')")
  return run_id


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
  """runs/RUN_ID/run.json ({} if the run has not started); its ensemble id checked."""
  path = run_info_path(workdir, run_id)
  return _check_run_info(path, read_json(path)) or {}


def _check_run_info(path: str, info):
  if info is None:
    return None
  if not isinstance(info, dict):
    raise WorkdirError(f"{path}: not a JSON object; move that run directory aside")
  if info.get("group") is not None:
    check_run_id(info["group"], f'{path}: "group" ')
  return info


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
    info = _check_run_info(path, read_json(path))
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
def read_fits(workdir: str, schema: int | None = None, need=()) -> dict | None:
  """fits.json (None if absent); with `schema`, WorkdirError unless it is a fits.json of that
  schema_version holding the keys `need`."""
  path = fits_path(workdir)
  fits = read_json(path)
  if fits is None or schema is None:
    return fits
  redo = f"rerun `mixlaw fit --workdir {workdir}`"
  if not isinstance(fits, dict):
    raise WorkdirError(f"{path} is not a fits.json (a JSON object, got {type(fits).__name__}): "
                       f"{redo}")
  if fits.get("schema_version") != schema:
    raise WorkdirError(f"{path} has schema_version {fits.get('schema_version')!r}, this mixlaw "
                       f"reads {schema}: {redo}")
  missing = [k for k in need if k not in fits]
  if missing:
    raise WorkdirError(f"{path} lacks {', '.join(missing)}: {redo}")
  return fits


# The sha256 of the results table each workdir's last read in this process (mixlaw.results
# notes it): what fits.json records as the table it was fitted from.
_TABLES_READ: dict[str, str] = {}


def note_table_read(workdir: str, sha256: str) -> None:
  _TABLES_READ[os.path.realpath(workdir)] = sha256


def write_fits(workdir: str, fits: dict, results_sha256: str | None = None) -> None:
  """Writes fits.json, recording the sha256 of the results table it was fitted from (default:
  the table this process last read from `workdir`)."""
  sha = results_sha256 or _TABLES_READ.get(os.path.realpath(workdir))
  out = {k: v for k, v in fits.items() if k != RESULTS_SHA256}
  if sha:
    head = {k: out.pop(k) for k in ("schema_version",) if k in out}
    out = {**head, RESULTS_SHA256: sha, **out}
  write_json(fits_path(workdir), out, indent=1, allow_nan=False)


def check_fits_current(workdir: str, fits: dict) -> str | None:
  """WorkdirError if fits.json was fitted from a results table other than the workdir's;
  a note (else None) where that cannot be told: a fits.json written before the table's sha256
  was recorded."""
  now, was = file_sha256(results_path(workdir)), fits.get(RESULTS_SHA256)
  redo = f"rerun `mixlaw fit --workdir {workdir}`"
  if was is None:
    return (f"{fits_path(workdir)} does not record the results table it was fitted from "
            f"(written by an earlier mixlaw): {redo} to have it checked")
  if now is not None and now != was:
    raise WorkdirError(f"{fits_path(workdir)} is stale: {results_path(workdir)} changed since "
                       f"the fit (sha256 {was[:12]}... then, {now[:12]}... now): {redo}")
  return None


def new_sweep_id() -> str:
  """A new sweep's id: its start time and 8 random hex digits."""
  return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(4).hex()}"


def write_demo(workdir: str, info: dict) -> None:
  write_json(demo_path(workdir), info)
