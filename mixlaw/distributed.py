"""Multi-process JAX (one controller per host): start-up, who writes, barriers.

`initialize` must run before any JAX or orbax call that starts the backend (the CLI calls it
first, for every training command). It is on when gin binds `MeshConfig.distributed = True` or
the environment names a coordinator: `JAX_COORDINATOR_ADDRESS` with `JAX_NUM_PROCESSES` and
`JAX_PROCESS_ID` (or a cluster JAX detects by itself: TPU pods, Slurm, Open MPI). Every process
then runs the same program on its own slice of each global batch; only process 0 writes workdir
files (`is_lead`); orbax writes checkpoints from every process (each its own shards).
"""

from __future__ import annotations

import itertools
import os

import jax

from mixlaw.errors import MixlawError

ENV_ADDRESS = 'JAX_COORDINATOR_ADDRESS'
ENV_PROCESSES, ENV_ID = 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'


class DistributedError(MixlawError, RuntimeError):
  """Multi-process JAX cannot start (bad settings, or JAX already started)."""


def settings(enabled: bool, environ=None) -> dict | None:
  """jax.distributed.initialize kwargs, or None when this is a single-process run."""
  environ = os.environ if environ is None else environ
  address = environ.get(ENV_ADDRESS)
  if not enabled and not address:
    return None
  kwargs = {}
  if address:
    kwargs['coordinator_address'] = address
  for key, name in ((ENV_PROCESSES, 'num_processes'), (ENV_ID, 'process_id')):
    if environ.get(key):
      try:
        kwargs[name] = int(environ[key])
      except ValueError:
        raise DistributedError(f'{key} must be an integer, got {environ[key]!r}') from None
  return kwargs


def initialize(enabled: bool = False, environ=None) -> bool:
  """Starts multi-process JAX if configured (idempotent); returns whether it is on.

  enabled: `MeshConfig.distributed` (the environment's coordinator variables also turn it on).
  """
  if jax.distributed.is_initialized():
    return True
  kwargs = settings(enabled, environ)
  if kwargs is None:
    return False
  try:
    jax.distributed.initialize(**kwargs)
  except RuntimeError as e:
    raise DistributedError(f'jax.distributed.initialize failed ({e}); it must run before any '
                           'JAX call: the mixlaw CLI calls it first, a library user calls '
                           'mixlaw.distributed.initialize() first') from None
  return True


def is_lead() -> bool:
  """Whether this process writes the workdir's files (process 0)."""
  return jax.process_index() == 0


BARRIER_TIMEOUT_MS = 6 * 3600 * 1000  # Compiling a big step on a loaded host takes long.
_BARRIERS = itertools.count()  # Every process passes the same barriers in the same order.


def barrier(name: str) -> None:
  """Every process waits here for the others (no-op with one process). The coordinator's
  barrier, not a device collective: it waits as long as compilation may take."""
  if jax.process_count() > 1:
    from jax._src import distributed as jax_distributed
    jax_distributed.global_state.client.wait_at_barrier(f'{name}-{next(_BARRIERS)}',
                                                        BARRIER_TIMEOUT_MS)


def synced(jitted, name: str):
  """`jitted` compiled ahead of its first call per input structure, and run only once every
  process has compiled it. A collective's first use must find all processes within 30 s (gloo
  on CPU), and one process may compile for minutes longer than another. With one process it
  calls jitted (decided at the call: wrapping starts no backend)."""
  compiled = {}

  def call(*args):
    if jax.process_count() == 1:
      return jitted(*args)
    key = str(jax.tree.map(lambda x: (jax.typeof(x), getattr(x, 'sharding', None)), args))
    if key not in compiled:
      compiled[key] = jitted.lower(*args).compile()
      barrier(f'mixlaw-compiled-{name}')
    return compiled[key](*args)

  return call
