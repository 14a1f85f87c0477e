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

from mixlaw import optim, sharding
from mixlaw.model import ModelConfig, Transformer
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


def loss_terms(params, batch, cfg: ModelConfig, num_sources: int):
  """(mean loss over real tokens, (loss_sum_per_source [S], tokens_per_source [S]))."""
  model = nnx.merge(graphdef(cfg), params)
  logits_BxLxV = model(batch['inputs'], batch['segment_ids'], batch['positions'])
  logz_BxL = jax.nn.logsumexp(logits_BxLxV, axis=-1)
  # A one-hot contraction instead of take_along_axis: its gradient fuses (no scatter on CPU).
  onehot_BxLxV = jax.nn.one_hot(batch['targets'], logits_BxLxV.shape[-1], dtype=jnp.float32)
  target_BxL = jnp.sum(logits_BxLxV * onehot_BxLxV, axis=-1)
  weights_BxL = batch['weights'].astype(jnp.float32)
  loss_BxL = (logz_BxL - target_BxL) * weights_BxL
  onehot_BxS = jax.nn.one_hot(batch['source'], num_sources, dtype=jnp.float32)
  loss_sum_S = loss_BxL.sum(axis=1) @ onehot_BxS
  tokens_S = weights_BxL.sum(axis=1) @ onehot_BxS
  loss = loss_BxL.sum() / jnp.maximum(weights_BxL.sum(), 1.0)
  return loss, (loss_sum_S, tokens_S)


def _batch_shardings(mesh):
  return {k: sharding.batch_sharding(mesh, 1 if k == 'source' else 2) for k in BATCH_KEYS}


def _select(batch):
  missing = [k for k in BATCH_KEYS if k not in batch]
  if missing:
    raise KeyError(f'batch lacks keys {missing} (see docs/contracts.md)')
  return {k: batch[k] for k in BATCH_KEYS}


def step_fn(cfg: ModelConfig, optimizer, mesh, num_sources: int = 2):
  """The pure (state, batch) -> (state, metrics) update of one run (jit or vmap it)."""
  def step(state, batch):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      grad_fn = jax.value_and_grad(loss_terms, has_aux=True)
      (loss, (loss_sum_S, tokens_S)), grads = grad_fn(state.params, batch, cfg, num_sources)
      updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
    metrics = {'loss': loss, 'loss_per_source': loss_sum_S / jnp.maximum(tokens_S, 1.0),
               'tokens_per_source': tokens_S, 'grad_norm': optax.tree.norm(grads),
               'lr': jnp.asarray(optim.current_lr(opt_state), jnp.float32)}
    return TrainState(params, opt_state, state.step + 1), metrics

  return step


def make_train_step(cfg: ModelConfig, optimizer, mesh, num_sources: int = 2):
  """Jitted (state, batch) -> (state, metrics); the state is donated.

  metrics: loss (mean over all real tokens), loss_per_source [S] (0 where the source has no
  tokens in the batch), tokens_per_source [S], grad_norm (before clipping), lr (of this update).
  Rows whose source is outside [0, S) count in `loss` only.
  """
  state_sh = state_shardings(cfg, optimizer, mesh)
  jitted = jax.jit(step_fn(cfg, optimizer, mesh, num_sources),
                   in_shardings=(state_sh, _batch_shardings(mesh)),
                   out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=(0,))
  train_step = lambda state, batch: jitted(state, _select(batch))
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
  eval_step = lambda params, batch: jitted(params, _select(batch))
  eval_step.jitted = jitted
  return eval_step
