"""K CPT members of one size in one compiled program: stacked state, steps mapped over members.

CPT runs of one size share the base checkpoint and every shape, so their parameters and optimizer
states stack along a leading member axis K and one jitted step trains them all. Each member gets
its own batch (its R and data-order seed): batches are [K, B, L], rows split over the mesh's data
axes inside every member. A member whose loss or gradient turns non-finite keeps its last good
state (it is frozen in the step) and the host stops logging it; the others go on.

How the program runs its members (`member_loop`): `lax.map` of the single-run step (one member
after another inside the program, every op at its single-run shape: on CPU, where the step is
compute-bound, this keeps the single-run speed and saves the per-run overhead) or `jax.vmap` of
it (all members batched into wider ops: for accelerators, where tiny models are dispatch-bound).
"""
import functools
import os

import gin
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from mixlaw import distributed, sharding, train
from mixlaw.errors import MixlawError
from mixlaw.model import ModelConfig

MEMORY_FRACTION = 0.5  # Of host RAM (CPU) or device memory that one chunk of members may use.


def _stack_sharding(s: NamedSharding) -> NamedSharding:
  return NamedSharding(s.mesh, P(None, *s.spec))


def state_shardings(cfg: ModelConfig, optimizer, mesh) -> train.TrainState:
  """Single-run shardings with an unsharded leading member axis."""
  return jax.tree.map(_stack_sharding, train.state_shardings(cfg, optimizer, mesh))


def abstract_state(cfg: ModelConfig, optimizer, mesh, k: int) -> train.TrainState:
  """Stacked ShapeDtypeStructs with shardings (a restore template)."""
  one = jax.eval_shape(lambda: train._init_state(cfg, optimizer, 0))
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct((k,) + a.shape, a.dtype, sharding=s),
                      one, state_shardings(cfg, optimizer, mesh))


def state_from_params(params, optimizer, mesh, cfg: ModelConfig, k: int) -> train.TrainState:
  """K copies of the (base) params, each with a fresh optimizer state and step 0."""
  sh = state_shardings(cfg, optimizer, mesh)

  def make(p):
    p_K = jax.tree.map(lambda x: jnp.broadcast_to(x, (k,) + x.shape), p)
    return train.TrainState(p_K, jax.vmap(optimizer.init)(p_K), jnp.zeros((k,), jnp.int32))

  with jax.set_mesh(mesh):
    return jax.jit(make, in_shardings=(train.param_shardings(cfg, mesh),), out_shardings=sh)(params)


def _batch_shardings(mesh):
  """[K, B, ...] batches: rows (axis 1) over the data axes."""
  return {k: NamedSharding(mesh, P(None, ('data', 'fsdp'), *([None] * (0 if k == 'source' else 1))))
          for k in train.BATCH_KEYS}


def shard_batch(batch_K: dict, mesh, global_rows: int | None = None) -> dict:
  """Host [K, b, ...] numpy batch -> global [K, B, ...] arrays. batch_K holds this process's
  rows (`sharding.process_rows(mesh, B)`) of every member's batch of B = global_rows rows
  (None: every process holds b rows)."""
  sh = _batch_shardings(mesh)
  out = {}
  for k in train.BATCH_KEYS:
    v = np.asarray(batch_K[k])
    shape = None if global_rows is None else (v.shape[0], global_rows) + v.shape[2:]
    out[k] = jax.make_array_from_process_local_data(sh[k], v, shape)
  return out


def stack_batches(batches: list[dict]) -> dict:
  return {k: np.stack([b[k] for b in batches]) for k in train.BATCH_KEYS}


class MemberLoopError(MixlawError, ValueError):
  """An unknown `member_loop.loop`."""


@gin.configurable
def member_loop(loop: str = 'auto') -> str:
  """How a stacked step runs its members: 'map' (`lax.map`, one member after another inside the
  program), 'vmap' (batched over members), or 'auto': 'map' on CPU, 'vmap' on accelerators.

  Measured on 2 CPU cores (docs/trainer.md): 'vmap' ran 8 members of cpu_s at 0.85x the
  throughput of 8 single runs and 4 members of cpu_m at 0.75x; 'map' at 1.15x and 1.00x.
  """
  if loop not in ('auto', 'map', 'vmap'):
    raise MemberLoopError(f"member_loop.loop must be 'auto', 'map' or 'vmap', got {loop!r}")
  if loop == 'auto':
    return 'map' if jax.devices()[0].platform == 'cpu' else 'vmap'
  return loop


def _over_members(fn, loop: str):
  """fn mapped over the leading member axis of every argument."""
  if loop == 'vmap':
    return jax.vmap(fn)
  return lambda *args: jax.lax.map(lambda a: fn(*a), args)


def make_train_step(cfg: ModelConfig, optimizer, mesh, num_sources: int = 2,
                    loop: str | None = None, microbatches: int = 1):
  """Jitted (state_K, batch_K, alive_K) -> (state_K, metrics_K); the state is donated.

  Per member exactly the single-run step (`train.step_fn`), run as `loop` (default:
  `member_loop()`). A member that is not alive, or whose update is non-finite, keeps its
  previous state; metrics_K['ok'] says which updates applied.
  """
  members = _over_members(train.step_fn(cfg, optimizer, mesh, num_sources, microbatches),
                         loop or member_loop())

  def step(state, batch, alive):
    new, metrics = members(state, batch)
    ok = alive & jnp.isfinite(metrics['loss']) & jnp.isfinite(metrics['grad_norm'])
    keep = lambda n, o: jnp.where(ok.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)
    return jax.tree.map(keep, new, state), dict(metrics, ok=ok)

  sh = state_shardings(cfg, optimizer, mesh)
  rep = sharding.replicated(mesh)
  return distributed.synced(jax.jit(step, in_shardings=(sh, _batch_shardings(mesh), rep),
                                   out_shardings=(sh, rep), donate_argnums=(0,)), 'train')


def make_eval_step(cfg: ModelConfig, mesh, num_sources: int = 2, loop: str | None = None):
  """Jitted (params_K, batch) -> per member {'loss_sum_per_source': [K, S], 'tokens_per_source'}.

  One validation batch, shared by every member; members run as `loop` (see `member_loop`)."""
  one = train.eval_fn(cfg, mesh, num_sources)
  if (loop or member_loop()) == 'vmap':
    step = jax.vmap(one, in_axes=(0, None))
  else:
    step = lambda params, batch: jax.lax.map(lambda p: one(p, batch), params)
  params_sh = jax.tree.map(_stack_sharding, train.param_shardings(cfg, mesh))
  return distributed.synced(jax.jit(step, in_shardings=(params_sh, train._batch_shardings(mesh)),
                                   out_shardings=sharding.replicated(mesh)), 'eval')


def member_bytes(cfg: ModelConfig, batch_size: int, seq_len: int) -> tuple[int, int]:
  """Rough float32 bytes of one member in the step: (state: params and two Adam moments, in and
  out of the step, and grads; activations kept for the backward pass, no remat)."""
  from mixlaw import model as model_lib
  n = model_lib.count_params(cfg)['total']
  tokens = batch_size * seq_len
  per_layer = tokens * (16 * cfg.d_model + 3 * cfg.d_ff) + batch_size * cfg.n_heads * seq_len * min(
      seq_len, max(cfg.attn_chunk, 1)) * 2
  acts = cfg.n_layers * per_layer + 3 * tokens * cfg.vocab_size
  return 4 * 7 * n, 4 * acts


@functools.lru_cache(maxsize=1)
def _memory_budget() -> int:
  dev = jax.devices()[0]
  stats = dev.memory_stats() if dev.platform != 'cpu' else None
  if stats and stats.get('bytes_limit'):
    total = int(stats['bytes_limit']) * jax.local_device_count()
  else:
    total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  return int(MEMORY_FRACTION * total)


def max_members(cfg: ModelConfig, batch_size: int, seq_len: int, limit: int = 0,
                loop: str | None = None) -> int:
  """How many members fit in one compiled program (memory budget; `limit` > 0 caps it). Every
  member's state is resident; activations are one member's under 'map', every member's under
  'vmap'."""
  state, acts = member_bytes(cfg, batch_size, seq_len)
  if (loop or member_loop()) == 'vmap':
    k = _memory_budget() // max(state + acts, 1)
  else:
    k = (_memory_budget() - acts) // max(state, 1)
  k = max(1, k)
  return min(k, limit) if limit > 0 else k
