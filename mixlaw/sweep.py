"""A sweep: for each size, base-pretrain once, then CPT at every ratio and CPT seed; resumable.

CPT runs of one size share the base checkpoint and every shape; with `plan.ensemble` (default)
they train as ensembles (`mixlaw.ensemble`): K members in one compiled program, chunked to fit
memory. Rerunning the same command resumes: finished runs are skipped, interrupted ones continue
from their last checkpoint, and the results table keeps exactly one row per (run, step, split).
`--fresh` checks every setting first, then moves the workdir's earlier runs and tables to
WORKDIR/.previous/TIME/ (the sweep gets a new sweep id); nothing is deleted.
"""

from __future__ import annotations

import numbers
import sys

import gin

from mixlaw import checkpoint
from mixlaw import config
from mixlaw import distributed
from mixlaw import ensemble
from mixlaw import metrics
from mixlaw import model as model_lib
from mixlaw import optim
from mixlaw import results
from mixlaw import run as run_lib
from mixlaw import workdir as workdir_lib


class Plan(list):
  """The planned RunSpecs, in execution order, with how to execute them."""

  def __init__(self, specs, ensemble: bool, max_members: int, base_workdir: str | None):
    super().__init__(specs)
    self.ensemble, self.max_members = bool(ensemble), int(max_members)
    self.base_workdir = base_workdir

  def base_checkpoint(self, spec: config.RunSpec) -> str | None:
    """Where a CPT run's base model is: another workdir's (base_workdir), else this one's."""
    if spec.phase != "cpt" or not self.base_workdir:
      return None
    return workdir_lib.checkpoint_dir(self.base_workdir, spec.base().run_id)


@gin.configurable
def plan(sizes=gin.REQUIRED, ratios=gin.REQUIRED, seed: int = 0, cpt_seeds=(0,),
         ensemble: bool = True, max_members: int = 0, base_workdir: str | None = None) -> Plan:
  """Base runs then CPT runs (every ratio x CPT seed), size by size, in execution order.

  ensemble: train a size's CPT runs as ensembles (K members per compiled program);
  max_members: cap K (0: as many as fit in memory). Both only change how the runs execute,
  not what they compute (ensemble members equal single runs to float rounding; tested).
  base_workdir: take the base models from another sweep's workdir (e.g. a learning-rate pilot
  or a second domain on the same bases); no base runs are then planned here.
  """
  _check_lists(sizes, ratios, cpt_seeds)
  specs = []
  for size in sizes:
    if not base_workdir:
      specs.append(config.RunSpec(size, "base", 0.0, seed))
    specs += [config.RunSpec(size, "cpt", float(r), seed, c) for r in ratios for c in cpt_seeds]
  ids = {}
  for s in specs:  # Run ids keep R to 4 decimals: two ratios must not share one.
    if s.run_id in ids:
      raise config.RunError(f"plan.ratios {ids[s.run_id].ratio!r} and {s.ratio!r} give the same "
                            f"run id {s.run_id} (run ids keep R to 4 decimals): list each ratio "
                            "once, distinct in its first 4 decimals")
    ids[s.run_id] = s
  for s in specs:  # Every bad size, ratio or seed is reported before any compute is spent.
    s.validate()
  return Plan(specs, ensemble, max_members, base_workdir)


def _check_lists(sizes, ratios, cpt_seeds) -> None:
  """plan's lists: non-empty lists of names, numbers in [0, 1], distinct integers >= 0."""
  def check(ok, what, got):
    if not ok:
      raise config.RunError(f"plan.{what}, got {got!r}")
  for name, v in (("sizes", sizes), ("ratios", ratios), ("cpt_seeds", cpt_seeds)):
    check(isinstance(v, (list, tuple)) and len(v) > 0, f"{name} must be a non-empty list", v)
  for x in sizes:
    check(isinstance(x, str), "sizes must be model size names (strings)", x)
  for x in ratios:
    check(isinstance(x, numbers.Real) and not isinstance(x, bool) and 0 <= x <= 1,
          "ratios must be domain token shares R in [0, 1]", x)
  for x in cpt_seeds:
    check(isinstance(x, numbers.Integral) and not isinstance(x, bool) and x >= 0,
          "cpt_seeds must be integers >= 0", x)
  check(len(set(cpt_seeds)) == len(cpt_seeds), "cpt_seeds must be distinct", cpt_seeds)


def check_settings(specs: Plan, data: config.DataConfig, vocab_size: int) -> None:
  """What the runs check when they start (model shapes, optimizer and phase settings, the
  member loop, the base models of base_workdir), checked for the whole plan before anything
  in the workdir is written or moved."""
  for size in dict.fromkeys(s.size for s in specs):
    model_lib.get_config(size, vocab_size=vocab_size)
  if any(s.ratio > 0 for s in specs) and not data.domain:
    raise config.RunError("ratio > 0 needs a domain corpus (DataConfig.domain)")
  for s in {s.phase: s for s in specs}.values():
    steps = config.phase_steps(s, data, vocab_size)
    with gin.config_scope(config.scope_of(s.phase)):
      optim.make_optimizer(total_steps=steps,
                           warmup_steps=config.phase_config(s.phase).warmup_steps(steps))
  config.MeshConfig()
  if specs.ensemble:
    ensemble.member_loop()
  for s in specs:
    ckpt = specs.base_checkpoint(s)
    if ckpt and checkpoint.latest_step_in(ckpt) is None:
      raise config.RunError(f"plan.base_workdir has no base model of size {s.size} (none at "
                            f"{ckpt}): run its base pretraining first")


def _check_base(specs: Plan, spec: config.RunSpec, workdir: str) -> None:
  """A CPT unit starts only from a finished base model (not one stopped by a NaN)."""
  if spec.phase != "cpt":
    return
  where = specs.base_workdir or workdir
  base = run_lib.read_status(where, spec.base())
  if base["state"] == "failed":
    raise config.RunError(f"the base model {spec.base().run_id} in {where} failed "
                          f"({base.get('error')}); CPT needs a finished one: fix its settings "
                          "and rerun with --fresh")


def fit_options() -> dict:
  """The experiment's fit settings: its gin bindings of `FitOptions` (e.g. `FitOptions.n_boot =
  200` in its gin file; `mixlaw.ginsetup` registers the class). `execute` stores them in
  WORKDIR/sweep.json, from where `mixlaw fit` and `mixlaw report` apply them; what is not bound
  takes the laws' defaults."""
  try:
    return gin.get_bindings("FitOptions")
  except ValueError:  # FitOptions not registered: gin was set up without mixlaw.ginsetup.
    return {}


def data_orders(specs: list[config.RunSpec]) -> str:
  """'shared' when every CPT run with the same CPT seed reads the same data order whatever its
  size and R (the seeds are then paired across cells and a bootstrap must resample them jointly),
  'independent' when no two (size, R) cells share one."""
  cpt = [s for s in specs if s.phase == "cpt"]
  cells = {}
  for s in cpt:
    cells.setdefault(s.data_seed, set()).add((s.size, s.ratio))
  return "shared" if any(len(c) > 1 for c in cells.values()) else "independent"


def groups(specs: Plan, workdir: str, vocab_size: int,
           data: config.DataConfig) -> list[list[config.RunSpec]]:
  """Execution units: each base run alone, then its size's unfinished CPT runs, as ensembles of
  at most max_members (memory) when specs.ensemble, else one by one."""
  out = []
  for size in dict.fromkeys(s.size for s in specs):
    out += [[s] for s in specs if s.size == size and s.phase == "base"]
    cpt = [s for s in specs if s.size == size and s.phase == "cpt"
           and run_lib.read_status(workdir, s)["state"] != "done"]
    if not specs.ensemble:
      out += [[s] for s in cpt]
      continue
    cfg = model_lib.get_config(size, vocab_size=vocab_size)
    batch = config.phase_config("cpt").batch_size
    k = ensemble.max_members(cfg, batch, data.seq_len, specs.max_members)
    n_chunks = -(-len(cpt) // k) if cpt else 0
    for i in range(n_chunks):  # Even chunks: K = 7 as 4 + 3, not 6 + 1.
      out.append(cpt[i * len(cpt) // n_chunks:(i + 1) * len(cpt) // n_chunks])
  return out


def status(workdir: str) -> list[dict]:
  """One line per planned run: id, R, CPT seed, state, steps done / planned."""
  out = []
  for s in plan():
    st = run_lib.read_status(workdir, s)
    out.append({"run_id": s.run_id, "ratio": s.ratio if s.phase == "cpt" else None,
                "cpt_seed": s.cpt_seed if s.phase == "cpt" else None, "state": st["state"],
                "step": st.get("step", 0), "steps": st.get("steps"),
                "wallclock_s": st.get("wallclock_s"), "group": st.get("group")})
  return out


def execute(workdir: str, *, fresh: bool = False, show_progress: bool = True,
            phase: str = "all") -> list[dict]:
  """Runs every planned run not yet done (phase 'base' or 'cpt': only those); returns their
  summaries."""
  if phase not in ("all", "base", "cpt"):
    raise config.RunError(f"phase must be 'all', 'base' or 'cpt', got {phase!r}")
  specs = plan()
  data = config.DataConfig()
  if data.backend == "seqio":
    from mixlaw import data as data_lib
    vocab_size = data_lib.vocab_size(data.vocab_name, data.data_dir)
  else:  # Missing arrays or corpora fail here, before training.
    from mixlaw import arrays
    vocab_size = int(arrays.read_meta(run_lib.resolve_arrays(data))["vocab_size"])
  steps = {s.run_id: config.phase_steps(s, data, vocab_size) for s in specs}
  check_settings(specs, data, vocab_size)
  workdir_lib.ensure_writable(workdir)
  if distributed.is_lead():
    moved = workdir_lib.move_to_previous(workdir) if fresh else None
    if moved:
      print(f"mixlaw: --fresh: the workdir's earlier runs and tables are now in {moved}",
            file=sys.stderr)
    sweep_id = results.sweep_id(workdir)  # A fresh sweep gets a new one.
  distributed.barrier("mixlaw-sweep-start")  # Nothing is read before process 0 has moved them.
  units = [g for g in groups(specs, workdir, vocab_size, data)
           if phase == "all" or g[0].phase == phase]
  if distributed.is_lead():  # One writer per workdir file (multi-process runs).
    workdir_lib.write_sweep(workdir, {
        workdir_lib.SWEEP_ID: sweep_id,
        "runs": [s.run_id for s in specs], "steps": steps,
        "groups": [[s.run_id for s in g] for g in units],
        "ensemble": specs.ensemble, "max_members": specs.max_members,
        "member_loop": ensemble.member_loop() if specs.ensemble else None,
        "base_workdir": specs.base_workdir, "data_orders": data_orders(specs),
        workdir_lib.FIT_OPTIONS: fit_options(), "config": gin.config_str()})
  todo = [s for g in units for s in g]
  states = {s.run_id: run_lib.read_status(workdir, s) for s in todo}
  done = sum(steps[k] if st["state"] in ("done", "failed") else st.get("step", 0)
             for k, st in states.items())
  bar = metrics.progress(sum(steps[s.run_id] for s in todo), done, unit="run-step",
                         disable=not show_progress)
  summaries = []
  try:
    for i, g in enumerate(units):
      name = g[0].run_id if len(g) == 1 else f"{config.group_id(g)} (K={len(g)})"
      bar.set_description(f"[{i + 1}/{len(units)}] {name}")
      _check_base(specs, g[0], workdir)
      summaries += run_lib.execute_group(g, workdir, base_checkpoint=specs.base_checkpoint(g[0]),
                                         progress=_Scaled(bar, len(g)))
  finally:
    bar.close()
  return summaries


class _Scaled:
  """A progress bar view that counts each ensemble step as K run-steps."""

  def __init__(self, bar, k: int):
    self.bar, self.k = bar, k

  def update(self, n: int = 1) -> None:
    self.bar.update(n * self.k)

  def set_postfix(self, **kw) -> None:
    self.bar.set_postfix(**kw)

  def close(self) -> None:
    pass


def format_status(rows: list[dict]) -> str:
  lines = [f"{'run':30s} {'R':>7s} {'seed':>4s} {'state':8s} {'step':>12s} {'wall s':>8s}"]
  for r in rows:
    steps = f"{r['step']}/{r['steps']}" if r.get("steps") else str(r["step"])
    wall = f"{r['wallclock_s']:.0f}" if r.get("wallclock_s") else ""
    ratio = f"{r['ratio']:.4f}" if r.get("ratio") is not None else "base"
    seed = str(r["cpt_seed"]) if r.get("cpt_seed") is not None else ""
    lines.append(f"{r['run_id']:30s} {ratio:>7s} {seed:>4s} {r['state']:8s} {steps:>12s} {wall:>8s}")
  return "\n".join(lines)
