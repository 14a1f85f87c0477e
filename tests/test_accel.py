"""The accelerator path's settings, each equal in numerics to the plain step at a small size.

bf16 compute (float32 parameters and optimizer state), remat policies, a scan over layers, the
chunked cross-entropy from integer labels (no one-hot, no full logits) and gradient
accumulation over microbatches.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixlaw import hostenv, model, optim, sharding, train

CFG = model.ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, vocab_size=96, attn_chunk=8)
B, L = 8, 16


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  targets = rng.integers(2, CFG.vocab_size, (B, L)).astype(np.int32)
  targets[:, -3:] = 0  # padding
  targets[::2, 5] = 1  # an eos: a second segment starts after it
  from mixlaw import arrays
  out = arrays.batch_fields(targets, eos_id=1)
  out['source'] = (np.arange(B) % 2).astype(np.int32)
  return out


def _with(**kw):
  return dataclasses.replace(CFG, **kw)


def _loss_and_grads(cfg, params, batch):
  fn = lambda p: train.loss_terms(p, batch, cfg, 2)
  return jax.jit(jax.value_and_grad(fn, has_aux=True))(params)


def _assert_tree_close(a, b, rtol, atol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32), rtol=rtol,
                               atol=atol)


@pytest.fixture(scope='module')
def plain():
  params = train.init_params(CFG, 0)
  batch = _batch()
  return params, batch, _loss_and_grads(CFG, params, batch)


@pytest.mark.parametrize('kw', [dict(remat='full'), dict(remat='dots'), dict(scan_layers=True),
                                dict(scan_layers=True, remat='dots_no_batch'), dict(loss_chunk=4),
                                dict(loss_chunk=16, scan_layers=True, remat='full')])
def test_setting_gives_the_same_loss_and_gradients(plain, kw):
  params, batch, ((loss, (ls, ts)), grads) = plain
  (loss2, (ls2, ts2)), grads2 = _loss_and_grads(_with(**kw), params, batch)
  np.testing.assert_allclose(loss2, loss, rtol=1e-6)
  np.testing.assert_allclose(ls2, ls, rtol=1e-6)
  np.testing.assert_array_equal(ts2, ts)
  _assert_tree_close(grads2, grads, rtol=1e-4, atol=1e-7)


def _shapes(jaxpr):
  """Shapes of every value a jaxpr (and the jaxprs inside it: scan, remat, ...) computes."""
  for eqn in jaxpr.eqns:
    for v in eqn.outvars:
      yield tuple(getattr(v.aval, 'shape', ()))
    for p in eqn.params.values():
      for sub in p if isinstance(p, (list, tuple)) else [p]:
        sub = getattr(sub, 'jaxpr', sub)
        if hasattr(sub, 'eqns'):
          yield from _shapes(sub)


def test_chunked_loss_never_builds_full_logits_or_a_one_hot(plain):
  params, batch, _ = plain
  fn = lambda cfg: jax.make_jaxpr(jax.grad(lambda p: train.loss_terms(p, batch, cfg, 2)[0]))
  full = set(_shapes(fn(CFG)(params).jaxpr))
  chunked = set(_shapes(fn(_with(loss_chunk=4))(params).jaxpr))
  v = CFG.vocab_size
  assert (B, L, v) in full  # the plain loss: logits and one-hot [B, L, V]
  weights = {(CFG.d_model, v), (v, CFG.d_model)}  # the head and its gradient
  big = [s for s in chunked - weights if s and s[-1] == v and np.prod(s) > B * 4 * v]
  assert not big, big  # at most one chunk's [B, 4, V] at a time
  with pytest.raises(model.ModelError, match='loss_chunk'):
    _loss_and_grads(_with(loss_chunk=5), params, batch)


@pytest.mark.slow  # full train steps compiled twice
def test_bf16_compute_keeps_float32_state_and_tracks_float32_loss():
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  tx, _ = optim.make_optimizer(peak_lr=3e-3, total_steps=4, warmup_steps=1)
  losses = {}
  for dtype in ('float32', 'bfloat16'):
    cfg = _with(dtype=dtype)
    state = train.init_state(cfg, tx, mesh, seed=0)
    step = train.make_train_step(cfg, tx, mesh)
    for i in range(4):
      state, m = step(state, sharding.shard_batch(_batch(i), mesh))
    losses[dtype] = float(m['loss'])
    dtypes = {x.dtype for x in jax.tree.leaves((state.params, state.opt_state))
              if jnp.issubdtype(x.dtype, jnp.floating)}
    assert dtypes == {jnp.dtype('float32')}, dtypes
  assert losses['bfloat16'] == pytest.approx(losses['float32'], rel=2e-2)


@pytest.mark.slow  # full train steps compiled twice
@pytest.mark.parametrize('m', [2, 4])
def test_microbatches_equal_the_full_batch(m):
  mesh = sharding.make_mesh(devices=jax.devices()[:2])
  tx, _ = optim.make_optimizer(peak_lr=3e-3, total_steps=4, warmup_steps=1)
  out = []
  for microbatches in (1, m):
    state = train.init_state(CFG, tx, mesh, seed=0)
    step = train.make_train_step(CFG, tx, mesh, microbatches=microbatches)
    for i in range(2):
      state, metrics = step(state, sharding.shard_batch(_batch(i), mesh))
    out.append((jax.device_get(metrics), jax.device_get(state.params)))
  (m1, p1), (mm, pm) = out
  for key in ('loss', 'loss_per_source', 'tokens_per_source', 'grad_norm'):
    np.testing.assert_allclose(mm[key], m1[key], rtol=1e-5, err_msg=key)
  # Adam maps a gradient component near 0 to an update of up to lr (3e-3): its float rounding
  # can move that parameter by ~1e-6, so parameters are compared to 1e-5 absolute.
  _assert_tree_close(pm, p1, rtol=1e-5, atol=1e-5)


def test_fits_pinned_to_cpu():
  before = jax.config.jax_default_device
  try:
    hostenv.pin_to_cpu()
    assert jax.config.jax_default_device == jax.devices('cpu')[0]
    assert jnp.zeros(2).devices() == {jax.devices('cpu')[0]}
  finally:
    jax.config.update('jax_default_device', before)


def test_remat_setting_is_checked():
  assert _with(remat=True).remat == 'full' and _with(remat=False).remat == 'none'
  with pytest.raises(model.ModelError, match='remat'):
    _with(remat='some')
  with pytest.raises(model.ModelError, match='loss_chunk'):
    _with(loss_chunk=-1)
