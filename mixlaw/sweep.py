"""A sweep: for each size, base-pretrain once, then CPT at every ratio; resumable, self-describing.

Rerunning the same command resumes: finished runs are skipped, an interrupted run continues from
its last checkpoint, and the results table keeps exactly one row per (run, step, split).
"""

from __future__ import annotations

import json
import os

import gin

from mixlaw import model as model_lib
from mixlaw import run as run_lib


@gin.configurable
def plan(sizes=gin.REQUIRED, ratios=gin.REQUIRED, seed: int = 0) -> list[run_lib.RunSpec]:
  """Base runs then CPT runs, size by size, in the order they must execute."""
  if not sizes:
    raise run_lib.RunError("sweep needs at least one size (plan.sizes)")
  if not ratios:
    raise run_lib.RunError("sweep needs at least one ratio (plan.ratios)")
  specs = []
  for size in sizes:
    specs.append(run_lib.RunSpec(size, "base", 0.0, seed))
    specs += [run_lib.RunSpec(size, "cpt", float(r), seed) for r in ratios]
  for s in specs:  # Every bad size or ratio is reported before any compute is spent.
    s.validate()
  return specs


def _steps(spec: run_lib.RunSpec, data: run_lib.DataConfig, vocab_size: int) -> int:
  with gin.config_scope(run_lib.scope_of(spec.phase)):
    phase = run_lib.PhaseConfig()
  cfg = model_lib.get_config(spec.size, vocab_size=vocab_size)
  return phase.num_steps(model_lib.count_params(cfg)["non_embedding"], data.seq_len)


def status(workdir: str) -> list[dict]:
  """One line per planned run: id, state, steps done / planned."""
  specs = plan()
  out = []
  for s in specs:
    st = run_lib.read_status(workdir, s)
    out.append({"run_id": s.run_id, "state": st["state"], "step": st.get("step", 0),
                "steps": st.get("steps"), "wallclock_s": st.get("wallclock_s")})
  return out


def execute(workdir: str, *, fresh: bool = False, show_progress: bool = True) -> list[dict]:
  """Runs every planned run not yet done; returns their summaries."""
  specs = plan()
  data = run_lib.DataConfig()
  os.makedirs(workdir, exist_ok=True)
  if fresh:
    for s in specs:
      run_lib.reset(workdir, s)
  corpora = [data.general] + ([data.domain] if data.domain else [])
  arrays_dir = run_lib.resolve_arrays(data, corpora)  # Bad corpora fail here, before training.
  from mixlaw import arrays
  vocab_size = int(arrays.read_meta(arrays_dir)["vocab_size"])
  steps = {s.run_id: _steps(s, data, vocab_size) for s in specs}
  states = {s.run_id: run_lib.read_status(workdir, s) for s in specs}
  done = {k: steps[k] if st["state"] == "done" else st["step"] for k, st in states.items()}
  with open(os.path.join(workdir, "sweep.json"), "w") as f:
    json.dump({"runs": [s.run_id for s in specs], "steps": steps,
               "config": gin.config_str()}, f, indent=2)

  from tqdm.auto import tqdm
  bar = tqdm(total=sum(steps.values()), initial=sum(done.values()), unit="step",
             dynamic_ncols=True, disable=not show_progress)
  summaries = []
  try:
    for i, s in enumerate(specs):
      bar.set_description(f"[{i + 1}/{len(specs)}] {s.run_id}")
      summaries.append(run_lib.execute(s, workdir, progress=bar))
  finally:
    bar.close()
  return summaries


def format_status(rows: list[dict]) -> str:
  lines = [f"{'run':34s} {'state':8s} {'step':>12s} {'wall s':>8s}"]
  for r in rows:
    steps = f"{r['step']}/{r['steps']}" if r.get("steps") else str(r["step"])
    wall = f"{r['wallclock_s']:.0f}" if r.get("wallclock_s") else ""
    lines.append(f"{r['run_id']:34s} {r['state']:8s} {steps:>12s} {wall:>8s}")
  return "\n".join(lines)
