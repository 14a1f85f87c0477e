"""What a researcher watches: TensorBoard scalars and config text, FLOPs, MFU, profiler, progress.

Per run's tb/ folder (process 0 only): `train/lr`, `train/grad_norm` (before clipping), and
`perf/step_time_s`, `perf/tokens_per_s` (per member), `perf/mfu` (when a peak is known), next
to the results' `{train,validation}/{general,domain}_loss`; the operative gin config as the text
`config/gin`. `MetricsConfig.profile_steps = (start, stop)` traces steps [start, stop) with
`jax.profiler` into the run's tb/ folder.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import gin
import jax

from mixlaw.errors import MixlawError

# Dense bf16 matmul peak per device (vendor figures), for MFU when MetricsConfig.peak_flops is 0.
PEAK_FLOPS = {'H100': 989e12, 'H200': 989e12, 'A100': 312e12, 'TPU v5p': 459e12,
              'TPU v5 lite': 197e12, 'TPU v5e': 197e12, 'TPU v4': 275e12, 'TPU v6': 918e12}


class MetricsError(MixlawError, ValueError):
  """A bad MetricsConfig value."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MetricsConfig:
  """peak_flops: per device, for MFU (0: from PEAK_FLOPS by device kind, else no MFU);
  profile_steps: (start, stop) steps to trace with jax.profiler (None: no trace)."""
  peak_flops: float = 0.0
  profile_steps: tuple | None = None

  def __post_init__(self):
    if not (isinstance(self.peak_flops, (int, float)) and self.peak_flops >= 0):
      raise MetricsError(f'MetricsConfig.peak_flops must be a number >= 0, got '
                         f'{self.peak_flops!r}')
    w = self.profile_steps
    if w is not None and not (len(w) == 2 and all(isinstance(x, int) for x in w)
                              and 0 <= w[0] < w[1]):
      raise MetricsError(f'MetricsConfig.profile_steps must be (start, stop) with 0 <= start < '
                         f'stop, got {w!r}')


def flops_per_token(cfg, seq_len: int) -> float:
  """Training FLOPs per token: 6 x (non-embedding + output-head parameters) for the matmuls,
  plus causal attention's 6 x layers x d_model x seq_len (half of the 12 L d T of full
  attention). The embedding lookup costs no FLOPs."""
  from mixlaw import model
  n = model.count_params(cfg)['non_embedding'] + cfg.d_model * cfg.vocab_size
  return 6.0 * n + 6.0 * cfg.n_layers * cfg.d_model * seq_len


def peak_flops(config: MetricsConfig | None = None) -> float:
  """Per-device peak FLOP/s: MetricsConfig's, else the device kind's; 0 when unknown (CPU)."""
  config = config or MetricsConfig()
  if config.peak_flops:
    return float(config.peak_flops)
  kind = jax.devices()[0].device_kind
  return next((v for k, v in PEAK_FLOPS.items() if k.lower() in kind.lower()), 0.0)


def progress(total: int, initial: int = 0, desc: str = '', unit: str = 'step',
             disable: bool = False):
  """A tqdm bar; when stderr is not a terminal (a log file) it writes a line at most every 60 s;
  disabled on every process but the first."""
  from tqdm.auto import tqdm
  tty = sys.stderr.isatty()
  return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
              mininterval=0.1 if tty else 60.0, maxinterval=10.0 if tty else 600.0,
              disable=disable or jax.process_index() != 0)


def write_config(writer, text: str) -> None:
  """The operative gin config as TensorBoard text (Markdown code block)."""
  if writer is not None:
    writer.add_text('config/gin', '```\n' + text + '\n```', 0)


class Meter:
  """Per-step scalars of a run or an ensemble, to each member's writer."""

  def __init__(self, writers, tokens_per_step: int, flops_per_token_: float, timers):
    self.writers, self.timers = writers, timers
    self.tokens_per_step, self.flops = tokens_per_step, flops_per_token_
    self.peak = peak_flops() * jax.device_count()
    self._last = None  # (step, seconds of steps and data so far)

  def train(self, step: int, members: list[dict], alive) -> None:
    spent = self.timers.step + self.timers.data
    perf = {}
    if self._last is not None and step > self._last[0] and spent > self._last[1]:
      dt = (spent - self._last[1]) / (step - self._last[0])
      perf = {'perf/step_time_s': dt, 'perf/tokens_per_s': self.tokens_per_step / dt}
      if self.peak:
        perf['perf/mfu'] = (self.flops * self.tokens_per_step * int(sum(alive))
                            / dt / self.peak)
    if spent > 0:  # The first step (compilation) sets no clock.
      self._last = (step, spent)
    for writer, m, ok in zip(self.writers, members, alive):
      if writer is None or not ok:
        continue
      for key in ('lr', 'grad_norm'):
        v = float(m[key])
        if math.isfinite(v):
          writer.add_scalar(f'train/{key}', v, step)
      for key, v in perf.items():
        writer.add_scalar(key, v, step)


class Profiler:
  """Traces steps [start, stop) of MetricsConfig.profile_steps into logdir (every process)."""

  def __init__(self, logdir: str, window: tuple | None = None):
    self.logdir = logdir
    self.window = MetricsConfig().profile_steps if window is None else window
    self.active = False

  def at(self, step: int) -> None:
    """Call before running update `step` (1-based)."""
    if not self.window:
      return
    start, stop = self.window
    if not self.active and start <= step < stop:
      jax.profiler.start_trace(self.logdir)
      self.active = True
    elif self.active and step >= stop:
      self.stop()

  def stop(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
