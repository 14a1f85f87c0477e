"""AdamW with global-norm clipping; warmup + cosine (pretraining) or warmup + constant (CPT).

Weight decay applies to the weight matrices of the blocks and to the output projection; not to
norm scales, nor to the input embedding (a lookup table: decay would shrink rare tokens' rows).
The current learning rate lives in the optimizer state (`current_lr`), so a train step reports it.
"""
import math

import gin
import jax
import jax.numpy as jnp
import optax

SCHEDULES = ('cosine', 'constant')


def make_schedule(peak_lr: float, total_steps: int, warmup_steps: int, schedule: str = 'cosine',
                  min_lr_ratio: float = 0.1):
  """step -> learning rate. Linear warmup reaches peak_lr at step warmup_steps - 1; cosine then
  decays to min_lr_ratio * peak_lr at step total_steps; constant stays at peak_lr."""
  if schedule not in SCHEDULES:
    raise ValueError(f'schedule must be one of {SCHEDULES}, got {schedule!r}')
  if not total_steps > 0:
    raise ValueError(f'total_steps must be > 0, got {total_steps}')
  if not 0 <= warmup_steps <= total_steps:
    raise ValueError(f'warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}')
  if not peak_lr > 0:
    raise ValueError(f'peak_lr must be > 0, got {peak_lr}')
  if not 0 <= min_lr_ratio <= 1:
    raise ValueError(f'min_lr_ratio must be in [0, 1], got {min_lr_ratio}')

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
  if weight_decay < 0:
    raise ValueError(f'weight_decay must be >= 0, got {weight_decay}')
  if clip_norm is not None and not clip_norm > 0:
    raise ValueError(f'clip_norm must be > 0 or None, got {clip_norm}')
  if not (0 <= b1 < 1 and 0 <= b2 < 1 and eps > 0):
    raise ValueError(f'need 0 <= b1, b2 < 1 and eps > 0, got b1={b1} b2={b2} eps={eps}')
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
