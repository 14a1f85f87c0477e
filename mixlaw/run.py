"""One training run (base pretraining or CPT at a ratio R): data, state, loop, evals, results.

A run lives in WORKDIR/runs/RUN_ID/ (checkpoints/, tb/, config.gin, run.json) and appends its
rows to WORKDIR/results.jsonl. Killed at any point and started again, it resumes from its last
checkpoint (params, optimizer, step; the data position is the step: batch = f(seed, step)) and
rewrites the rows after it. TensorFlow is never imported here: training reads exported token
arrays (`mixlaw.arrays`); only when they are missing does it ask the data side to export them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import time
from typing import Any

import gin
import jax
import numpy as np

from mixlaw import arrays
from mixlaw import checkpoint
from mixlaw import model as model_lib
from mixlaw import optim
from mixlaw import results
from mixlaw import sharding
from mixlaw import train

GENERAL, DOMAIN = 0, 1


class RunError(ValueError):
  """A run cannot start: bad configuration or missing inputs (nothing was computed)."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which corpora, tokenizer and sequence length; where the data lives."""
  data_dir: str = "data"
  general: str = "general"
  domain: str = "finance"
  seq_len: int = 256
  vocab_name: str = "spm8k"
  max_validation_rows: int = 64  # Per corpus: the fixed held-out set every run evaluates.
  arrays_dir: str | None = None  # Exported arrays to train from (TF-free host); default: derived.


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PhaseConfig:
  """Length and cadence of one phase; bound under the gin scopes `pretrain/` and `cpt/`.

  steps: number of optimizer updates; if 0, derived from tokens_per_param (tokens per
  non-embedding parameter, the Chinchilla-style budget), clipped to [min_steps, max_steps].
  """
  steps: int = 0
  tokens_per_param: float = 0.0
  min_steps: int = 1
  max_steps: int = 1_000_000
  batch_size: int = 16
  warmup_frac: float = 0.05  # Linear warmup over this share of the steps (>= 1 step).
  eval_every: int = 0  # 0: steps // 50 (>= 50 validation points per run), at least 1.
  checkpoint_every: int = 100
  keep_checkpoints: int = 2

  def num_steps(self, n_nonemb: int, seq_len: int) -> int:
    if self.steps > 0:
      return self.steps
    if self.tokens_per_param <= 0:
      raise RunError("PhaseConfig needs steps > 0 or tokens_per_param > 0")
    n = math.ceil(self.tokens_per_param * n_nonemb / (self.batch_size * seq_len))
    return int(min(max(n, self.min_steps), self.max_steps))

  def warmup_steps(self, steps: int) -> int:
    return max(1, round(self.warmup_frac * steps))

  def eval_interval(self, steps: int) -> int:
    return self.eval_every if self.eval_every > 0 else max(1, steps // 50)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Device mesh shape (-1: all remaining devices) and multi-host initialisation."""
  data: int = -1
  fsdp: int = 1
  tensor: int = 1
  num_devices: int = 0  # 0: every device; n: the first n (e.g. one host device per core).
  distributed: bool = False


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """What distinguishes one run of a sweep."""
  size: str
  phase: str  # 'base' or 'cpt'
  ratio: float = 0.0
  seed: int = 0

  @property
  def run_id(self) -> str:
    if self.phase == "base":
      return f"base_{self.size}"
    return f"cpt_{self.size}_r{self.ratio:.4f}"

  def validate(self) -> None:
    try:
      model_lib.get_config(self.size, vocab_size=1)  # Shape only; the data sets the vocab.
    except ValueError as e:  # Unknown size: the message lists the known ones.
      raise RunError(str(e)) from None
    if self.phase not in ("base", "cpt"):
      raise RunError(f"phase must be 'base' or 'cpt', got {self.phase!r}")
    if not (isinstance(self.ratio, (int, float)) and 0.0 <= self.ratio <= 1.0):
      raise RunError(f"ratio R must be a domain token share in [0, 1], got {self.ratio!r}")
    if self.phase == "base" and self.ratio != 0.0:
      raise RunError("base pretraining uses general data only (ratio 0)")


@gin.configurable
def single(size: str = gin.REQUIRED, phase: str = "base", ratio: float = 0.0, seed: int = 0,
           base_checkpoint: str | None = None) -> tuple[RunSpec, str | None]:
  """The run `mixlaw train` executes (bind single.size, single.phase, ... in gin)."""
  spec = RunSpec(size, phase, float(ratio), seed)
  spec.validate()
  return spec, base_checkpoint


def scope_of(phase: str) -> str:
  return "pretrain" if phase == "base" else "cpt"


def run_dir(workdir: str, spec: RunSpec) -> str:
  return os.path.join(workdir, "runs", spec.run_id)


def read_status(workdir: str, spec: RunSpec) -> dict:
  """{'state': 'pending' | 'partial' | 'done', 'step': last checkpointed step, ...}."""
  path = os.path.join(run_dir(workdir, spec), "run.json")
  if os.path.exists(path):
    with open(path) as f:
      info = json.load(f)
    if info.get("state") == "done":
      return info
  ckpt_dir = os.path.join(run_dir(workdir, spec), "checkpoints")
  step = checkpoint.latest_step_in(ckpt_dir) if os.path.isdir(ckpt_dir) else None
  if step is None:
    return {"state": "pending", "step": 0}
  return {"state": "partial", "step": step}


def resolve_arrays(data: DataConfig, corpora: list[str]) -> str:
  """The exported arrays dir holding `corpora`; exports them (data side, TensorFlow) if absent."""
  d = data.arrays_dir or os.path.join(data.data_dir, "arrays", f"{data.vocab_name}_L{data.seq_len}")
  if os.path.exists(os.path.join(d, "meta.json")):
    have = arrays.read_meta(d).get("corpora", {})
    if all(c in have for c in corpora):
      return d
  if data.arrays_dir:
    raise RunError(f"exported arrays at {d} lack corpora {corpora}; run `mixlaw data export`")
  from mixlaw import data as data_lib  # TensorFlow side, only when arrays must be made.

  return data_lib.prepare_arrays(
      corpora, data_dir=data.data_dir, seq_len=data.seq_len, vocab_name=data.vocab_name,
      max_validation_rows=data.max_validation_rows)


def enable_compilation_cache() -> None:
  """Persistent XLA cache: runs with the same shapes and schedule (a sweep's CPT runs of one
  size, a resumed run) reuse compiled steps across processes. MIXLAW_XLA_CACHE=0 disables."""
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
  }


def _write_json(path: str, obj: Any) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, default=str)
  os.replace(tmp, path)


@dataclasses.dataclass
class _Timers:
  data: float = 0.0
  compile: float = 0.0  # The first step of this process (tracing + XLA compilation).
  step: float = 0.0
  eval: float = 0.0
  ckpt: float = 0.0


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jax.tree.reduce(lambda a, x: a & jax.numpy.isfinite(x).all(), tree, True)


def _evaluate(eval_step, params, val_batches, mesh) -> list[float]:
  """Held-out loss per source (NaN where a source has no validation data)."""
  losses = []
  for batches in val_batches:
    if not batches:
      losses.append(float("nan"))
      continue
    tot = np.zeros(2)
    for b in batches:
      out = eval_step(params, sharding.shard_batch(b, mesh))
      tot += np.stack([np.asarray(out["loss_sum_per_source"]), np.asarray(out["tokens_per_source"])])[:, :2].sum(1)
    losses.append(float(tot[0] / tot[1]))
  return losses


def execute(spec: RunSpec, workdir: str, *, base_checkpoint: str | None = None,
            progress=None) -> dict:
  """Runs (or resumes, or skips if done) one run; returns its summary (run.json content)."""
  spec.validate()
  status = read_status(workdir, spec)
  if status["state"] == "done":
    return status
  data = DataConfig()
  with gin.config_scope(scope_of(spec.phase)):
    phase = PhaseConfig()
  mesh_cfg = MeshConfig()
  rdir = run_dir(workdir, spec)
  if spec.phase == "cpt":
    base_checkpoint = base_checkpoint or os.path.join(
        run_dir(workdir, RunSpec(spec.size, "base", 0.0, spec.seed)), "checkpoints")
    if checkpoint.latest_step_in(base_checkpoint) is None:
      raise RunError(f"CPT run {spec.run_id} needs the base checkpoint of size {spec.size}, "
                     f"none found at {base_checkpoint} (run the base pretraining first)")

  corpora = [data.general] + ([data.domain] if data.domain else [])
  arrays_dir = resolve_arrays(data, corpora)
  meta = arrays.read_meta(arrays_dir)
  if int(meta["seq_len"]) != data.seq_len:
    raise RunError(f"arrays at {arrays_dir} have seq_len {meta['seq_len']}, config says {data.seq_len}")
  cfg = model_lib.get_config(spec.size, vocab_size=int(meta["vocab_size"]))
  counts = model_lib.count_params(cfg)
  steps = phase.num_steps(counts["non_embedding"], data.seq_len)
  eval_every = phase.eval_interval(steps)

  general_train = arrays.load_packed(arrays_dir, data.general, "train")
  domain_train = arrays.load_packed(arrays_dir, data.domain, "train") if data.domain else None
  if spec.ratio > 0 and domain_train is None:
    raise RunError(f"ratio {spec.ratio} > 0 needs a domain corpus (DataConfig.domain)")
  sampler = arrays.MixtureSampler(general_train, domain_train if spec.ratio > 0 else None,
                                  spec.ratio, phase.batch_size, spec.seed)
  val_batches = []
  for src, corpus in ((GENERAL, data.general), (DOMAIN, data.domain)):
    if corpus:
      rows = arrays.load_packed(arrays_dir, corpus, "validation")
      val_batches.append(arrays.validation_batches(rows, phase.batch_size, src)[:max(
          1, -(-data.max_validation_rows // phase.batch_size))])
    else:
      val_batches.append([])

  enable_compilation_cache()
  sharding.maybe_initialize_distributed(mesh_cfg.distributed)
  devices = jax.devices()[:mesh_cfg.num_devices] if mesh_cfg.num_devices else None
  mesh = sharding.make_mesh(mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor, devices)
  with gin.config_scope(scope_of(spec.phase)):
    optimizer, schedule = optim.make_optimizer(
        total_steps=steps, warmup_steps=phase.warmup_steps(steps))
  ckpt = checkpoint.Checkpointer(os.path.join(rdir, "checkpoints"),
                                 max_to_keep=phase.keep_checkpoints)
  start, wallclock = 0, 0.0
  if ckpt.latest_step() is not None:  # Resume: params, optimizer, step and data position.
    state, position = ckpt.restore(train.abstract_state(cfg, optimizer, mesh))
    start, wallclock = int(position["step"]), float(position.get("wallclock", 0.0))
    results.truncate_run(workdir, spec.run_id, start)
  else:
    results.truncate_run(workdir, spec.run_id, -1)
    if spec.phase == "cpt":  # Base params, fresh optimizer and schedule.
      abstract = train.abstract_state(cfg, optimizer, mesh).params
      params = checkpoint.restore_params(base_checkpoint, abstract)
      state = train.state_from_params(params, optimizer, mesh, cfg)
    else:
      state = train.init_state(cfg, optimizer, mesh, spec.seed)
  train_step = train.make_train_step(cfg, optimizer, mesh)
  eval_step = train.make_eval_step(cfg, mesh)

  os.makedirs(rdir, exist_ok=True)
  with open(os.path.join(rdir, "config.gin"), "w") as f:
    f.write(gin.operative_config_str())
  info = {
      "run_id": spec.run_id, "state": "running", "spec": dataclasses.asdict(spec),
      "steps": steps, "eval_every": eval_every, "batch_size": phase.batch_size,
      "seq_len": data.seq_len, "arrays_dir": arrays_dir, "data": dataclasses.asdict(data),
      "vocab_size": cfg.vocab_size,
      "model": dataclasses.asdict(cfg), "n_params": counts["total"],
      "n_params_nonemb": counts["non_embedding"], "base_checkpoint": base_checkpoint,
      "mesh": dict(mesh.shape), "versions": versions(), "resumed_from": start,
  }
  _write_json(os.path.join(rdir, "run.json"), info)

  from tensorboardX import SummaryWriter  # No TensorFlow needed.
  tb = SummaryWriter(os.path.join(rdir, "tb")) if jax.process_index() == 0 else None
  tokens_per_step = phase.batch_size * data.seq_len
  row0 = {"run_id": spec.run_id, "phase": spec.phase, "size_name": spec.size,
          "n_params": counts["total"], "n_params_nonemb": counts["non_embedding"],
          "domain": data.domain or "", "ratio": float(spec.ratio)}

  def row(step, split, gen, dom, lr):
    return dict(row0, step=step, tokens_seen=step * tokens_per_step, split=split,
                general_loss=gen, domain_loss=dom, lr=lr, wallclock=round(wallclock, 3))

  def log(rows):
    if jax.process_index() == 0:
      results.append(workdir, rows)
      for r in rows:
        for name, v in (("general", r["general_loss"]), ("domain", r["domain_loss"])):
          if math.isfinite(v):
            tb.add_scalar(f"{r['split']}/{name}_loss", v, r["step"])

  timers = _Timers()

  evals_done = [0]

  def run_eval(step):
    t = time.perf_counter()
    gen, dom = _evaluate(eval_step, state.params, val_batches, mesh)
    if evals_done[0]:
      timers.eval += time.perf_counter() - t
    else:  # The first evaluation of a process compiles the eval step.
      timers.compile += time.perf_counter() - t
    evals_done[0] += 1
    log([row(step, "validation", gen, dom, float(schedule(max(step - 1, 0))))])
    return gen, dom

  if start == 0:
    run_eval(0)
  bar = progress
  own_bar = bar is None
  if own_bar:
    from tqdm.auto import tqdm
    bar = tqdm(total=steps, initial=start, desc=spec.run_id, unit="step", dynamic_ncols=True)

  def finish_step(step, metrics):
    """Host side of update `step`: check, log (one step behind the device)."""
    m = jax.device_get(metrics)
    train.check_finite(m, step)
    per = np.asarray(m["loss_per_source"], np.float64)
    cnt = np.asarray(m["tokens_per_source"])
    gen = float(per[GENERAL]) if cnt[GENERAL] > 0 else float("nan")
    dom = float(per[DOMAIN]) if len(cnt) > 1 and cnt[DOMAIN] > 0 else float("nan")
    log([row(step, "train", gen, dom, float(m["lr"]))])
    bar.update(1)
    bar.set_postfix(loss=f"{float(m['loss']):.3f}", refresh=False)

  pending = None
  t_run = time.perf_counter()
  try:
    for step in range(start + 1, steps + 1):
      t = time.perf_counter()
      batch = sharding.shard_batch(sampler.batch(step - 1), mesh)
      timers.data += time.perf_counter() - t
      t = time.perf_counter()
      state, metrics = train_step(state, batch)
      if pending is not None:
        finish_step(*pending)
      if step == start + 1:
        jax.block_until_ready(metrics)
        timers.compile += time.perf_counter() - t
      else:
        timers.step += time.perf_counter() - t
      pending = (step, metrics)
      is_eval = step % eval_every == 0 or step == steps
      is_ckpt = step % phase.checkpoint_every == 0 or step == steps
      if is_eval or is_ckpt:
        finish_step(*pending)
        pending = None
        wallclock += time.perf_counter() - t_run
        t_run = time.perf_counter()
      if is_eval:
        run_eval(step)
      if is_ckpt:
        t = time.perf_counter()
        if not bool(_all_finite(state.params)):  # Never checkpoint a broken state.
          raise train.NonFiniteLossError(
              f"parameters became non-finite at step {step}; last good checkpoint kept in "
              f"{os.path.join(rdir, 'checkpoints')}")
        ckpt.save(step, state, {"step": step, "wallclock": wallclock, "seed": spec.seed})
        timers.ckpt += time.perf_counter() - t
  finally:
    ckpt.wait()
    ckpt.close()
    if tb is not None:
      tb.close()
    if own_bar:
      bar.close()
  wallclock += time.perf_counter() - t_run
  total = timers.data + timers.step + timers.eval + timers.ckpt  # Compilation excluded.
  info.update({
      "state": "done", "step": steps, "wallclock_s": round(wallclock, 3),
      "timing_s": {k: round(v, 3) for k, v in dataclasses.asdict(timers).items()},
      "data_fraction": timers.data / total if total else 0.0,
      "eval_fraction": timers.eval / total if total else 0.0,
      "train_tokens_per_s": (steps - start - 1) * tokens_per_step / timers.step if timers.step else 0.0,
  })
  with open(os.path.join(rdir, "config.gin"), "w") as f:
    f.write(gin.operative_config_str())
  _write_json(os.path.join(rdir, "run.json"), info)
  return info


def reset(workdir: str, spec: RunSpec) -> None:
  """Deletes a run's directory and rows (for --fresh)."""
  shutil.rmtree(run_dir(workdir, spec), ignore_errors=True)
  results.truncate_run(workdir, spec.run_id, -1)
