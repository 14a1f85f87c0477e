"""Checkpoints: roundtrip, other mesh, keep-last-k, CPT from base params, errors, NaN guard."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixlaw import checkpoint, optim, sharding, train
from test_sharding import CFG, make_batch


@pytest.fixture(scope='module')
def trained():
  """A state after 2 steps on a 4x2 mesh (so opt_state is non-trivial)."""
  mesh = sharding.make_mesh(4, 1, 2)
  tx, _ = optim.make_optimizer(1e-2, 20, 2)
  step = train.make_train_step(CFG, tx, mesh)
  state = train.init_state(CFG, tx, mesh, seed=0)
  for i in range(2):
    state, _ = step(state, make_batch(i))
  return tx, mesh, state, step


def _assert_same(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b) and len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_roundtrip_async_with_donation_and_other_mesh(trained, tmp_path):
  tx, mesh, state, step = trained
  state = jax.tree.map(jnp.copy, state)  # the fixture's buffers stay alive
  saved = jax.tree.map(np.asarray, state)
  ckpt = checkpoint.Checkpointer(tmp_path / 'ckpt', async_save=True)
  ckpt.save(2, state, {'step': 2, 'seed': 7, 'note': 'x'})
  state, _ = step(state, make_batch(5))  # donates the saved buffers while the save may run
  ckpt.wait()
  assert ckpt.latest_step() == 2 and checkpoint.latest_step_in(tmp_path / 'ckpt') == 2
  # Same mesh, template = live state.
  restored, position = ckpt.restore(state)
  assert position == {'step': 2, 'seed': 7, 'note': 'x'}
  _assert_same(restored, saved)
  assert int(restored.step) == 2
  # Other mesh (2x2x2: fsdp and tensor), template = abstract state, nothing allocated.
  other = sharding.make_mesh(2, 2, 2)
  restored, _ = ckpt.restore(train.abstract_state(CFG, tx, other))
  _assert_same(restored, saved)
  wgu = restored.params['blocks'][0]['mlp']['w_gate_up']
  assert wgu.sharding.mesh.shape == other.shape and wgu.sharding.spec[0] == 'fsdp'
  # ... and one device.
  single = sharding.make_mesh(devices=jax.devices()[:1])
  restored, _ = ckpt.restore(train.abstract_state(CFG, tx, single))
  _assert_same(restored, saved)
  ckpt.close()


def test_keep_last_k_and_interval(trained, tmp_path):
  _, _, state, _ = trained
  ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=2, save_interval_steps=2)
  saved = [ckpt.save(s, state, {'step': s}) for s in range(7)]
  ckpt.wait()
  assert saved == [True, False, True, False, True, False, True]
  assert ckpt.all_steps() == [4, 6]
  _, position = ckpt.restore(state, step=4)
  assert position == {'step': 4}
  with pytest.raises(checkpoint.CheckpointError, match='step 2'):
    ckpt.restore(state, step=2)
  ckpt.close()


def test_cpt_from_base_params_with_fresh_optimizer(trained, tmp_path):
  tx, mesh, state, _ = trained
  base = tmp_path / 'base'
  with checkpoint.Checkpointer(base) as ckpt:
    ckpt.save(int(state.step), state, {'step': int(state.step)})
  cpt_tx, cpt_schedule = optim.make_optimizer(3e-5, 10, 2, schedule='constant')
  other = sharding.make_mesh(8, 1, 1)
  template = train.abstract_state(CFG, cpt_tx, other)
  params = checkpoint.restore_params(base, template.params)
  _assert_same(params, state.params)
  fresh = train.state_from_params(params, cpt_tx, other, CFG)
  assert int(fresh.step) == 0
  adam = fresh.opt_state[1]
  assert int(adam.count) == 0
  assert all(float(jnp.abs(m).max()) == 0 for m in jax.tree.leaves(adam.mu))
  assert float(optim.current_lr(fresh.opt_state)) == pytest.approx(float(cpt_schedule(0)))
  step = train.make_train_step(CFG, cpt_tx, other)
  fresh, metrics = step(fresh, make_batch(0))
  assert np.isfinite(metrics['loss']) and float(metrics['lr']) == pytest.approx(1.5e-5)


def test_missing_checkpoint_errors_name_the_path(trained, tmp_path):
  _, _, state, _ = trained
  empty = tmp_path / 'empty'
  ckpt = checkpoint.Checkpointer(empty)
  with pytest.raises(checkpoint.CheckpointError, match=str(empty)):
    ckpt.restore(state)
  ckpt.close()
  missing = tmp_path / 'nowhere'
  with pytest.raises(checkpoint.CheckpointError, match=str(missing)):
    checkpoint.restore_params(missing, state.params)
  assert not missing.exists()
  assert checkpoint.latest_step_in(missing) is None


@pytest.mark.parametrize('victim', ['array_data', 'metadata'])
def test_corrupt_checkpoint_error_names_the_path(trained, tmp_path, victim):
  _, _, state, _ = trained
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(3, state, {'step': 3})
  files = [os.path.join(d, f) for d, _, names in os.walk(tmp_path / '3' / 'state') for f in names]
  if victim == 'array_data':  # every data file of the array store (OCDBT 'd/' directories)
    paths = [f for f in files if os.path.basename(os.path.dirname(f)) == 'd']
  else:
    paths = [str(tmp_path / '3' / 'state' / '_METADATA')]
  assert paths
  for path in paths:
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
  ckpt = checkpoint.Checkpointer(tmp_path)
  with pytest.raises(checkpoint.CheckpointError, match=str(tmp_path / '3')):
    ckpt.restore(state)
  with pytest.raises(checkpoint.CheckpointError, match=str(tmp_path / '3')):
    checkpoint.restore_params(tmp_path, state.params)
  ckpt.close()


def test_nan_stops_before_saving_and_keeps_last_good(trained, tmp_path):
  """The run-loop contract: check_finite before save, so the NaN state is never saved."""
  tx, mesh, state, step = trained
  state = jax.tree.map(jnp.copy, state)
  ckpt = checkpoint.Checkpointer(tmp_path)
  good = jax.tree.map(np.asarray, state.params)
  ckpt.save(10, state, {'step': 10})
  bad_batch = make_batch(1)
  with pytest.raises(train.NonFiniteLossError, match='step 11'):
    state = state.replace(params=jax.tree.map(lambda x: x + jnp.nan, state.params))
    state, metrics = step(state, bad_batch)
    train.check_finite(metrics, 11)
    ckpt.save(11, state, {'step': 11})
  ckpt.wait()
  assert ckpt.all_steps() == [10]
  restored, _ = ckpt.restore(train.abstract_state(CFG, tx, mesh))
  _assert_same(restored.params, good)
  ckpt.close()
