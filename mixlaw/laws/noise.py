"""Eval noise of a loss trajectory: its scale, its serial correlation, smoothed end values.

Eval losses along one CPT run scatter around a smooth trend, and neighbouring evals scatter
together (the model moves little between them), so:
  sigma: per-eval noise from second differences, d_i = y_i+1 - 2 y_i + y_i-1 (a smooth trend
    cancels; white noise gives Var d = 6 sigma^2), robustly (MAD). It needs no fitted model. With
    serial correlation rho it reads the fast part of the noise: sigma sqrt((1-rho)(3-rho)/3).
  rho: lag-1 autocorrelation of fit residuals within runs, pooled, corrected for the downward
    bias of a short series whose trend was fitted (Kendall's (1 + 3 rho) / m, plus p / m for p
    fitted parameters).
  smoothed value at T_b: mean of each run's last k evals; its standard error across runs when
    there are >= 2, else from the spread of those k evals, corrected for serial correlation
    (which both shrinks the spread of k neighbours and inflates the variance of their mean).
"""

import math

import numpy as np

MAD = 1.4826  # MAD -> sigma for Gaussian noise.
RHO_MAX = 0.95


def sigma_2nd(runs_y) -> float:
  """Per-eval noise sigma from second differences pooled over runs (each run in T order)."""
  d = [np.diff(np.asarray(y, np.float64), 2) for y in runs_y if len(y) >= 3]
  d = np.concatenate(d) if d else np.zeros(0)
  if d.size < 2:
    return float('nan')
  return float(MAD * np.median(np.abs(d - np.median(d))) / math.sqrt(6.0))


def lag1(runs_resid, n_params: int) -> float:
  """Bias-corrected lag-1 autocorrelation of residuals (runs in T order), clipped [0, RHO_MAX]."""
  num = den = 0.0
  m = []
  for r in runs_resid:
    r = np.asarray(r, np.float64)
    if r.size < 3:
      continue
    r = r - r.mean()
    num += float(np.sum(r[1:] * r[:-1]))
    den += float(np.sum(r * r))
    m.append(r.size)
  if not m or den <= 0:
    return 0.0
  rho = num / den
  rho += (n_params + 1 + 3 * max(rho, 0.0)) / np.mean(m)
  return float(np.clip(rho, 0.0, RHO_MAX))


def ar_factor(rho: float, k: int) -> float:
  """Var(mean of k AR(1) values) / (sigma^2 / k)."""
  j = np.arange(1, k)
  return float(1 + 2 * np.sum((1 - j / k) * rho ** j))


def block_length(rho: float, m: int) -> int:
  """Moving-block length for a series of m evals with lag-1 correlation rho (AR(1) form of the
  Buhlmann-Kunsch / Politis-White rule b ~ (2 rho / (1 - rho^2))^(2/3) m^(1/3))."""
  if rho <= 0 or m < 4:
    return 1
  b = math.ceil((2 * rho / (1 - rho * rho)) ** (2 / 3) * m ** (1 / 3))
  return int(min(max(b, 1), max(m // 3, 1)))


def block_indices(rng, m: int, b: int) -> np.ndarray:
  """Circular moving-block bootstrap: m indices into 0..m-1, in blocks of b consecutive ones."""
  starts = rng.integers(0, m, -(-m // b))
  return ((starts[:, None] + np.arange(b)[None]) % m).ravel()[:m]


def last_evals(runs_t, runs_y, t_b: float, k: int) -> list[np.ndarray]:
  """Per run with an eval at T <= T_b: its last k evals with T <= T_b."""
  out = []
  for t, y in zip(runs_t, runs_y):
    keep = np.flatnonzero(np.asarray(t, np.float64) <= t_b * (1 + 1e-9))[-k:]
    if keep.size:
      out.append(np.asarray(y, np.float64)[keep])
  return out


def smoothed(runs_t, runs_y, t_b: float, k: int, rho: float) -> tuple[float, float, int]:
  """(mean, standard error, runs) of the value at T_b: each run's last k evals with T <= T_b."""
  spread = last_evals(runs_t, runs_y, t_b, k)
  means = [float(y.mean()) for y in spread]
  if not means:
    return float('nan'), float('nan'), 0
  n = len(means)
  if n >= 2:
    return float(np.mean(means)), float(np.std(means, ddof=1) / math.sqrt(n)), n
  y = spread[0]
  if y.size < 2:
    return means[0], float('nan'), 1
  f = ar_factor(rho, y.size)
  # The spread of k correlated values understates sigma: E s^2 = sigma^2 (1 - (f - 1) / (k - 1)).
  var = np.var(y, ddof=1) / max(1 - (f - 1) / (y.size - 1), 0.1)
  return means[0], float(math.sqrt(var * f / y.size)), 1
