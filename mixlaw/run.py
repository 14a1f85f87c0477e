"""Runs: one base or CPT run, or an ensemble of CPT runs of one size trained as one program.

A run lives in WORKDIR/runs/RUN_ID/ (checkpoints/, tb/, config.gin, run.json) and appends its
rows to WORKDIR/results.jsonl. An ensemble (K CPT members of one size, `mixlaw.ensemble`) keeps
one stacked checkpoint in WORKDIR/runs/GROUP_ID/checkpoints and each member its own run dir and
rows. Killed at any point and started again, a run resumes from its last checkpoint (params,
optimizer, step; the data position is the step: batch = f(seed, step)) and rewrites the rows after
it. TensorFlow is never imported here unless `DataConfig.backend = 'seqio'`: training reads the
token arrays the export stage wrote (`mixlaw data export`).

Its configuration (`DataConfig`, `PhaseConfig`, `MeshConfig`, `RunSpec`) is `mixlaw.config`;
its paths and run ids are `mixlaw.workdir`'s.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import sys
import time
from typing import Any

import gin
import jax
import numpy as np

from mixlaw import arrays
from mixlaw import checkpoint
from mixlaw import distributed
from mixlaw import ensemble
from mixlaw import metrics as metrics_lib
from mixlaw import model as model_lib
from mixlaw import optim
from mixlaw import results
from mixlaw import sharding
from mixlaw import train
from mixlaw import workdir as workdir_lib
# The configuration, re-exported: run.DataConfig, run.RunSpec, ... name the same classes.
from mixlaw.config import (DataConfig, MeshConfig, PhaseConfig, RunError, RunSpec,  # noqa: F401
                           group_id, phase_config, phase_steps, scope_of, single)

GENERAL, DOMAIN = arrays.GENERAL, arrays.DOMAIN


# ------------------------------------------------------------------------------ status
def read_status(workdir: str, spec: RunSpec) -> dict:
  """{'state': 'pending' | 'partial' | 'done' | 'failed', 'step': last checkpointed step, ...}."""
  info = workdir_lib.read_run(workdir, spec.run_id)
  if info.get("state") in ("done", "failed"):
    return info
  group = info.get("group")
  ckpt_dir = workdir_lib.checkpoint_dir(workdir, group or spec.run_id)
  step = checkpoint.latest_step_in(ckpt_dir) if os.path.isdir(ckpt_dir) else None
  if step is None:
    return {"state": "pending", "step": 0}
  return {"state": "partial", "step": step, "group": group}


def resolve_arrays(data: DataConfig) -> str:
  """The exported arrays dir holding the config's corpora (the export stage writes it)."""
  d = data.arrays_path()
  have = arrays.read_meta(d).get("corpora", {})
  missing = [c for c in data.corpora if c not in have]
  if missing:
    raise RunError(f"no exported token arrays for corpora {missing} at {d}; run `mixlaw data "
                   f"export` with this run's gin files and bindings first")
  want = data.max_validation_rows
  short = [c for c in data.corpora if have[c].get("max_validation_rows", want) < want]
  if short:
    raise RunError(f"the arrays of {short} at {d} were exported with fewer validation rows than "
                   f"DataConfig.max_validation_rows = {want}; rerun `mixlaw data export` with "
                   f"this run's gin files and bindings")
  return d


def enable_compilation_cache() -> None:
  """Persistent XLA cache: runs with the same shapes and schedule (a resumed run, the next
  chunk of an ensemble) reuse compiled steps across processes. MIXLAW_XLA_CACHE=0 disables."""
  path = os.environ.get("MIXLAW_XLA_CACHE", os.path.expanduser("~/.cache/mixlaw/xla"))
  if path in ("", "0") or jax.config.jax_compilation_cache_dir:
    return
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def versions() -> dict:
  import flax
  import optax
  import orbax.checkpoint as ocp

  import mixlaw
  return {
      "mixlaw": mixlaw.__version__, "python": sys.version.split()[0], "jax": jax.__version__,
      "flax": flax.__version__, "optax": optax.__version__,
      "orbax-checkpoint": getattr(ocp, "__version__", "?"), "numpy": np.__version__,
      "platform": platform.platform(), "backend": jax.default_backend(),
      "devices": jax.device_count(), "processes": jax.process_count(),
      "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
      "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", ""),
  }


# ------------------------------------------------------------------------------- preparation
@dataclasses.dataclass
class Setup:
  """Everything a run (K = 1) or an ensemble (K CPT members of one size) needs before step 1."""
  specs: list[RunSpec]
  data: DataConfig
  phase: PhaseConfig
  cfg: model_lib.ModelConfig
  counts: dict
  steps: int
  warmup_steps: int
  eval_every: int
  source: str  # Where batches come from: the arrays dir, or 'seqio:<mixture>'.
  samplers: list  # One per member: .batch(step) -> numpy batch dict.
  val_batches: list  # Per source (general, domain): the fixed validation batches.
  mesh: Any
  optimizer: Any
  schedule: Any
  lr_S: np.ndarray  # The schedule's learning rate of update s + 1 (every row's lr column).
  base_checkpoint: str | None
  ckpt_dir: str

  def lr(self, step: int) -> float:
    """The learning rate of the update that led to `step` (step 0: the first update's)."""
    return float(self.lr_S[max(step - 1, 0)])

  @property
  def k(self) -> int:
    return len(self.specs)


def _samplers(specs, data, phase, workdir_arrays):
  """Batch sources per member, from the exported arrays or the seqio Mixture."""
  if data.backend == "seqio":
    from mixlaw import data as data_lib  # TensorFlow side, only for this backend.
    return [data_lib.SeqioSampler(data.general, data.domain if s.ratio > 0 else None, s.ratio,
                                  batch_size=phase.batch_size, seq_len=data.seq_len,
                                  seed=s.data_seed, data_dir=data.data_dir,
                                  vocab_name=data.vocab_name) for s in specs]
  general = arrays.load_packed(workdir_arrays, data.general, "train")
  domain = arrays.load_packed(workdir_arrays, data.domain, "train") if data.domain else None
  return [arrays.MixtureSampler(general, domain if s.ratio > 0 else None, s.ratio,
                                phase.batch_size, s.data_seed) for s in specs]


def _validation(data, phase, arrays_dir):
  out = []
  n_batches = max(1, -(-data.max_validation_rows // phase.batch_size))
  for src, corpus in ((GENERAL, data.general), (DOMAIN, data.domain)):
    if not corpus:
      out.append([])
    elif data.backend == "seqio":
      from mixlaw import data as data_lib
      out.append(data_lib.get_validation_batches(
          corpus, seq_len=data.seq_len, batch_size=phase.batch_size,
          max_rows=data.max_validation_rows, source_id=src, data_dir=data.data_dir,
          vocab_name=data.vocab_name))
    else:
      rows = arrays.load_packed(arrays_dir, corpus, "validation")
      out.append(arrays.validation_batches(rows, phase.batch_size, src)[:n_batches])
  return out


def prepare(specs: list[RunSpec], workdir: str, base_checkpoint: str | None = None) -> Setup:
  """Checks the specs and inputs and builds data, mesh and optimizer; computes nothing."""
  for s in specs:
    s.validate()
  if len(specs) > 1 and any(s.phase != "cpt" or s.size != specs[0].size or s.seed != specs[0].seed
                            for s in specs):
    raise RunError("an ensemble holds CPT runs of one size and base seed")
  spec = specs[0]
  data = DataConfig()
  phase = phase_config(spec.phase)
  mesh_cfg = MeshConfig()
  if spec.phase == "cpt":
    base_checkpoint = base_checkpoint or workdir_lib.checkpoint_dir(workdir, spec.base().run_id)
    if checkpoint.latest_step_in(base_checkpoint) is None:
      raise RunError(f"CPT run {spec.run_id} needs the base checkpoint of size {spec.size}, "
                     f"none found at {base_checkpoint} (run the base pretraining first)")
  if any(s.ratio > 0 for s in specs) and not data.domain:
    raise RunError("ratio > 0 needs a domain corpus (DataConfig.domain)")
  if data.backend == "seqio":
    from mixlaw import data as data_lib
    vocab_size, source = data_lib.vocab_size(data.vocab_name, data.data_dir), "seqio"
  else:
    source = resolve_arrays(data)
    meta = arrays.read_meta(source)
    if int(meta["seq_len"]) != data.seq_len:
      raise RunError(f"arrays at {source} have seq_len {meta['seq_len']}, config says {data.seq_len}")
    vocab_size = int(meta["vocab_size"])
  cfg = model_lib.get_config(spec.size, vocab_size=vocab_size)
  steps = phase_steps(spec, data, vocab_size)
  enable_compilation_cache()
  distributed.initialize(mesh_cfg.distributed)  # A no-op when the CLI started it (it must).
  if mesh_cfg.num_devices > jax.device_count():
    raise RunError(f"MeshConfig.num_devices = {mesh_cfg.num_devices}, but there are only "
                   f"{jax.device_count()} devices")
  devices = jax.devices()[:mesh_cfg.num_devices] if mesh_cfg.num_devices else None
  mesh = sharding.make_mesh(mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor, devices)
  rows_over = mesh.shape["data"] * mesh.shape["fsdp"]
  if phase.batch_size % rows_over:
    raise RunError(f"{scope_of(spec.phase)}/PhaseConfig.batch_size = {phase.batch_size} must be a "
                   f"multiple of the mesh's data x fsdp = {rows_over} devices")
  warmup = phase.warmup_steps(steps)
  with gin.config_scope(scope_of(spec.phase)):
    optimizer, schedule = optim.make_optimizer(total_steps=steps, warmup_steps=warmup)
  rid = spec.run_id if len(specs) == 1 else group_id(specs)
  return Setup(
      specs=list(specs), data=data, phase=phase, cfg=cfg, counts=model_lib.count_params(cfg),
      steps=steps, warmup_steps=warmup, eval_every=phase.eval_interval(steps), source=source,
      samplers=_samplers(specs, data, phase, source), val_batches=_validation(data, phase, source),
      mesh=mesh, optimizer=optimizer, schedule=schedule,
      lr_S=np.asarray(schedule(np.arange(steps)), np.float64), base_checkpoint=base_checkpoint,
      ckpt_dir=workdir_lib.checkpoint_dir(workdir, rid))


# ------------------------------------------------------------------- the compiled program
class _Program:
  """The compiled pieces of a run (K = 1: plain steps) or an ensemble (K > 1: stacked members)."""

  def __init__(self, s: Setup):
    self.s, self.stacked = s, s.k > 1
    m = s.phase.microbatches
    if self.stacked:
      self._train = ensemble.make_train_step(s.cfg, s.optimizer, s.mesh, microbatches=m)
      self._eval = ensemble.make_eval_step(s.cfg, s.mesh)
    else:
      self._train = train.make_train_step(s.cfg, s.optimizer, s.mesh, microbatches=m)
      self._eval = train.make_eval_step(s.cfg, s.mesh)
    self.alive = np.ones(s.k, bool)

  def abstract_state(self):
    s = self.s
    if self.stacked:
      return ensemble.abstract_state(s.cfg, s.optimizer, s.mesh, s.k)
    return train.abstract_state(s.cfg, s.optimizer, s.mesh)

  def initial_state(self):
    """Base runs: fresh init. CPT: the base params and a fresh optimizer (stacked K times)."""
    s = self.s
    if s.specs[0].phase == "base":
      return train.init_state(s.cfg, s.optimizer, s.mesh, s.specs[0].seed)
    params = checkpoint.restore_params(s.base_checkpoint,
                                       train.abstract_state(s.cfg, s.optimizer, s.mesh).params)
    if self.stacked:
      return ensemble.state_from_params(params, s.optimizer, s.mesh, s.cfg, s.k)
    return train.state_from_params(params, s.optimizer, s.mesh, s.cfg)

  def batch(self, step: int):
    """Global batch `step`; this process reads only its rows of it."""
    b = self.s.phase.batch_size
    rows = sharding.process_rows(self.s.mesh, b)
    batches = [smp.batch(step, rows) if isinstance(smp, arrays.MixtureSampler)
               else {k: v[rows] for k, v in smp.batch(step).items()} for smp in self.s.samplers]
    if self.stacked:
      return ensemble.shard_batch(ensemble.stack_batches(batches), self.s.mesh, b)
    return sharding.shard_batch(batches[0], self.s.mesh, b)

  def step(self, state, batch):
    if self.stacked:
      return self._train(state, batch, jax.numpy.asarray(self.alive))
    return self._train(state, batch)

  def member_metrics(self, metrics) -> list[dict]:
    m = jax.device_get(metrics)
    if not self.stacked:
      return [m]
    return [{k: np.asarray(v)[i] for k, v in m.items()} for i in range(self.s.k)]

  def evaluate(self, params) -> np.ndarray:
    """Held-out loss per member and source [K, 2] (NaN where a source has no data)."""
    out = np.full((self.s.k, 2), np.nan)
    for src, batches in enumerate(self.s.val_batches):
      tot = np.zeros((self.s.k, 2))
      for b in batches:
        r = self._eval(params, sharding.shard_batch(sharding.local_rows(b, self.s.mesh),
                                                    self.s.mesh, len(b["source"])))
        loss = np.asarray(r["loss_sum_per_source"]).reshape(self.s.k, -1)[:, :2].sum(1)
        toks = np.asarray(r["tokens_per_source"]).reshape(self.s.k, -1)[:, :2].sum(1)
        tot += np.stack([loss, toks], 1)
      if batches:
        out[:, src] = tot[:, 0] / tot[:, 1]
    return out


# ---------------------------------------------------------------------------------- the log
@dataclasses.dataclass
class _Timers:
  data: float = 0.0
  compile: float = 0.0  # The first step and first evaluation of this process.
  step: float = 0.0
  eval: float = 0.0
  ckpt: float = 0.0


class RunLog:
  """What a run writes as it goes: results rows, TensorBoard, the progress bar, timers and
  run.json, one set per member."""

  def __init__(self, s: Setup, workdir: str, start: int, wallclock: float, alive, progress):
    self.s, self.workdir, self.alive = s, workdir, alive
    self.wallclock, self.timers = wallclock, _Timers()
    self.tokens_per_step = s.phase.batch_size * s.data.seq_len
    self.lead = jax.process_index() == 0
    from tensorboardX import SummaryWriter  # No TensorFlow needed.
    self.tb = [SummaryWriter(workdir_lib.tensorboard_dir(workdir, sp.run_id)) if self.lead
               else None for sp in s.specs]
    self.row0 = [{"run_id": sp.run_id, "phase": sp.phase, "size_name": sp.size,
                  "n_params": s.counts["total"], "n_params_nonemb": s.counts["non_embedding"],
                  "domain": s.data.domain or "", "ratio": float(sp.ratio),
                  "cpt_seed": sp.cpt_seed if sp.phase == "cpt" else 0,
                  "warmup_steps": s.warmup_steps} for sp in s.specs]
    self.own_bar = progress is None
    if self.own_bar:
      name = s.specs[0].run_id if s.k == 1 else f"{group_id(s.specs)} ({s.k} members)"
      progress = metrics_lib.progress(s.steps, start, name)
    self.bar = progress
    self.info = [self._info(sp, start) for sp in s.specs]
    for tb in self.tb:
      metrics_lib.write_config(tb, gin.operative_config_str())
    self.meter = metrics_lib.Meter(self.tb, self.tokens_per_step,
                                   metrics_lib.flops_per_token(s.cfg, s.data.seq_len),
                                   self.timers)

  def _info(self, spec, start) -> dict:
    s = self.s
    info = {
        "run_id": spec.run_id, "state": "running", "spec": dataclasses.asdict(spec),
        "steps": s.steps, "warmup_steps": s.warmup_steps, "eval_every": s.eval_every,
        "batch_size": s.phase.batch_size, "seq_len": s.data.seq_len, "data_source": s.source,
        "data_seed": spec.data_seed, "data": dataclasses.asdict(s.data),
        "vocab_size": s.cfg.vocab_size, "model": dataclasses.asdict(s.cfg),
        "n_params": s.counts["total"], "n_params_nonemb": s.counts["non_embedding"],
        "base_checkpoint": s.base_checkpoint, "mesh": dict(s.mesh.shape),
        "versions": versions(), "resumed_from": start,
        "group": group_id(s.specs) if s.k > 1 else None, "members": s.k,
    }
    if self.lead:
      workdir_lib.write_run(self.workdir, spec.run_id, info, gin.operative_config_str())
    return info

  def _rows(self, rows):
    if self.lead and rows:
      results.append(self.workdir, rows)
      for r in rows:
        tb = self.tb[[i["run_id"] for i in self.info].index(r["run_id"])]
        for name in ("general", "domain"):
          v = r[f"{name}_loss"]
          if math.isfinite(v):
            tb.add_scalar(f"{r['split']}/{name}_loss", v, r["step"])

  def _row(self, i, step, split, gen, dom):
    return dict(self.row0[i], step=step, tokens_seen=step * self.tokens_per_step, split=split,
                general_loss=float(gen), domain_loss=float(dom), lr=self.s.lr(step),
                wallclock=round(self.wallclock, 3))

  def validation(self, step: int, losses_Kx2: np.ndarray) -> None:
    self._rows([self._row(i, step, "validation", *losses_Kx2[i])
                for i in range(self.s.k) if self.alive[i]])

  def train(self, step: int, members: list[dict]) -> None:
    """Host side of update `step` (one step behind the device): check, then log."""
    rows = []
    for i, m in enumerate(members):
      if not self.alive[i]:
        continue
      bad = not (np.all(np.isfinite(m["loss"])) and np.all(np.isfinite(m["grad_norm"])))
      if bad and self.s.k == 1:
        train.check_finite(m, step)
      if bad:
        self.fail(i, f"non-finite loss or gradient at step {step}; this member stopped there "
                     f"(the other members go on)", step - 1)
        continue
      per, cnt = np.asarray(m["loss_per_source"], np.float64), np.asarray(m["tokens_per_source"])
      gen = per[GENERAL] if cnt[GENERAL] > 0 else float("nan")
      dom = per[DOMAIN] if len(cnt) > 1 and cnt[DOMAIN] > 0 else float("nan")
      rows.append(self._row(i, step, "train", gen, dom))
    self._rows(rows)
    self.meter.train(step, members, self.alive)
    if not self.alive.any():
      raise train.NonFiniteLossError(f"every member of {group_id(self.s.specs)} became "
                                     f"non-finite (last at step {step})")
    self.bar.update(1)
    self.bar.set_postfix(loss=f"{float(np.mean(members[int(np.argmax(self.alive))]['loss'])):.3f}",
                         refresh=False)

  def fail(self, i: int, why: str, step: int | None = None) -> None:
    """Member i stops here (its rows end before `step` + 1); the others go on."""
    self.alive[i] = False
    self.info[i].update(state="failed", error=why)
    if step is not None:
      self.info[i]["step"] = step
    if self.lead:
      workdir_lib.write_run(self.workdir, self.info[i]["run_id"], self.info[i])
      print(f"mixlaw: {self.info[i]['run_id']}: {why}", file=sys.stderr)

  def close(self) -> None:
    for tb in self.tb:
      if tb is not None:
        tb.close()
    if self.own_bar:
      self.bar.close()

  def finish(self, start: int) -> list[dict]:
    t = self.timers
    total = t.data + t.step + t.eval + t.ckpt  # Compilation excluded.
    steady = (self.s.steps - start - 1) * self.tokens_per_step
    for i, info in enumerate(self.info):
      if info["state"] == "failed":
        continue
      info.update({
          "state": "done", "step": self.s.steps, "wallclock_s": round(self.wallclock, 3),
          "timing_s": {k: round(v, 3) for k, v in dataclasses.asdict(t).items()},
          "data_fraction": t.data / total if total else 0.0,
          "eval_fraction": t.eval / total if total else 0.0,
          # Per member; an ensemble's summed throughput is this times its live members.
          "train_tokens_per_s": steady / t.step if t.step else 0.0,
      })
      if self.lead:
        workdir_lib.write_run(self.workdir, info["run_id"], info, gin.operative_config_str())
    return self.info


# ------------------------------------------------------------------------------ execution
def execute(spec: RunSpec, workdir: str, *, base_checkpoint: str | None = None,
            progress=None) -> dict:
  """Runs (or resumes, or skips if done) one run; returns its summary (run.json content)."""
  return execute_group([spec], workdir, base_checkpoint=base_checkpoint, progress=progress)[0]


def execute_group(specs: list[RunSpec], workdir: str, *, base_checkpoint: str | None = None,
                  progress=None) -> list[dict]:
  """Runs K = len(specs) runs as one program (K > 1: CPT members of one size); returns their
  summaries. A group whose members are all done (or failed) is skipped; otherwise it resumes
  from its shared checkpoint (members that failed stay stopped).

  Order: (1) check everything (nothing computed on bad input); (2) resume from the group's last
  checkpoint if any, else (3) initialise (base) or restore the base params (CPT); (4) the loop.
  """
  status = [read_status(workdir, sp) for sp in specs]
  if all(st["state"] in ("done", "failed") for st in status):
    return status
  s = prepare(specs, workdir, base_checkpoint)
  prog = _Program(s)
  ckpt = checkpoint.Checkpointer(s.ckpt_dir, max_to_keep=s.phase.keep_checkpoints)
  start, wallclock = 0, 0.0
  if ckpt.latest_step() is not None:  # (2) Resume: params, optimizer, step, data position.
    state, position = ckpt.restore(prog.abstract_state())
    start, wallclock = int(position["step"]), float(position.get("wallclock", 0.0))
    prog.alive[:] = position.get("alive", [True] * s.k)
  else:  # (3)
    state = prog.initial_state()
  if distributed.is_lead():
    dropped = sum(results.truncate_run(workdir, sp.run_id, start if start else -1) for sp in specs)
    if start:
      name = specs[0].run_id if len(specs) == 1 else group_id(specs)
      print(f"resuming {name} at step {start}; dropped {dropped} rows after the checkpoint",
            file=sys.stderr)
  log = RunLog(s, workdir, start, wallclock, prog.alive, progress)
  try:
    for i in np.flatnonzero(~prog.alive):
      log.fail(i, "non-finite before the checkpoint this run resumed from")
    _loop(s, prog, state, start, log, ckpt)
  except train.NonFiniteLossError as e:  # Stopped for good: run.json says why (reruns skip it).
    ckpt.wait()
    for i in np.flatnonzero(prog.alive):
      log.info[i].update(state="failed", error=str(e), step=ckpt.latest_step() or 0)
      if log.lead:
        workdir_lib.write_run(workdir, log.info[i]["run_id"], log.info[i])
    raise
  finally:
    ckpt.wait()
    ckpt.close()
    log.close()
  out = log.finish(start)
  distributed.barrier(f"mixlaw-done-{s.ckpt_dir}")  # Its files are written before any reads.
  return out


def _loop(s: Setup, prog: _Program, state, start: int, log: RunLog, ckpt) -> None:
  """Steps start+1 .. s.steps: train, log one step behind, evaluate, checkpoint."""
  timers = log.timers

  evals = [0]

  def run_eval(step):
    t = time.perf_counter()
    losses = prog.evaluate(state.params)
    if evals[0]:
      timers.eval += time.perf_counter() - t
    else:  # The first evaluation of a process compiles the eval step.
      timers.compile += time.perf_counter() - t
    evals[0] += 1
    log.validation(step, losses)

  if start == 0:
    run_eval(0)
  pending = None
  profiler = metrics_lib.Profiler(  # Traces go to the run's (or ensemble's) tb/ folder.
      os.path.join(os.path.dirname(s.ckpt_dir), workdir_lib.TENSORBOARD))
  t_run = time.perf_counter()
  for step in range(start + 1, s.steps + 1):
    profiler.at(step)
    t = time.perf_counter()
    batch = prog.batch(step - 1)
    timers.data += time.perf_counter() - t
    t = time.perf_counter()
    state, metrics = prog.step(state, batch)
    if pending is not None:
      log.train(pending[0], prog.member_metrics(pending[1]))
    if step == start + 1:
      jax.block_until_ready(metrics)
      timers.compile += time.perf_counter() - t
    else:
      timers.step += time.perf_counter() - t
    pending = (step, metrics)
    is_eval = step % s.eval_every == 0 or step == s.steps
    is_ckpt = step % s.phase.checkpoint_every == 0 or step == s.steps
    if is_eval or is_ckpt:
      t = time.perf_counter()
      jax.block_until_ready(metrics)  # This step's compute belongs to the step timer.
      timers.step += time.perf_counter() - t
      log.train(step, prog.member_metrics(metrics))
      pending = None
      log.wallclock += time.perf_counter() - t_run
      t_run = time.perf_counter()
    if is_eval:
      run_eval(step)
    if is_ckpt:
      t = time.perf_counter()
      if not prog.stacked and not bool(_all_finite(state.params)):  # Never save a broken state.
        raise train.NonFiniteLossError(
            f"parameters became non-finite at step {step}; last good checkpoint kept in {s.ckpt_dir}")
      ckpt.save(step, state, {"step": step, "wallclock": log.wallclock,
                              "seeds": [sp.data_seed for sp in s.specs],
                              "alive": [bool(a) for a in prog.alive]})
      timers.ckpt += time.perf_counter() - t
  log.wallclock += time.perf_counter() - t_run
  profiler.stop()


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jax.tree.reduce(lambda a, x: a & jax.numpy.isfinite(x).all(), tree, True)


_all_finite = distributed.synced(_all_finite, "all_finite")  # A collective: see `synced`.
