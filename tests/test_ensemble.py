"""Ensemble steps: both member loops (lax.map, vmap) equal K single runs; NaN members freeze."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixlaw import ensemble, optim, sharding, train
from test_sharding import CFG, make_batch

K = 3


@pytest.fixture(scope='module')
def setup():
  mesh = sharding.make_mesh()  # All 8 host devices: members' rows split over the data axis.
  tx, _ = optim.make_optimizer(1e-2, 20, 3)
  params = train.init_state(CFG, tx, mesh, seed=0).params
  batches = [[make_batch(10 * k + t) for k in range(K)] for t in range(4)]
  return mesh, tx, params, batches


def _single_runs(mesh, tx, params, batches):
  """Each member trained alone: per step, the losses [K] and grad norms [K]; final params."""
  step = train.make_train_step(CFG, tx, mesh)
  states = [train.state_from_params(params, tx, mesh, CFG) for _ in range(K)]
  losses, norms = [], []
  for step_batches in batches:
    out = [step(states[k], sharding.shard_batch(step_batches[k], mesh)) for k in range(K)]
    states = [s for s, _ in out]
    losses.append([float(m['loss']) for _, m in out])
    norms.append([float(m['grad_norm']) for _, m in out])
  return np.array(losses), np.array(norms), states


@pytest.mark.parametrize('loop', ['map', 'vmap'])
def test_members_equal_single_runs(setup, loop):
  mesh, tx, params, batches = setup
  want_loss, want_norm, want_states = _single_runs(mesh, tx, params, batches)
  step = ensemble.make_train_step(CFG, tx, mesh, loop=loop)
  state = ensemble.state_from_params(params, tx, mesh, CFG, K)
  alive = jnp.ones((K,), bool)
  for t, step_batches in enumerate(batches):
    state, metrics = step(state, ensemble.shard_batch(ensemble.stack_batches(step_batches), mesh),
                          alive)
    assert metrics['ok'].all()
    np.testing.assert_allclose(metrics['loss'], want_loss[t], rtol=1e-5)
    np.testing.assert_allclose(metrics['grad_norm'], want_norm[t], rtol=1e-4)
  for k in range(K):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[k], b, rtol=1e-4, atol=1e-6),
                 state.params, want_states[k].params)
  eval_step = ensemble.make_eval_step(CFG, mesh, loop=loop)
  single_eval = train.make_eval_step(CFG, mesh)
  val = make_batch(99)
  out = eval_step(state.params, sharding.shard_batch(val, mesh))
  for k in range(K):
    want = single_eval(want_states[k].params, sharding.shard_batch(val, mesh))
    np.testing.assert_allclose(out['loss_sum_per_source'][k], want['loss_sum_per_source'],
                               rtol=1e-4)


@pytest.mark.parametrize('loop', ['map', 'vmap'])
def test_non_finite_or_dead_member_keeps_its_state(setup, loop):
  mesh, tx, params, batches = setup
  step = ensemble.make_train_step(CFG, tx, mesh, loop=loop)
  state = ensemble.state_from_params(params, tx, mesh, CFG, K)
  state = state._replace(params=jax.tree.map(lambda x: x.at[1].set(jnp.nan), state.params))
  before = jax.tree.map(np.asarray, state.params)
  alive = jnp.array([True, True, False])
  state, metrics = step(state, ensemble.shard_batch(ensemble.stack_batches(batches[0]), mesh),
                        alive)
  assert metrics['ok'].tolist() == [True, False, False]
  after = jax.tree.map(np.asarray, state.params)
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    assert not np.array_equal(a[0], b[0])  # member 0 trained
    np.testing.assert_array_equal(a[1:], b[1:])  # NaN member and dead member unchanged
  assert state.step.tolist() == [1, 0, 0]


def test_member_loop_choice_and_memory():
  assert ensemble.member_loop() == 'map'  # 'auto' on CPU
  assert ensemble.member_loop('vmap') == 'vmap'
  with pytest.raises(ValueError, match="member_loop.loop must be"):
    ensemble.member_loop('pmap')
  # One member's activations under 'map' (K states), every member's under 'vmap'.
  big = ensemble.max_members(CFG, 256, 512, loop='map')
  assert big > ensemble.max_members(CFG, 256, 512, loop='vmap') >= 1
  assert ensemble.max_members(CFG, 256, 512, limit=5) == 5
