"""`mixlaw memory`: per size, parameters, FLOPs per token and the compiled train step's memory.

The step is lowered and compiled ahead of time from abstract shapes (`jit(...).lower(...)
.compile()`): nothing is allocated, so a size far larger than the host's memory can be planned
on a laptop. The figures are XLA's buffer assignment for this host's backend (on a CPU host, the
CPU compiler's; an accelerator's differs somewhat) for the gin's mesh, batch and microbatches.
"""

from __future__ import annotations

import time

import gin
import jax
import jax.numpy as jnp

from mixlaw import arrays, config, metrics, optim, sharding, train
from mixlaw import model as model_lib
from mixlaw.errors import MixlawError

GIB = 2 ** 30


class MemoryPlanError(MixlawError, ValueError):
  """A size whose memory cannot be planned (e.g. no vocabulary)."""


def sizes() -> list[str]:
  """The gin's sizes: plan.sizes, else single.size."""
  for name in ('plan.sizes', 'single.size'):
    try:
      value = gin.query_parameter(name)
    except ValueError:
      continue
    return list(value) if isinstance(value, (list, tuple)) else [value]
  raise MemoryPlanError('no sizes in the gin: bind plan.sizes or single.size')


def model_config(size: str, data: config.DataConfig) -> model_lib.ModelConfig:
  """The size's config (gin overrides applied); its vocabulary, or the exported data's."""
  vocab = model_lib.SIZES[size].vocab_size if size in model_lib.SIZES else 0
  if not vocab:
    vocab = int(arrays.read_meta(data.arrays_path()).get('vocab_size', 0))
  if not vocab:
    raise MemoryPlanError(f'size {size!r} has no vocabulary and no arrays were exported at '
                          f'{data.arrays_path()}: bind get_config.vocab_size')
  return model_lib.get_config(size, vocab_size=vocab)


def mesh_from_gin():
  m = config.MeshConfig()
  devices = jax.devices()[:m.num_devices] if m.num_devices else None
  return sharding.make_mesh(m.data, m.fsdp, m.tensor, devices)


def step_memory(cfg, phase: config.PhaseConfig, seq_len: int, mesh) -> dict:
  """Per-device bytes of the compiled train step (AOT; allocates nothing) and compile seconds."""
  with gin.config_scope('pretrain'):
    tx, _ = optim.make_optimizer(peak_lr=1e-4, total_steps=100, warmup_steps=1)
  state = train.abstract_state(cfg, tx, mesh)
  batch = {k: jax.ShapeDtypeStruct((phase.batch_size,) if k == 'source' else
                                   (phase.batch_size, seq_len),
                                   jnp.float32 if k == 'weights' else jnp.int32,
                                   sharding=sharding.batch_sharding(mesh, 1 if k == 'source' else 2))
           for k in train.BATCH_KEYS}
  step = train.make_train_step(cfg, tx, mesh, microbatches=phase.microbatches)
  t = time.perf_counter()
  with jax.set_mesh(mesh):
    compiled = step.jitted.lower(state, batch).compile()
  seconds = time.perf_counter() - t
  ma = compiled.memory_analysis()
  args, out = ma.argument_size_in_bytes, ma.output_size_in_bytes
  temp, alias = ma.temp_size_in_bytes, ma.alias_size_in_bytes
  return {'state': args, 'temp': temp, 'peak': args + out + temp - alias,
          'compile_s': seconds}


def rows() -> list[dict]:
  """One row per size of the gin: its plan on the gin's mesh (pretrain batch)."""
  data, phase = config.DataConfig(), config.phase_config('base')
  mesh = mesh_from_gin()
  out = []
  for size in sizes():
    cfg = model_config(size, data)
    counts = model_lib.count_params(cfg)
    mem = step_memory(cfg, phase, data.seq_len, mesh)
    out.append({'size': size, 'params': counts['total'], 'nonemb': counts['non_embedding'],
                'flops_per_token': metrics.flops_per_token(cfg, data.seq_len),
                'mesh': dict(mesh.shape), 'batch': phase.batch_size,
                'microbatches': phase.microbatches, 'seq_len': data.seq_len,
                'dtype': cfg.dtype, 'remat': cfg.remat, 'scan_layers': cfg.scan_layers,
                'loss_chunk': cfg.loss_chunk, **mem})
  return out


def format_rows(rs: list[dict]) -> str:
  head = ('| size | params | GFLOP/token | mesh (data, fsdp, tensor) | batch x seq / micro | '
          'dtype, remat, scan, loss_chunk | state GiB/dev | temp GiB/dev | peak GiB/dev | '
          'compile s |')
  lines = [head, '|' + '---|' * head.count(' | ') + '---|']
  for r in rs:
    mesh = 'x'.join(str(v) for v in r['mesh'].values())
    lines.append(
        f"| {r['size']} | {r['params'] / 1e6:.1f}M | {r['flops_per_token'] / 1e9:.3g} | {mesh} | "
        f"{r['batch']} x {r['seq_len']} / {r['microbatches']} | {r['dtype']}, {r['remat']}, "
        f"{r['scan_layers']}, {r['loss_chunk']} | {r['state'] / GIB:.2f} | "
        f"{r['temp'] / GIB:.2f} | {r['peak'] / GIB:.2f} | {r['compile_s']:.0f} |")
  return '\n'.join(lines)


def main(gin_files: list[str], gin_bindings: list[str]) -> str:
  from mixlaw import ginsetup
  ginsetup.setup(gin_files, gin_bindings)
  return format_rows(rows())
