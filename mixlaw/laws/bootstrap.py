"""Bootstrap replicates that mimic a rerun, and percentile intervals that respect censoring.

A replicate of a (size, R) curve is built in two stages, so that it varies as a rerun would:
  1. seeds: with n >= 2 runs (CPT data-order seeds), each run carries its own smooth curve (its
     own Eq. 6 fit); a replicate run is the pooled fit plus its deviation times a random scale
     (`seed_draws`). 'wild_t' (default): scale = kappa c v_s, v_s ~ N(0, 1) per seed and
     c = sqrt((n - 1) / chi2_{n-1}) per replicate, kappa = sqrt(n / (n - 1)): the replicate's
     seed mean then deviates from the pooled fit as s / sqrt(n) t_{n-1}, the predictive
     distribution of a fresh set of n seeds' mean when the seed variance is estimated from
     n - 1 degrees of freedom. 'runs': whole runs drawn with replacement (multiplicities as
     point weights, deviations scaled by kappa), kept as a cross-check: with 2 seeds its
     intervals carry a 1-degree-of-freedom variance estimate as if it were known, and cover a
     seed effect 61% of the time at nominal 95% ((2 / pi) arctan(sqrt 2)).
     Data orders shared by every (size, R) (one order per seed index) draw v and c once per
     replicate for every cell; independent orders draw them per cell;
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


SEED_RESAMPLING = ('wild_t', 'runs')


def t_scale(rng, n_boot: int, df: int) -> np.ndarray:
  """B draws of sqrt(df / chi2_df): a N(0, s^2) draw times this is s t_df (s from df degrees of
  freedom)."""
  return np.sqrt(df / rng.chisquare(df, n_boot))


def seed_draws(labels_C: list, n_boot: int, seed: int, shared: bool,
               mode: str = 'wild_t') -> list:
  """Stage 1 of every replicate: per curve (its runs' seed labels in labels_C) a pair
  (weights B x k, scales B x k): a replicate run is pooled + scale (run fit - pooled), its
  points weighted `weights` (module docstring). shared: one draw per replicate for every
  curve, by seed label (data orders shared across cells); a curve with one run: (1, 1)."""
  if mode not in SEED_RESAMPLING:
    raise ValueError(f'seed resampling must be one of {SEED_RESAMPLING}, got {mode!r}')
  rng = np.random.default_rng([seed, 7])
  labels = sorted({lab for c in labels_C for lab in c})
  n = len(labels)
  if mode == 'runs':
    joint = (np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)])
             if n_boot else np.zeros((0, n), int))
  else:
    v_joint = rng.standard_normal((n_boot, n))
    c_joint = t_scale(rng, n_boot, max(n - 1, 1))
  out = []
  for lab in labels_C:
    k = len(lab)
    ones = np.ones((n_boot, k))
    if k < 2:
      out.append((ones, ones))
      continue
    kappa = np.sqrt(k / (k - 1))
    idx = [labels.index(x) for x in lab]
    if mode == 'runs':
      own = np.array([np.bincount(rng.integers(0, k, k), minlength=k)
                      for _ in range(n_boot)], int).reshape(n_boot, k)
      m = own
      if shared:
        m = joint[:, idx]
        m = np.where(m.sum(axis=1, keepdims=True) > 0, m, own)
      out.append((m.astype(float), kappa * ones))
      continue
    v, c = rng.standard_normal((n_boot, k)), t_scale(rng, n_boot, k - 1)
    if shared:
      v, c = v_joint[:, idx], c_joint
    out.append((ones, kappa * c[:, None] * v))
  return out


def draw(run_CxN, w_CxN, pooled_CxN: dict, run_fit_CxN: dict, y_CxN: dict, n_boot: int,
         seed: int, *, rho_C, n_params: dict, blocks_C=None, mode: str = 'ar1',
         seeds=None) -> Replicates:
  """Replicates of every curve (see the module docstring).

  run_CxN: run index of each point (points of a run consecutive and in T order); w_CxN: 1 for
  real points, 0 for padding; {'general', 'domain'} -> C x N: pooled_CxN the curve's fit,
  run_fit_CxN each run's own fit (= pooled with one run), y_CxN the measured values.
  A replicate run is pooled + scale (run fit - pooled) + redrawn eval noise, with point weight
  `weight`; seeds: per curve (weights B x runs, scales B x runs) as `seed_draws` returns
  (default: its 'wild_t' draw, independent per curve). rho_C: lag-1 correlation of the eval
  noise per curve; n_params: {loss: fitted parameters per run, one number or one per curve};
  blocks_C: block length per curve (mode 'blocks').
  """
  rng = np.random.default_rng(seed)
  c, n = w_CxN.shape
  w = np.broadcast_to(w_CxN, (n_boot, c, n)).copy()
  scale = np.ones((n_boot, c, n))
  res = {k: np.where(w_CxN > 0, y_CxN[k] - run_fit_CxN[k], 0.0) for k in y_CxN}
  new = {k: np.zeros((n_boot, c, n)) for k in y_CxN}
  ids = [np.unique(run_CxN[i][w_CxN[i] > 0]) for i in range(c)]
  if seeds is None:
    seeds = seed_draws([list(r) for r in ids], n_boot, seed, shared=False)
  for i in range(c):
    runs = [np.flatnonzero((run_CxN[i] == r) & (w_CxN[i] > 0)) for r in ids[i]]
    if len(runs) >= 2:
      wt, sc = seeds[i]
      for j, pts in enumerate(runs):
        w[:, i, pts] = wt[:n_boot, j, None]
        scale[:, i, pts] = sc[:n_boot, j, None]
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
  y = {}
  for k in y_CxN:
    base = pooled_CxN[k][None] + scale * (run_fit_CxN[k] - pooled_CxN[k])[None]
    y[k] = np.where(w_CxN[None] > 0, base + new[k], y_CxN[k][None])
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
