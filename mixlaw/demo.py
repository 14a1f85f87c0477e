"""The main job: corpora -> base models -> CPT at several ratios -> fits -> CMR -> report.

Each stage reuses finished work (built corpora, exported arrays, finished runs), so rerunning the
demo resumes; --fresh starts the sweep over (its earlier runs and tables move to
WORKDIR/.previous/TIME/). Every setting comes from the demo's gin file (and
gin flags after it): the sweep stores the experiment's fit options in WORKDIR/sweep.json, and
the fit stage reads them from there. Stage wall times go to WORKDIR/demo.json.
"""

from __future__ import annotations

import time

import gin

from mixlaw import config
from mixlaw import corpora
from mixlaw import ginsetup
from mixlaw import laws
from mixlaw import report
from mixlaw import sweep
from mixlaw import workdir as workdir_lib

EXPERIMENTS = {False: "experiments/demo.gin", True: "experiments/demo_quick.gin"}


def main(workdir: str, *, quick: bool = False, fresh: bool = False, data_dir: str | None = None,
         gin_files=(), gin_bindings=()) -> dict:
  """Runs every stage; returns {stage: seconds}."""
  gin.clear_config()
  extra = [f"DataConfig.data_dir = {data_dir!r}"] if data_dir else []
  ginsetup.setup([EXPERIMENTS[quick], *gin_files], [*gin_bindings, *extra])
  data = config.DataConfig()
  workdir_lib.ensure_writable(workdir)  # Before the corpora are built.
  times = {}

  def stage(name, fn):
    print(f"\n== {name}", flush=True)
    t = time.perf_counter()
    out = fn()
    times[name] = round(time.perf_counter() - t, 1)
    print(f"== {name}: {times[name]:.1f} s", flush=True)
    return out

  stage("corpora", lambda: corpora.corpora_build_main(data.corpora, data.data_dir, False))
  from mixlaw import data as data_lib  # TensorFlow: imported once the corpora are built.
  stage("export", lambda: data_lib.prepare_arrays(
      data.corpora, data_dir=data.data_dir, seq_len=data.seq_len, vocab_name=data.vocab_name,
      max_validation_rows=data.max_validation_rows))
  stage("sweep", lambda: sweep.execute(workdir, fresh=fresh))
  print(sweep.format_status(sweep.status(workdir)))
  # The experiment's fit options reach the fit through sweep.json (not restated here).
  fits = stage("fit", lambda: laws.write_fits(workdir))
  print(laws.format_tables(fits))
  paths = stage("report", lambda: report.write_report(workdir))
  times["total"] = round(sum(times.values()), 1)
  workdir_lib.write_demo(workdir, {"quick": quick, "stage_seconds": times,
                                   "experiment": EXPERIMENTS[quick]})
  print(f"\nreport: {paths['md']}\n        {paths['html']}\nstage times (s): {times}")
  return times
