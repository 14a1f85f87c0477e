"""AdamW with global-norm clipping; warmup + cosine (pretraining) or warmup + constant (CPT).

Weight decay applies to the weight matrices of the blocks and to the output projection; not to
norm scales, nor to the input embedding (a lookup table: decay would shrink rare tokens' rows).
The current learning rate lives in the optimizer state (`current_lr`), so a train step reports it.
"""
import math
import numbers

import gin
import jax
import jax.numpy as jnp
import optax

from mixlaw.errors import MixlawError

SCHEDULES = ('cosine', 'constant')


class OptimError(MixlawError, ValueError):
  """A bad optimizer or schedule setting (e.g. a gin binding of make_optimizer)."""


def _check(ok, message):
  if not ok:
    raise OptimError(message)


def _num(x) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def make_schedule(peak_lr: float, total_steps: int, warmup_steps: int, schedule: str = 'cosine',
                  min_lr_ratio: float = 0.1):
  """step -> learning rate. Linear warmup reaches peak_lr at step warmup_steps - 1; cosine then
  decays to min_lr_ratio * peak_lr at step total_steps; constant stays at peak_lr."""
  _check(schedule in SCHEDULES, f'make_optimizer.schedule must be one of {SCHEDULES}, got '
                                f'{schedule!r}')
  _check(_num(total_steps) and total_steps > 0, f'total_steps must be > 0, got {total_steps!r}')
  _check(_num(warmup_steps) and 0 <= warmup_steps <= total_steps,
         f'warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps!r}')
  _check(_num(peak_lr) and peak_lr > 0, f'make_optimizer.peak_lr must be a number > 0, got '
                                        f'{peak_lr!r}')
  _check(_num(min_lr_ratio) and 0 <= min_lr_ratio <= 1,
         f'make_optimizer.min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}')

  def schedule_fn(step):
    step = jnp.asarray(step, jnp.float32)
    warm = peak_lr * jnp.minimum((step + 1) / max(warmup_steps, 1), 1.0)
    if schedule == 'constant':
      after = jnp.full_like(step, peak_lr)
    else:
      progress = jnp.clip((step - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0, 1.0)
      cosine = 0.5 * (1.0 + jnp.cos(math.pi * progress))
      after = peak_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine)
    return jnp.where(step < warmup_steps, warm, after)

  return schedule_fn


def decay_mask(params):
  """True for leaves that get weight decay: matrices (ndim >= 2) except the input embedding."""
  def decays(path, x):
    name = getattr(path[-1], 'key', None)
    return bool(jnp.ndim(x) >= 2 and name != 'embed')
  return jax.tree_util.tree_map_with_path(decays, params)


@gin.configurable
def make_optimizer(peak_lr: float, total_steps: int, warmup_steps: int,
                   schedule: str = 'cosine', min_lr_ratio: float = 0.1,
                   weight_decay: float = 0.1, clip_norm: float | None = 1.0, b1: float = 0.9,
                   b2: float = 0.95, eps: float = 1e-8):
  """(optax transformation, schedule_fn). AdamW with decoupled decay scaled by the lr, as torch."""
  _check(_num(weight_decay) and weight_decay >= 0,
         f'make_optimizer.weight_decay must be a number >= 0, got {weight_decay!r}')
  _check(clip_norm is None or _num(clip_norm) and clip_norm > 0,
         f'make_optimizer.clip_norm must be a number > 0 or None, got {clip_norm!r}')
  _check(all(_num(x) for x in (b1, b2, eps)) and 0 <= b1 < 1 and 0 <= b2 < 1 and eps > 0,
         f'make_optimizer needs 0 <= b1, b2 < 1 and eps > 0, got b1={b1!r} b2={b2!r} eps={eps!r}')
  schedule_fn = make_schedule(peak_lr, total_steps, warmup_steps, schedule, min_lr_ratio)
  tx = optax.chain(
      optax.clip_by_global_norm(clip_norm) if clip_norm is not None else optax.identity(),
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
      optax.add_decayed_weights(weight_decay, mask=decay_mask),
      optax.inject_hyperparams(optax.scale_by_learning_rate)(learning_rate=schedule_fn),
  )
  return tx, schedule_fn


def current_lr(opt_state):
  """The learning rate of the last update made with this optimizer state."""
  found = [v for _, v in optax.tree_utils.tree_get_all_with_path(opt_state, 'learning_rate')
           if hasattr(v, 'shape')]  # hyperparams['learning_rate'], not its schedule state
  if len(found) != 1:
    raise ValueError('optimizer state has no single injected learning rate (use make_optimizer)')
  return found[0]
