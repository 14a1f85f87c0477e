"""Bootstrap: resample the points of every curve (seeded), refit from the point estimate.

Replicates are multiplicity weights over the same padded arrays, so every refit reuses one
compiled fitter (warm start, polish phase only). Intervals are percentile intervals.
"""

import numpy as np

from mixlaw.laws import fit as fit_lib

LEVEL = 0.95


def resample(w_CxN, n_boot: int, seed: int, min_distinct: int) -> np.ndarray:
  """B x C x N multiplicities: per curve, n draws with replacement from its n valid points.

  A draw with fewer than min_distinct distinct points is redrawn (up to 20 times).
  """
  w = np.asarray(w_CxN) > 0
  rng = np.random.default_rng(seed)
  out = np.zeros((n_boot,) + w.shape)
  for c in range(w.shape[0]):
    idx = np.flatnonzero(w[c])
    for b in range(n_boot):
      for _ in range(20):
        counts = np.bincount(rng.integers(0, idx.size, idx.size), minlength=idx.size)
        if np.count_nonzero(counts) >= min_distinct:
          break
      out[b, c, idx] = counts
  return out


def refit(form, variables, y_CxN, w_BxCxN, params_CxP, *, huber_delta) -> fit_lib.FitResult:
  """Refits C curves under B weightings, warm-started at params_CxP; results are (B*C)-long."""
  b, c, n = w_BxCxN.shape
  tile = lambda a: np.broadcast_to(np.asarray(a, np.float64), (c, n))[None].repeat(b, 0)
  v = {k: tile(a).reshape(b * c, n) for k, a in variables.items()}
  init = np.broadcast_to(params_CxP[None], (b,) + params_CxP.shape).reshape(b * c, 1, -1)
  return fit_lib.fit_curves(form, v, tile(y_CxN).reshape(b * c, n), w_BxCxN.reshape(b * c, n),
                            huber_delta=huber_delta, init_CxSxP=init)


def interval(x_B, level: float = LEVEL):
  """Percentile interval over the finite entries; (lo, hi, n_finite); NaNs if none."""
  x = np.asarray(x_B, np.float64)
  x = x[np.isfinite(x)]
  if not x.size:
    return float('nan'), float('nan'), 0
  q = 100 * (1 - level) / 2
  lo, hi = np.percentile(x, [q, 100 - q])
  return float(lo), float(hi), int(x.size)


def interval_axis(x_BxJ, level: float = LEVEL):
  """Percentile intervals along axis 0, ignoring non-finite entries (NaN where none)."""
  x = np.asarray(x_BxJ, np.float64)
  q = 100 * (1 - level) / 2
  x = np.where(np.isfinite(x), x, np.nan)
  ok = np.isfinite(x).any(axis=0)
  lo = np.full(x.shape[1:], np.nan)
  hi = np.full(x.shape[1:], np.nan)
  if ok.any():
    lo[ok], hi[ok] = np.nanpercentile(x[:, ok], [q, 100 - q], axis=0)
  return lo, hi
