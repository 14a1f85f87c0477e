"""Device mesh (data, fsdp, tensor), logical axis rules, shardings for state and batches.

Parameters and activations are named with logical axes ('batch', 'embed', 'mlp', ...);
`LOGICAL_RULES` maps each to mesh axes. A mesh axis is used at most once per array, and an axis
that does not divide the dimension is dropped (the dimension is then replicated over it), so
every size runs on every mesh shape.
"""
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from mixlaw.errors import MixlawError

MESH_AXES = ('data', 'fsdp', 'tensor')


class MeshError(MixlawError, ValueError):
  """A mesh shape that the devices do not fit (e.g. a gin binding of MeshConfig)."""

# logical axis -> mesh axes, in priority order within one array.
LOGICAL_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ('batch', ('data', 'fsdp')),
    ('length', ()),
    ('vocab', ('tensor',)),
    ('embed', ('fsdp',)),
    ('heads', ('tensor',)),
    ('kv', ()),
    ('mlp', ('tensor',)),
    ('norm', ()),
)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh with Auto axis types; -1 takes the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  shape = [data, fsdp, tensor]
  if shape.count(-1) > 1:
    raise MeshError(f'at most one mesh axis may be -1, got {dict(zip(MESH_AXES, shape))}')
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if known <= 0 or len(devices) % known:
      raise MeshError(f'{len(devices)} devices do not split into mesh '
                      f'{dict(zip(MESH_AXES, shape))}')
    shape[shape.index(-1)] = len(devices) // known
  if any(s <= 0 for s in shape) or int(np.prod(shape)) != len(devices):
    raise MeshError(f'mesh {dict(zip(MESH_AXES, shape))} needs {int(np.prod(shape))} devices, '
                    f'got {len(devices)}')
  return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * 3,
                       devices=devices)


def logical_to_spec(names, shape, mesh, rules=LOGICAL_RULES) -> P:
  """PartitionSpec for an array of `shape` whose axes have logical `names`."""
  rules, used, spec = dict(rules), set(), []
  for name, dim in zip(names, shape):
    axes = []
    size = 1
    for axis in rules.get(name, ()) if name is not None else ():
      n = mesh.shape.get(axis, 1)
      if axis in used or n == 1 or dim % (size * n):
        continue
      axes.append(axis)
      size *= n
    used.update(axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
  return P(*spec)


def constrain(x, names):
  """with_sharding_constraint by logical names under the current mesh; no-op without one."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(names, x.shape, mesh))


def tree_shardings(abstract_tree, names_tree, mesh):
  """NamedShardings for a tree of arrays given a matching tree of logical-name tuples."""
  return jax.tree.map(lambda a, n: NamedSharding(mesh, logical_to_spec(n, a.shape, mesh)),
                      abstract_tree, names_tree)


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh, ndim: int) -> NamedSharding:
  """Rows over ('data', 'fsdp'); other dims replicated."""
  return NamedSharding(mesh, P(('data', 'fsdp'), *([None] * (ndim - 1))))


def batch_shardings(batch: dict, mesh) -> dict:
  return {k: batch_sharding(mesh, np.ndim(v)) for k, v in batch.items()}


def shard_batch(batch_np: dict, mesh) -> dict:
  """Host numpy batch -> global jax.Arrays sharded over rows.

  Each process passes its own rows (its slice of the global batch); with one process that is
  the whole batch. The global batch has process_count times as many rows.
  """
  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v)),
                                                    np.asarray(v))
          for k, v in batch_np.items()}


def maybe_initialize_distributed(enabled: bool, **kwargs) -> None:
  """jax.distributed.initialize(**kwargs) when enabled (multi-host); idempotent."""
  if not enabled:
    return
  if jax.distributed.is_initialized():
    return
  jax.distributed.initialize(**kwargs)
