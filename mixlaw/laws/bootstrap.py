"""Bootstrap replicates that mimic a rerun, and percentile intervals that respect censoring.

A replicate of a (size, R) curve is built in two stages, so that it varies as a rerun would:
  1. runs: with >= 2 runs (CPT data-order seeds), whole runs are drawn with replacement (their
     multiplicities become point weights), each carrying its own smooth curve (its own Eq. 6
     fit), its deviation from the pooled fit scaled by sqrt(n / (n - 1)): seed-to-seed
     variation;
  2. evals: within every run, the residuals from the run's own fit are redrawn as serially
     correlated noise. 'ar1' (default): an AR(1) filter with the size's estimated lag-1
     correlation whose innovations are resampled from the run's own (the sieve form of the block
     bootstrap), inflated by sqrt(m / (m - p)) for the p fitted parameters. 'blocks': circular
     moving blocks of b consecutive residuals, kept as a cross-check: with 25 evals a run holds
     a handful of blocks, which understates the long-run variance (measured coverage 53%
     against 94% for 'ar1' in benchmarks/calibration.py).
With one run only stage 2 applies. General and domain losses are redrawn together (one eval
measures both).
"""

import dataclasses

import numpy as np

from mixlaw.laws import noise


@dataclasses.dataclass
class Replicates:
  """B replicates of C padded curves: targets per loss and point weights."""
  y_BxCxN: dict[str, np.ndarray]
  w_BxCxN: np.ndarray


def draw(run_CxN, w_CxN, pooled_CxN: dict, run_fit_CxN: dict, y_CxN: dict, n_boot: int,
         seed: int, *, rho_C, n_params: dict, blocks_C=None, mode: str = 'ar1',
         mult=None) -> Replicates:
  """Replicates of every curve (see the module docstring).

  run_CxN: run index of each point (points of a run consecutive and in T order); w_CxN: 1 for
  real points, 0 for padding; {'general', 'domain'} -> C x N: pooled_CxN the curve's fit,
  run_fit_CxN each run's own fit (= pooled with one run), y_CxN the measured values.
  A replicate run is pooled + kappa (run fit - pooled) + redrawn eval noise, kappa =
  sqrt(n / (n - 1)) for n runs (a mean over n runs drawn with replacement has (n - 1) / n of
  the spread of a new set of n). rho_C: lag-1 correlation of the eval noise per curve;
  n_params: {loss: fitted parameters per run, one number or one per curve}; blocks_C: block
  length per curve (mode 'blocks'). mult: optional per curve a B x runs array of whole-run
  multiplicities drawn by the caller (e.g. seed indices drawn jointly across curves when data
  orders are shared); default: drawn here, independently per curve.
  """
  rng = np.random.default_rng(seed)
  c, n = w_CxN.shape
  w = np.broadcast_to(w_CxN, (n_boot, c, n)).copy()
  res = {k: np.where(w_CxN > 0, y_CxN[k] - run_fit_CxN[k], 0.0) for k in y_CxN}
  new = {k: np.zeros((n_boot, c, n)) for k in y_CxN}
  for i in range(c):
    runs = [np.flatnonzero((run_CxN[i] == r) & (w_CxN[i] > 0))
            for r in np.unique(run_CxN[i][w_CxN[i] > 0])]
    if len(runs) >= 2:
      for b in range(n_boot):
        mb = (np.bincount(rng.integers(0, len(runs), len(runs)), minlength=len(runs))
              if mult is None else mult[i][b])
        for pts, m in zip(runs, mb):
          w[b, i, pts] = m
    for pts in runs:
      m = pts.size
      if mode == 'blocks':
        idx = np.stack([pts[noise.block_indices(rng, m, int(blocks_C[i]))]
                        for _ in range(n_boot)])
        for k in res:
          new[k][:, i, pts] = res[k][i][idx]
        continue
      rho = float(rho_C[i])
      j0, jj = rng.integers(0, m, n_boot), rng.integers(1, m, (n_boot, m))
      for k in res:
        r = res[k][i][pts]
        inflate = np.sqrt(m / max(m - np.broadcast_to(n_params[k], (c,))[i], 1))
        eta = (r[1:] - rho * r[:-1])
        eta = (eta - eta.mean()) * inflate
        e = np.empty((n_boot, m))
        e[:, 0] = r[j0] * inflate
        for t in range(1, m):
          e[:, t] = rho * e[:, t - 1] + eta[jj[:, t] - 1]
        new[k][:, i, pts] = e
  kappa = np.array([np.sqrt(k / (k - 1)) if k >= 2 else 1.0 for k in
                    (len(np.unique(run_CxN[i][w_CxN[i] > 0])) for i in range(c))])[:, None]
  y = {}
  for k in y_CxN:
    base = pooled_CxN[k] + kappa * (run_fit_CxN[k] - pooled_CxN[k])
    y[k] = np.where(w_CxN[None] > 0, base[None] + new[k], y_CxN[k][None])
  return Replicates(y, w)


BELOW = -np.inf  # a replicate whose CMR is censored below the smallest trained ratio.


def interval(x_B, est, level: float):
  """Percentile interval of replicates x_B around the point estimate est.

  NaN entries (failed replicates) are dropped; -inf (censored below) ranks below everything
  and gives lo = -inf when it reaches the lower percentile. If the estimate falls outside the
  percentile interval (a shifted bootstrap distribution, e.g. near a censoring edge) the
  interval is widened to include it. Returns (lo, hi, n_ok, widened).
  """
  x = np.asarray(x_B, np.float64)
  x = x[~np.isnan(x)]
  if not x.size:
    return float('nan'), float('nan'), 0, False
  q = 100 * (1 - level) / 2
  finite = x[np.isfinite(x)]
  floor = (finite.min() if finite.size else 0.0) - 1.0  # -inf as a value below all others.
  lo, hi = np.percentile(np.where(np.isneginf(x), floor, x), [q, 100 - q])
  # A percentile interpolated between the censored floor and the smallest finite replicate lies
  # in the censored mass: it is "below", not a ratio (linear interpolation would invent one).
  smallest = finite.min() if finite.size else np.inf
  lo = -np.inf if lo < smallest else float(lo)
  hi = -np.inf if hi < smallest else float(hi)
  widened = False
  if est is not None and not np.isnan(est):
    est = float(est)
    if est < lo or est > hi:
      lo, hi, widened = min(lo, est), max(hi, est), True
  return lo, float(hi), int(x.size), widened


def interval_axis(x_BxJ, est_J, level: float):
  """interval() along axis 0; returns arrays lo_J, hi_J."""
  x = np.asarray(x_BxJ, np.float64)
  est = np.broadcast_to(np.asarray(est_J, np.float64), x.shape[1:])
  lo, hi = np.full(x.shape[1:], np.nan), np.full(x.shape[1:], np.nan)
  for j in np.ndindex(*x.shape[1:]):
    lo[j], hi[j] = interval(x[(slice(None),) + j], est[j], level)[:2]
  return lo, hi
