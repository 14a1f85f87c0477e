"""Train/eval steps: per-source losses, padding, optimizer mask and schedules, NaN guard."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from mixlaw import model, optim, sharding, train
from test_sharding import CFG, make_batch


@pytest.fixture(scope='module')
def mesh():
  return sharding.make_mesh(devices=jax.devices()[:1])


@pytest.fixture(scope='module')
def setup(mesh):
  tx, schedule = optim.make_optimizer(1e-2, 20, 3, schedule='cosine')
  state = train.init_state(CFG, tx, mesh, seed=0)
  return tx, schedule, state, train.make_train_step(CFG, tx, mesh, num_sources=3), \
      train.make_eval_step(CFG, mesh, num_sources=3)


def _manual_losses(params, batch):
  """Token CE per row (sum) and tokens per row, computed with numpy on the model's logits."""
  forward = jax.jit(lambda p, i, s, q: nnx.merge(train.graphdef(CFG), p)(i, s, q))
  logits = np.asarray(forward(params, batch['inputs'], batch['segment_ids'], batch['positions']),
                      np.float64)
  logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  ce = logz - np.take_along_axis(logits, batch['targets'][..., None], -1)[..., 0]
  return (ce * batch['weights']).sum(1), batch['weights'].sum(1)


def test_eval_and_train_per_source_losses_match_separate_computation(setup):
  tx, schedule, state, train_step, eval_step = setup
  batch = make_batch(7)
  batch['source'] = np.array([0, 1, 0, 0, 1, 0, 1, 0], np.int32)  # no rows of source 2
  params = jax.tree.map(np.asarray, state.params)
  row_loss, row_tokens = _manual_losses(params, batch)
  out = eval_step(state.params, batch)
  for s in range(3):
    rows = batch['source'] == s
    np.testing.assert_allclose(out['loss_sum_per_source'][s], row_loss[rows].sum(), rtol=1e-5)
    np.testing.assert_allclose(out['tokens_per_source'][s], row_tokens[rows].sum())
  new_state, metrics = train_step(jax.tree.map(jnp.copy, state), batch)  # keep the fixture
  assert int(new_state.step) == 1
  expected = [row_loss[batch['source'] == s].sum() / row_tokens[batch['source'] == s].sum()
              for s in (0, 1)]
  np.testing.assert_allclose(metrics['loss_per_source'][:2], expected, rtol=1e-5)
  assert metrics['loss_per_source'][2] == 0 and metrics['tokens_per_source'][2] == 0
  np.testing.assert_allclose(metrics['loss'], row_loss.sum() / row_tokens.sum(), rtol=1e-5)
  np.testing.assert_allclose(metrics['lr'], schedule(0), rtol=1e-6)
  assert np.isfinite(metrics['grad_norm']) and metrics['grad_norm'] > 0


def test_padding_targets_do_not_count(setup):
  _, _, state, _, eval_step = setup
  batch = make_batch(3)
  changed = dict(batch, targets=np.where(batch['weights'] > 0, batch['targets'], 17))
  a, b = eval_step(state.params, batch), eval_step(state.params, changed)
  np.testing.assert_allclose(a['loss_sum_per_source'], b['loss_sum_per_source'], rtol=1e-6)
  assert float(a['tokens_per_source'].sum()) == batch['weights'].sum()


def test_training_lowers_loss_and_reports_lr(setup, mesh):
  tx, schedule, state, train_step, _ = setup
  state = jax.tree.map(jnp.copy, state)
  batch = sharding.shard_batch(make_batch(0), mesh)
  losses, lrs = [], []
  for _ in range(10):
    state, metrics = train_step(state, batch)
    losses.append(float(metrics['loss']))
    lrs.append(float(metrics['lr']))
  assert int(state.step) == 10
  assert losses[-1] < losses[0] - 0.5
  np.testing.assert_allclose(lrs, [float(schedule(i)) for i in range(10)], rtol=1e-6)
  assert lrs[2] == lrs[3] == pytest.approx(1e-2, rel=1e-6)  # warmup reaches the peak
  assert lrs[0] < lrs[1] < lrs[2] and lrs[3] > lrs[4] > lrs[9]


def test_init_is_seeded(setup, mesh):
  tx = setup[0]
  a = train.init_state(CFG, tx, mesh, seed=0).params['embed']
  b = train.init_state(CFG, tx, mesh, seed=0).params['embed']
  c = train.init_state(CFG, tx, mesh, seed=1).params['embed']
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_decay_mask():
  params = jax.eval_shape(lambda: train.init_params(CFG, 0))
  mask = optim.decay_mask(params)
  assert mask['embed'] is False and mask['final_norm']['scale'] is False
  assert mask['head'] is True
  block = mask['blocks'][0]
  assert block['attn']['wqkv'] and block['attn']['wo'] and block['mlp']['w_down']
  assert block['attn_norm']['scale'] is False and block['mlp_norm']['scale'] is False


def test_weight_decay_applies_only_where_masked():
  params = jax.jit(train.init_params, static_argnums=0)(CFG, 0)
  tx, _ = optim.make_optimizer(0.1, 10, 0, schedule='constant', weight_decay=0.5)

  @jax.jit
  def update(params):
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    return optax.apply_updates(params, updates)
  new = update(params)
  np.testing.assert_array_equal(new['embed'], params['embed'])
  np.testing.assert_array_equal(new['final_norm']['scale'], params['final_norm']['scale'])
  np.testing.assert_allclose(new['head'], params['head'] * (1 - 0.1 * 0.5), rtol=1e-6)
  w = params['blocks'][1]['mlp']['w_down']
  np.testing.assert_allclose(new['blocks'][1]['mlp']['w_down'], w * 0.95, rtol=1e-6)


def test_schedules():
  cos = optim.make_schedule(1.0, 100, 10, 'cosine', min_lr_ratio=0.1)
  lr = np.array([float(cos(i)) for i in range(101)])
  assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0) and lr.max() == 1.0
  assert np.all(np.diff(lr[:10]) > 0) and np.all(np.diff(lr[10:]) < 0)
  assert lr[100] == pytest.approx(0.1) and float(cos(1000)) == pytest.approx(0.1)
  assert lr[55] == pytest.approx(0.55, abs=1e-6)  # cosine midpoint
  const = optim.make_schedule(3e-5, 100, 10, 'constant')
  lr = np.array([float(const(i)) for i in range(150)])
  assert np.all(np.diff(lr[:10]) > 0)
  np.testing.assert_allclose(lr[9:], 3e-5, rtol=1e-6)
  assert float(optim.make_schedule(1.0, 5, 0, 'cosine')(0)) == 1.0  # no warmup


@pytest.mark.parametrize('kwargs,match', [
    (dict(total_steps=0), 'total_steps'), (dict(warmup_steps=-1), 'warmup_steps'),
    (dict(warmup_steps=11), 'warmup_steps'), (dict(schedule='linear'), 'schedule'),
    (dict(peak_lr=0.0), 'peak_lr'), (dict(min_lr_ratio=2.0), 'min_lr_ratio'),
    (dict(weight_decay=-1.0), 'weight_decay'), (dict(clip_norm=0.0), 'clip_norm')])
def test_optimizer_argument_errors(kwargs, match):
  args = {**dict(peak_lr=1e-3, total_steps=10, warmup_steps=2), **kwargs}
  with pytest.raises(ValueError, match=match):
    optim.make_optimizer(**args)


def test_nan_is_detected(setup, mesh):
  tx, _, state, train_step, _ = setup
  bad = state.replace(params=jax.tree.map(lambda x: x * jnp.nan, state.params))
  bad = jax.device_put(bad, train.state_shardings(CFG, tx, mesh))
  _, metrics = train_step(bad, make_batch(0))
  assert not np.isfinite(metrics['loss'])
  with pytest.raises(train.NonFiniteLossError, match='step 41'):
    train.check_finite(metrics, 41)
  train.check_finite({'loss': np.float32(1.0), 'grad_norm': np.float32(2.0)}, 1)
  with pytest.raises(train.NonFiniteLossError, match='grad_norm'):
    train.check_finite({'loss': np.float32(1.0), 'grad_norm': np.float32(np.inf)}, 2)


def test_batch_missing_key_is_clear(setup):
  _, _, state, _, eval_step = setup
  batch = make_batch(0)
  del batch['source']
  with pytest.raises(KeyError, match='source'):
    eval_step(state.params, batch)
