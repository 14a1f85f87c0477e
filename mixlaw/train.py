"""Train state, sharded init, jitted train/eval steps with per-source losses, NaN guard.

Functional core: the nnx model is split once into a graphdef and a pure dict of parameters; the
steps are pure jitted functions that `nnx.merge` inside. Batches follow docs/contracts.md.
"""
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mixlaw import distributed, optim, sharding
from mixlaw.model import ModelConfig, ModelError, Transformer, dense
from mixlaw.errors import MixlawError

BATCH_KEYS = ('inputs', 'targets', 'segment_ids', 'positions', 'weights', 'source')


class TrainState(NamedTuple):
  params: Any  # pure dict of arrays, nested like the nnx module
  opt_state: Any
  step: jax.Array  # int32 scalar: number of updates applied

  def replace(self, **fields) -> 'TrainState':
    return self._replace(**fields)


class NonFiniteLossError(MixlawError, RuntimeError):
  """The loss became NaN or Inf."""


def check_finite(metrics: dict, step: int) -> None:
  """Raise NonFiniteLossError (with the step) if the loss or grad norm is not finite."""
  for key in ('loss', 'grad_norm'):
    if key in metrics and not np.all(np.isfinite(np.asarray(metrics[key]))):
      raise NonFiniteLossError(f'non-finite {key} ({np.asarray(metrics[key])}) at step {step}; '
                               'the run stops here, keeping the last good checkpoint')


@functools.lru_cache(maxsize=None)
def _structure(cfg: ModelConfig):
  """(graphdef, logical names dict, abstract params dict), traced once per config."""
  static = {}

  def build():
    graph, state = nnx.split(Transformer(cfg, nnx.Rngs(0)), nnx.Param)
    names = jax.tree.map(lambda v: v.replace(tuple(v.get_metadata()['out_sharding'])), state,
                         is_leaf=lambda x: isinstance(x, nnx.Variable))
    static['graph'], static['names'] = graph, nnx.to_pure_dict(names)
    return nnx.to_pure_dict(state)

  abstract = jax.eval_shape(build)
  return static['graph'], static['names'], abstract


def graphdef(cfg: ModelConfig):
  """The module structure (no arrays), to merge with a params dict."""
  return _structure(cfg)[0]


def param_names(cfg: ModelConfig):
  """Pure dict (like params) of logical axis-name tuples."""
  return _structure(cfg)[1]


def init_params(cfg: ModelConfig, seed: int | jax.Array):
  """Unsharded params dict (call under jit for sharded init)."""
  rngs = nnx.Rngs(params=jax.random.key(seed))
  return nnx.to_pure_dict(nnx.state(Transformer(cfg, rngs), nnx.Param))


def _names_by_path(cfg):
  flat = jax.tree_util.tree_flatten_with_path(param_names(cfg),
                                              is_leaf=lambda x: isinstance(x, tuple))[0]
  return {tuple(k.key for k in path): names for path, names in flat}


def _opt_leaf_names(path, leaf, by_path):
  """Logical names of an optimizer-state leaf that mirrors a parameter (else replicated)."""
  keys = []
  for entry in reversed(path):
    if not isinstance(entry, jax.tree_util.DictKey):
      break
    keys.insert(0, entry.key)
  names = by_path.get(tuple(keys))
  if names is not None and len(names) == np.ndim(leaf):
    return names
  return (None,) * np.ndim(leaf)


def state_shardings(cfg: ModelConfig, optimizer, mesh) -> TrainState:
  """NamedShardings for every leaf of the TrainState."""
  abstract = jax.eval_shape(lambda: _init_state(cfg, optimizer, 0))
  by_path = _names_by_path(cfg)
  names = jax.tree_util.tree_map_with_path(lambda p, x: _opt_leaf_names(p, x, by_path),
                                           abstract.opt_state)
  return TrainState(
      params=sharding.tree_shardings(abstract.params, param_names(cfg), mesh),
      opt_state=sharding.tree_shardings(abstract.opt_state, names, mesh),
      step=sharding.replicated(mesh))


def param_shardings(cfg: ModelConfig, mesh):
  return sharding.tree_shardings(_structure(cfg)[2], param_names(cfg), mesh)


def abstract_state(cfg: ModelConfig, optimizer, mesh) -> TrainState:
  """ShapeDtypeStructs with shardings: a restore template that allocates nothing."""
  abstract = jax.eval_shape(lambda: _init_state(cfg, optimizer, 0))
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, state_shardings(cfg, optimizer, mesh))


def _init_state(cfg, optimizer, seed):
  params = init_params(cfg, seed)
  return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


@functools.lru_cache(maxsize=16)
def _jitted_init(cfg, optimizer, mesh):
  return jax.jit(lambda s: _init_state(cfg, optimizer, s),
                 out_shardings=state_shardings(cfg, optimizer, mesh))


def init_state(cfg: ModelConfig, optimizer, mesh, seed: int = 0) -> TrainState:
  """Fresh state, initialised under jit directly into its shardings."""
  with jax.set_mesh(mesh):
    return _jitted_init(cfg, optimizer, mesh)(jnp.asarray(seed, jnp.uint32))


def state_from_params(params, optimizer, mesh, cfg: ModelConfig) -> TrainState:
  """A fresh optimizer state and step 0 around given params (CPT from a base checkpoint)."""
  sh = state_shardings(cfg, optimizer, mesh)
  make = jax.jit(lambda p: TrainState(p, optimizer.init(p), jnp.zeros((), jnp.int32)),
                 in_shardings=(sh.params,), out_shardings=sh)
  with jax.set_mesh(mesh):
    return make(params)


def chunked_nll(x_BxLxD, head_DxV, targets_BxL, chunk: int):
  """Per-token cross-entropy [B, L] from integer targets, `chunk` positions at a time: no
  one-hot, and only one chunk's logits [B, chunk, V] exist at once (recomputed for the
  backward pass)."""
  b, length, d = x_BxLxD.shape
  if length % chunk:
    raise ModelError(f'ModelConfig.loss_chunk = {chunk} must divide the sequence length {length}')
  n = length // chunk
  x_NxBxCxD = x_BxLxD.reshape(b, n, chunk, d).swapaxes(0, 1)
  t_NxBxC = targets_BxL.reshape(b, n, chunk).swapaxes(0, 1)
  w_DxV = head_DxV.astype(x_BxLxD.dtype)

  @functools.partial(jax.checkpoint, prevent_cse=False)
  def nll(x_BxCxD, t_BxC):
    logits_BxCxV = dense('bcd,dv->bcv', x_BxCxD, w_DxV).astype(jnp.float32)
    logits_BxCxV = sharding.constrain(logits_BxCxV, ('batch', 'length', 'vocab'))
    target_BxC = jnp.take_along_axis(logits_BxCxV, t_BxC[..., None], axis=-1)[..., 0]
    return jax.nn.logsumexp(logits_BxCxV, axis=-1) - target_BxC

  nll_NxBxC = jax.lax.scan(lambda c, xt: (c, nll(*xt)), None, (x_NxBxCxD, t_NxBxC))[1]
  return nll_NxBxC.swapaxes(0, 1).reshape(b, length)


def token_nll(params, batch, cfg: ModelConfig):
  """Per-token cross-entropy [B, L] (float32, unweighted)."""
  model = nnx.merge(graphdef(cfg), params)
  if cfg.loss_chunk:
    x_BxLxD = model.features(batch['inputs'], batch['segment_ids'], batch['positions'])
    return chunked_nll(x_BxLxD, model.head[...], batch['targets'], cfg.loss_chunk)
  logits_BxLxV = model(batch['inputs'], batch['segment_ids'], batch['positions'])
  logz_BxL = jax.nn.logsumexp(logits_BxLxV, axis=-1)
  # A one-hot contraction instead of take_along_axis: its gradient fuses (no scatter on CPU).
  onehot_BxLxV = jax.nn.one_hot(batch['targets'], logits_BxLxV.shape[-1], dtype=jnp.float32)
  return logz_BxL - jnp.sum(logits_BxLxV * onehot_BxLxV, axis=-1)


def loss_sums(params, batch, cfg: ModelConfig, num_sources: int):
  """(summed loss over real tokens, (loss_sum_per_source [S], tokens_per_source [S], tokens))."""
  weights_BxL = batch['weights'].astype(jnp.float32)
  loss_BxL = token_nll(params, batch, cfg) * weights_BxL
  onehot_BxS = jax.nn.one_hot(batch['source'], num_sources, dtype=jnp.float32)
  loss_sum_S = loss_BxL.sum(axis=1) @ onehot_BxS
  tokens_S = weights_BxL.sum(axis=1) @ onehot_BxS
  return loss_BxL.sum(), (loss_sum_S, tokens_S, weights_BxL.sum())


def loss_terms(params, batch, cfg: ModelConfig, num_sources: int):
  """(mean loss over real tokens, (loss_sum_per_source [S], tokens_per_source [S]))."""
  total, (loss_sum_S, tokens_S, tokens) = loss_sums(params, batch, cfg, num_sources)
  return total / jnp.maximum(tokens, 1.0), (loss_sum_S, tokens_S)


def _split_microbatches(batch, m: int):
  """[B, ...] -> [M, B/M, ...]; microbatch j holds rows j, M + j, 2M + j, ... (so each device's
  contiguous block of rows feeds every microbatch)."""
  def split(x):
    if x.shape[0] % m:
      raise ValueError(f'batch of {x.shape[0]} rows does not split into {m} microbatches')
    x = x.reshape((x.shape[0] // m, m) + x.shape[1:]).swapaxes(0, 1)
    return sharding.constrain(x, (None, 'batch') + (None,) * (x.ndim - 2))
  return {k: split(v) for k, v in batch.items()}


def accumulated_grads(params, batch, cfg: ModelConfig, num_sources: int, microbatches: int):
  """loss_terms and its gradient over `microbatches` slices of the batch, one after another
  (memory of one slice): the sums are accumulated in float32, so it equals the full batch's."""
  grad_fn = jax.value_and_grad(loss_sums, has_aux=True)

  def body(acc, mb):
    out = grad_fn(params, mb, cfg, num_sources)
    return jax.tree.map(jnp.add, acc, out), None

  zero, zeros_S = jnp.zeros((), jnp.float32), jnp.zeros((num_sources,), jnp.float32)
  zeros = ((zero, (zeros_S, zeros_S, zero)),
           jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params))
  (total, (loss_sum_S, tokens_S, tokens)), grads = jax.lax.scan(
      body, zeros, _split_microbatches(batch, microbatches))[0]
  n = jnp.maximum(tokens, 1.0)
  grads = jax.tree.map(lambda g, p: (g / n).astype(p.dtype), grads, params)
  return (total / n, (loss_sum_S, tokens_S)), grads


def _batch_shardings(mesh):
  return {k: sharding.batch_sharding(mesh, 1 if k == 'source' else 2) for k in BATCH_KEYS}


def _select(batch):
  missing = [k for k in BATCH_KEYS if k not in batch]
  if missing:
    raise KeyError(f'batch lacks keys {missing} (see docs/contracts.md)')
  return {k: batch[k] for k in BATCH_KEYS}


def step_fn(cfg: ModelConfig, optimizer, mesh, num_sources: int = 2, microbatches: int = 1):
  """The pure (state, batch) -> (state, metrics) update of one run (jit or vmap it); with
  microbatches > 1 the gradient is accumulated over that many slices of the batch."""
  def step(state, batch):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      if microbatches > 1:
        (loss, (loss_sum_S, tokens_S)), grads = accumulated_grads(
            state.params, batch, cfg, num_sources, microbatches)
      else:
        grad_fn = jax.value_and_grad(loss_terms, has_aux=True)
        (loss, (loss_sum_S, tokens_S)), grads = grad_fn(state.params, batch, cfg, num_sources)
      updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
    metrics = {'loss': loss, 'loss_per_source': loss_sum_S / jnp.maximum(tokens_S, 1.0),
               'tokens_per_source': tokens_S, 'grad_norm': optax.tree.norm(grads),
               'lr': jnp.asarray(optim.current_lr(opt_state), jnp.float32)}
    return TrainState(params, opt_state, state.step + 1), metrics

  return step


def make_train_step(cfg: ModelConfig, optimizer, mesh, num_sources: int = 2,
                    microbatches: int = 1):
  """Jitted (state, batch) -> (state, metrics); the state is donated.

  metrics: loss (mean over all real tokens), loss_per_source [S] (0 where the source has no
  tokens in the batch), tokens_per_source [S], grad_norm (before clipping), lr (of this update).
  Rows whose source is outside [0, S) count in `loss` only.
  """
  state_sh = state_shardings(cfg, optimizer, mesh)
  jitted = jax.jit(step_fn(cfg, optimizer, mesh, num_sources, microbatches),
                   in_shardings=(state_sh, _batch_shardings(mesh)),
                   out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=(0,))
  run = distributed.synced(jitted, 'train')
  train_step = lambda state, batch: run(state, _select(batch))
  train_step.jitted = jitted  # for .lower() / cost analysis
  return train_step


def eval_fn(cfg: ModelConfig, mesh, num_sources: int = 2):
  """The pure (params, batch) -> {'loss_sum_per_source': [S], 'tokens_per_source': [S]}."""
  def step(params, batch):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      _, (loss_sum_S, tokens_S) = loss_terms(params, batch, cfg, num_sources)
    return {'loss_sum_per_source': loss_sum_S, 'tokens_per_source': tokens_S}

  return step


def make_eval_step(cfg: ModelConfig, mesh, num_sources: int = 2):
  """Jitted (params, batch) -> {'loss_sum_per_source': [S], 'tokens_per_source': [S]}."""
  jitted = jax.jit(eval_fn(cfg, mesh, num_sources),
                   in_shardings=(param_shardings(cfg, mesh), _batch_shardings(mesh)),
                   out_shardings=sharding.replicated(mesh))
  run = distributed.synced(jitted, 'eval')
  eval_step = lambda params, batch: run(params, _select(batch))
  eval_step.jitted = jitted
  return eval_step
