"""Orbax checkpoints of the TrainState plus an opaque data-position record.

Layout: <directory>/<step>/{state, data_position}. Saves are asynchronous (call `wait()` before
reading them back or exiting); the last `max_to_keep` are kept. Restores land on the shardings of
the template, so a checkpoint written on one mesh shape restores onto another.
"""
import os

import jax
import orbax.checkpoint as ocp

from mixlaw.train import TrainState
from mixlaw.errors import MixlawError


class CheckpointError(MixlawError, RuntimeError):
  """A checkpoint is missing or unreadable; the message names the path."""


def _abstract(tree):
  """ShapeDtypeStructs (keeping shardings) for arrays or ShapeDtypeStructs."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _brief(e: Exception) -> str:
  text = f'{type(e).__name__}: {e}'
  return text if len(text) < 400 else text[:400] + ' ...'


def _as_dict(state: TrainState) -> dict:
  return {'params': state.params, 'opt_state': state.opt_state, 'step': state.step}


class Checkpointer:
  """Thin wrapper over orbax.checkpoint.CheckpointManager."""

  def __init__(self, directory, max_to_keep: int = 3, save_interval_steps: int = 1,
               async_save: bool = True):
    self.directory = os.path.abspath(os.fspath(directory))
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                           save_interval_steps=save_interval_steps,
                                           enable_async_checkpointing=async_save, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=('state', 'data_position'))

  def save(self, step: int, state: TrainState, data_position: dict, force: bool = False) -> bool:
    """Start saving (async); returns whether a save happened (save_interval_steps, force)."""
    args = ocp.args.Composite(state=ocp.args.PyTreeSave(_as_dict(state)),
                              data_position=ocp.args.JsonSave(dict(data_position)))
    return self._manager.save(int(step), args=args, force=force)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def _step_dir(self, step):
    return os.path.join(self.directory, str(step))

  def _resolve(self, step):
    self.wait()
    self._manager.reload()
    if step is None:
      step = self._manager.latest_step()
      if step is None:
        raise CheckpointError(f'no checkpoint found in {self.directory}')
    elif step not in self._manager.all_steps():
      raise CheckpointError(f'no checkpoint for step {step} in {self.directory} '
                            f'(found {sorted(self._manager.all_steps())})')
    return step

  def restore(self, template: TrainState, step: int | None = None) -> tuple[TrainState, dict]:
    """(state, data_position) of `step` (default latest), on the template's shardings.

    The template is a TrainState of arrays or of sharded ShapeDtypeStructs
    (train.abstract_state), e.g. for a different mesh than the one that saved.
    """
    step = self._resolve(step)
    item = _abstract(_as_dict(template))
    args = ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item=item,
                                     restore_args=ocp.checkpoint_utils.construct_restore_args(item)),
        data_position=ocp.args.JsonRestore())
    try:
      restored = self._manager.restore(step, args=args)
    except Exception as e:  # orbax/tensorstore raise many types for unreadable data
      raise CheckpointError(f'cannot restore checkpoint {self._step_dir(step)}: {_brief(e)}') from e
    state = restored['state']
    return TrainState(state['params'], state['opt_state'], state['step']), restored['data_position']

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def latest_step_in(directory) -> int | None:
  """Latest finalized checkpoint step in `directory`, None if none (creates nothing)."""
  if not os.path.isdir(directory):
    return None
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
  with ocp.CheckpointManager(os.path.abspath(directory), options=options) as manager:
    return manager.latest_step()


def restore_params(directory, abstract_params, step: int | None = None):
  """Only the params of a (base-model) checkpoint, onto abstract_params' shardings.

  For CPT: train.state_from_params(params, optimizer, mesh, cfg) gives a fresh optimizer state
  at step 0 (or state.replace(params=...) on a freshly initialised state).
  """
  if not os.path.isdir(directory):
    raise CheckpointError(f'checkpoint directory {os.path.abspath(directory)} does not exist')
  ckpt = Checkpointer(directory, async_save=False)
  try:
    step = ckpt._resolve(step)
    item = {'params': _abstract(abstract_params)}
    restore = ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True)
    try:
      restored = ckpt._manager.restore(step, args=ocp.args.Composite(state=restore))
    except Exception as e:
      raise CheckpointError(f'cannot restore params from checkpoint {ckpt._step_dir(step)}: '
                            f'{_brief(e)}') from e
    return restored['state']['params']
  finally:
    ckpt.close()
