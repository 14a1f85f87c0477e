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


def process_rows(mesh, n_rows: int, axis: int = 0, ndim: int = 1) -> slice:
  """The rows [start, stop) of a global batch of n_rows (sharded like `batch_sharding` on
  `axis`) that this process's devices hold; all of them with one process."""
  spec = [None] * ndim
  spec[axis] = ('data', 'fsdp')
  shape = [1] * ndim
  shape[axis] = n_rows
  held = NamedSharding(mesh, P(*spec)).addressable_devices_indices_map(tuple(shape)).values()
  ranges = sorted({(r[axis].start or 0, n_rows if r[axis].stop is None else r[axis].stop)
                   for r in held})
  for (_, stop), (start, _) in zip(ranges, ranges[1:]):
    if stop != start:
      raise MeshError(f'the rows this process holds are not contiguous: {ranges}')
  return slice(ranges[0][0], ranges[-1][1])


def shard_batch(batch_np: dict, mesh, global_rows: int | None = None) -> dict:
  """Host numpy batch -> global jax.Arrays sharded over rows.

  batch_np holds this process's rows (`process_rows(mesh, global_rows)`) of a global batch of
  `global_rows` rows; with one process (or global_rows None: every process the same number of
  rows) that is inferred.
  """
  out = {}
  for k, v in batch_np.items():
    v = np.asarray(v)
    shape = None if global_rows is None else (global_rows,) + v.shape[1:]
    out[k] = jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v, shape)
  return out


def local_rows(batch_np: dict, mesh) -> dict:
  """This process's rows of a global host batch (every process holds the whole batch)."""
  rows = process_rows(mesh, len(next(iter(batch_np.values()))))
  return {k: np.asarray(v)[rows] for k, v in batch_np.items()}


def maybe_initialize_distributed(enabled: bool, **kwargs) -> None:
  """jax.distributed.initialize(**kwargs) when enabled (multi-host); idempotent."""
  if not enabled:
    return
  if jax.distributed.is_initialized():
    return
  jax.distributed.initialize(**kwargs)
