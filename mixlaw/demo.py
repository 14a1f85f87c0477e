"""The main job: corpora -> base models -> CPT at several ratios -> fits -> CMR -> report.

Each stage reuses finished work (built corpora, exported arrays, finished runs), so rerunning the
demo resumes; --fresh starts the sweep over. Stage wall times go to WORKDIR/demo.json.
"""

from __future__ import annotations

import json
import os
import time

import gin

from mixlaw import cli

EXPERIMENTS = {False: "experiments/demo.gin", True: "experiments/demo_quick.gin"}


def main(workdir: str, *, quick: bool = False, fresh: bool = False, data_dir: str = "data") -> dict:
  """Runs every stage; returns {stage: seconds}."""
  gin.clear_config()
  cli._gin_setup([EXPERIMENTS[quick]], [f"DataConfig.data_dir = '{data_dir}'"])
  from mixlaw import run as run_lib
  data = run_lib.DataConfig()
  os.makedirs(workdir, exist_ok=True)
  times = {}

  def stage(name, fn):
    print(f"\n== {name}", flush=True)
    t = time.perf_counter()
    out = fn()
    times[name] = round(time.perf_counter() - t, 1)
    print(f"== {name}: {times[name]:.1f} s", flush=True)
    return out

  from mixlaw import corpora
  stage("corpora", lambda: corpora.corpora_build_main(
      [data.general, data.domain], data.data_dir, False))
  from mixlaw import data as data_lib
  stage("export", lambda: data_lib.prepare_arrays(
      data.corpora, data_dir=data.data_dir, seq_len=data.seq_len, vocab_name=data.vocab_name,
      max_validation_rows=data.max_validation_rows))
  from mixlaw import sweep
  stage("sweep", lambda: sweep.execute(workdir, fresh=fresh))
  print(sweep.format_status(sweep.status(workdir)))
  from mixlaw import laws
  fits = stage("fit", lambda: laws.write_fits(workdir, **sweep.fit_options()))
  print(laws.format_tables(fits))
  from mixlaw import report
  paths = stage("report", lambda: report.write_report(workdir))
  times["total"] = round(sum(times.values()), 1)
  with open(os.path.join(workdir, "demo.json"), "w") as f:
    json.dump({"quick": quick, "stage_seconds": times, "experiment": EXPERIMENTS[quick]}, f, indent=2)
  print(f"\nreport: {paths['md']}\n        {paths['html']}\nstage times (s): {times}")
  return times
