"""Mesh, logical axis rules, batch sharding, and the same training on 1, 8 and 4x2 devices."""
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mixlaw import model, optim, sharding, train

CFG = model.ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, vocab_size=50)
B, L = 8, 16


def make_batch(seed, rows=B, length=L, vocab=CFG.vocab_size):
  """Contract batch: two packed segments per row, a padded tail, alternating sources."""
  rng = np.random.default_rng(seed)
  targets = rng.integers(3, vocab, (rows, length)).astype(np.int32)
  cut, end = length // 3, length - 3
  seg = np.zeros((rows, length), np.int32)
  seg[:, :cut], seg[:, cut:end] = 1, 2
  pos = np.zeros((rows, length), np.int32)
  pos[:, :cut], pos[:, cut:end] = np.arange(cut), np.arange(end - cut)
  targets[seg == 0] = 0
  inputs = np.where(pos == 0, 0, np.roll(targets, 1, axis=1)).astype(np.int32)
  inputs[seg == 0] = 0
  return dict(inputs=inputs, targets=targets, segment_ids=seg, positions=pos,
              weights=(seg > 0).astype(np.float32), source=(np.arange(rows) % 2).astype(np.int32))


def test_make_mesh_shapes_and_errors():
  assert jax.device_count() == 8, 'conftest should give 8 host devices'
  assert dict(sharding.make_mesh().shape) == {'data': 8, 'fsdp': 1, 'tensor': 1}
  assert dict(sharding.make_mesh(-1, 2, 2).shape) == {'data': 2, 'fsdp': 2, 'tensor': 2}
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  assert mesh.devices.size == 1
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  with pytest.raises(ValueError, match='devices'):
    sharding.make_mesh(3, 1, 1)
  with pytest.raises(ValueError, match='-1'):
    sharding.make_mesh(-1, -1, 1)


def test_logical_to_spec_rules():
  mesh = sharding.make_mesh(2, 2, 2)
  assert sharding.logical_to_spec(('embed', 'mlp'), (32, 64), mesh) == P('fsdp', 'tensor')
  # A mesh axis is used once per array: batch takes fsdp, so embed is replicated.
  assert sharding.logical_to_spec(('batch', 'length', 'embed'), (8, 16, 32), mesh) == \
      P(('data', 'fsdp'), None, None)
  # Axes that do not divide the dimension are dropped.
  assert sharding.logical_to_spec(('vocab', 'embed'), (51, 32), mesh) == P(None, 'fsdp')
  assert sharding.logical_to_spec(('batch',), (2,), mesh) == P('data')


def test_shard_batch_places_rows():
  mesh = sharding.make_mesh(4, 1, 2)
  batch = make_batch(0)
  out = sharding.shard_batch(batch, mesh)
  for k, v in batch.items():
    np.testing.assert_array_equal(np.asarray(out[k]), v)
    assert out[k].sharding.spec[0] == ('data', 'fsdp')
  assert len(out['inputs'].sharding.device_set) == 8


def test_maybe_initialize_distributed_off_is_noop():
  sharding.maybe_initialize_distributed(False)
  assert jax.process_count() == 1


def _train(mesh, steps=3):
  tx, _ = optim.make_optimizer(1e-2, 10, 2)
  state = train.init_state(CFG, tx, mesh, seed=0)
  step = train.make_train_step(CFG, tx, mesh)
  losses = []
  for i in range(steps):
    state, metrics = step(state, sharding.shard_batch(make_batch(i), mesh))
    losses.append(np.asarray(metrics['loss_per_source']))
  return np.array(losses), jax.tree.map(np.asarray, state.params), state


def test_same_training_on_1_8_and_4x2_devices():
  runs = {
      '1x1': sharding.make_mesh(devices=jax.devices()[:1]),
      '8x1': sharding.make_mesh(8, 1, 1),
      '4x2': sharding.make_mesh(4, 1, 2),
      '2x2x2': sharding.make_mesh(2, 2, 2),
  }
  results = {name: _train(mesh) for name, mesh in runs.items()}
  ref_losses, ref_params, _ = results['1x1']
  assert ref_losses[-1].mean() < ref_losses[0].mean()  # it trains
  for name, (losses, params, state) in results.items():
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-5, err_msg=name)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)
  # On 4x2 the weights are really split over 'tensor', on 2x2x2 also over 'fsdp'.
  wgu = results['4x2'][2].params['blocks'][0]['mlp']['w_gate_up']
  assert wgu.sharding.spec == P(None, None, 'tensor')
  assert wgu.addressable_shards[0].data.shape == (32, 2, 32)
  wgu = results['2x2x2'][2].params['blocks'][0]['mlp']['w_gate_up']
  assert wgu.sharding.spec == P('fsdp', None, 'tensor')
  mu = results['2x2x2'][2].opt_state[1].mu['blocks'][0]['mlp']['w_gate_up']
  assert mu.sharding.spec == P('fsdp', None, 'tensor')
