"""Seeds as blocks: where every (size, R) cell ran the same data orders (one order per seed
index, sweep.json `data_orders: shared`), a run's value v (a smoothed level, a window slope, an
eval) is modelled as

    v[s, c] = mean[c] + offset[s] + resid[s, c]        (sums over s of offset and resid: 0)

cell mean (what a CMR is computed from), seed offset (the data order's effect, shared by every
cell) and residual (eval noise and any seed-by-cell interaction) with one pooled variance
sigma^2 on (C - 1)(n - 1) degrees of freedom (C cells, n orders).
  - Contrasts (between ratios, sizes, budgets, domains) are taken within seed: the offset
    cancels, and their noise is the residual's, known from the pooled degrees of freedom
    (a t_df scale on every draw, not the t_{n-1} of one cell's n runs).
  - An absolute value (a level against the base model) keeps the offset's uncertainty: the mean
    of n data orders' offsets, sd(offset) / sqrt(n), known from n - 1 degrees of freedom (a
    t_{n-1} variate).
  - Eval noise is one realisation per (R, seed, step): the sizes of one (R, seed) train on the
    same batches in the same order and are evaluated on the same rows, so their residuals
    correlate (cmr_long: 0.6-0.7); other cells' do not. The residual is split into the part
    a group (R) shares and each cell's own, each with its degrees of freedom.
    The residual already contains the eval noise: nothing redraws it a second time.
`cell_draws` draws cell means this way (model-free CMRs, seedwise.py); `series_draws` draws
whole replicate runs for the Eq. 6 refits (the bootstrap of the fitted CMRs).
"""

import dataclasses
import math

import numpy as np

from mixlaw.laws import bootstrap


@dataclasses.dataclass
class Blocks:
  """v[s, c] = mean[c] + offset[s] + resid[s, c] (module docstring). The residual splits into
  a part shared by the cells of one group (the sizes of one R: the same batches and eval rows)
  and a cell's own part: variances sigma_u^2 (df_u) and sigma_w^2 (df_w), df_u + df_w = df."""
  mean_C: np.ndarray
  offset_S: np.ndarray
  resid_SxC: np.ndarray
  sigma: float  # sd of one run's residual, pooled over cells.
  df: int  # (C - 1)(n - 1)
  offset_sd: float  # sd of the data orders' offsets (n - 1 degrees of freedom).
  group_C: np.ndarray
  sigma_u: float
  df_u: int
  sigma_w: float
  df_w: int

  @property
  def n(self) -> int:
    return self.offset_S.size

  @property
  def offset_df(self) -> int:
    return self.n - 1

  @property
  def rho_x(self) -> float:
    """The correlation of two cells' residuals within a group."""
    tot = self.sigma_u ** 2 + self.sigma_w ** 2
    return float(self.sigma_u ** 2 / tot) if tot > 0 else 0.0


def blocks(v_SxC, group_C=None) -> Blocks:
  """Two-way decomposition of v (seeds x cells; every cell has every seed), and the nested
  split of its residual by group (default: every cell its own group)."""
  v = np.asarray(v_SxC, np.float64)
  n, c = v.shape
  group = np.arange(c) if group_C is None else np.asarray(group_C)
  mean = v.mean(axis=0)
  offset = (v - mean).mean(axis=1)
  resid = v - mean - offset[:, None]
  df = (n - 1) * (c - 1)
  sd = float(np.std(offset, ddof=1)) if n >= 2 else float('nan')
  keys, idx = np.unique(group, return_inverse=True)
  size = np.bincount(idx)
  gmean = np.stack([resid[:, idx == g].mean(axis=1) for g in range(keys.size)], 1)
  ss_w = float(np.sum((resid - gmean[:, idx]) ** 2))
  df_w = int((n - 1) * np.sum(size - 1))
  df_u = df - df_w
  sw2 = ss_w / df_w if df_w else 0.0
  ms_u = float(np.sum(size[None] * gmean ** 2)) / df_u if df_u else 0.0
  su2 = max((ms_u - sw2) / float(np.mean(size)), 0.0) if df_u else 0.0
  # The offset absorbs a share of the group parts (1 / groups, not 1 / cells): the pooled sum
  # of squares over df would read sigma low when groups share their residual.
  sigma = math.sqrt(su2 + sw2) if df else float('nan')
  return Blocks(mean, offset, resid, sigma, df, sd, group, math.sqrt(su2), df_u,
                math.sqrt(sw2), df_w)


def cell_draws(bl: Blocks, rng, n_draws: int, absolute: bool = False) -> np.ndarray:
  """D x C Monte-Carlo draws of the cell means as a fresh set of n data orders would give them:
  mean + the residual's mean, a group part (sigma_u / sqrt(n), t_{df_u}) shared by the cells of
  a group plus a cell part (sigma_w / sqrt(n), t_{df_w}); with absolute=True also the offsets'
  mean (offset_sd / sqrt(n), t_{n-1}, the same in every cell)."""
  c = bl.mean_C.size
  out = np.broadcast_to(bl.mean_C, (n_draws, c)).copy()
  keys, idx = np.unique(bl.group_C, return_inverse=True)
  for sd, df, k, cols in ((bl.sigma_u, bl.df_u, keys.size, idx),
                          (bl.sigma_w, bl.df_w, c, np.arange(c))):
    if df and sd > 0:
      z = rng.standard_normal((n_draws, k))[:, cols]
      out += (sd / math.sqrt(bl.n)) * bootstrap.t_scale(rng, n_draws, df)[:, None] * z
  if absolute and bl.n >= 2:
    out += offset_draws(bl, rng, n_draws)[:, None]
  return out


def offset_draws(bl: Blocks, rng, n_draws: int) -> np.ndarray:
  """D draws of the mean offset of a fresh set of n data orders: sd / sqrt(n) t_{n-1}."""
  return (bl.offset_sd / math.sqrt(bl.n) * bootstrap.t_scale(rng, n_draws, bl.offset_df)
          * rng.standard_normal(n_draws))


def seed_offset(bl: Blocks, seeds) -> dict:
  """fits.json `seed_offset`: the offsets' sd across data orders (nats) with its degrees of
  freedom, each order's offset against their mean, and the residual around them."""
  dev = bl.resid_SxC + bl.offset_S[:, None]
  same = int(np.sum(np.all(np.sign(dev) == np.sign(bl.offset_S)[:, None], axis=0)))
  return dict(nats=_num(bl.offset_sd), df=int(bl.offset_df), rho_x=_num(bl.rho_x),
              se_of_mean=_num(bl.offset_sd / math.sqrt(bl.n)),
              per_seed={str(s): _num(o) for s, o in zip(seeds, bl.offset_S)},
              residual_sd=_num(bl.sigma), residual_df=int(bl.df), cells=int(bl.mean_C.size),
              cells_same_sign=same)  # every order's deviation has its offset's sign.


def _num(x):
  x = float(x)
  return x if math.isfinite(x) else None


# ----------------------------------------------------------------------------- replicate runs

@dataclasses.dataclass
class Series:
  """The block model of every run's evals about its curve's pooled fit, per loss and aligned
  step: deviation = offset[s, step] + resid[c, s, step] (plus the seed mean's own deviation,
  which a replicate replaces). Cells c are the sweep's curves, in its order."""
  keys_L: np.ndarray  # the T of every aligned step (sorted)
  seeds: list
  offset: dict  # loss -> S x L (NaN where not every cell has that step)
  resid: dict  # loss -> C x S x L (NaN where the cell lacks the step)
  size_C: np.ndarray
  ratio_C: np.ndarray
  rho_x: dict  # loss -> residual correlation of sizes at the same (R, seed, step)
  df: int  # (C - 1)(n - 1)


def _tkey(t):
  return np.round(np.asarray(t, np.float64), 6)


def _aligned(t_CxN, w_CxN, run_CxN, seed_of_run, seeds):
  """(keys_L, per curve an S x L index of each (seed, step) point, -1 where absent)."""
  runs = []
  for c in range(len(seed_of_run)):
    per = []
    for s in seeds:
      r = seed_of_run[c].index(s)
      idx = np.flatnonzero((run_CxN[c] == r) & (w_CxN[c] > 0))
      per.append((_tkey(t_CxN[c, idx]), idx))
    runs.append(per)
  keys = np.unique(np.concatenate([tk for per in runs for tk, _ in per]))
  at = []
  for per in runs:
    a = -np.ones((len(seeds), keys.size), int)
    for s, (tk, idx) in enumerate(per):
      a[s, np.searchsorted(keys, tk)] = idx
    at.append(a)
  return keys, at


def estimate(t_CxN, w_CxN, run_CxN, seed_of_run, size_C, ratio_C, y_CxN: dict,
             pooled_CxN: dict) -> Series:
  """The block model (class docstring) from the data's deviations from the pooled fits.
  seed_of_run[c][r]: the seed label of run r of curve c (every curve has the same labels)."""
  seeds = sorted(seed_of_run[0])
  n, c_all = len(seeds), len(seed_of_run)
  keys, at = _aligned(t_CxN, w_CxN, run_CxN, seed_of_run, seeds)
  full = np.stack([np.all(a >= 0, axis=0) for a in at])  # C x L: every seed has the step.
  offset, resid, rho_x = {}, {}, {}
  for k in y_CxN:
    dev = np.full((c_all, n, keys.size), np.nan)
    for c, a in enumerate(at):
      d = (y_CxN[k][c] - pooled_CxN[k][c])[np.where(a >= 0, a, 0)]
      dev[c] = np.where((a >= 0) & full[c][None], d, np.nan)
    e = dev - np.nanmean(dev, axis=1, keepdims=True)
    with np.errstate(invalid='ignore'):
      offset[k] = np.nanmean(e, axis=0)  # S x L; NaN-only columns warn and stay NaN.
    resid[k] = e - offset[k][None]
    rho_x[k] = _cross(resid[k], np.asarray(size_C), np.asarray(ratio_C))
  return Series(keys, seeds, offset, resid, np.asarray(size_C), np.asarray(ratio_C, float),
                rho_x, (c_all - 1) * (n - 1))


def _cross(r, size_c, ratio_c) -> float:
  """Pooled correlation of residuals of different sizes at the same (R, seed, step), clipped
  to [0, 0.95] (reported: the draws keep the realised one)."""
  num = den_a = den_b = 0.0
  for a in range(size_c.size):
    for b in range(a + 1, size_c.size):
      if ratio_c[a] == ratio_c[b] and size_c[a] != size_c[b]:
        x, y = r[a], r[b]
        ok = np.isfinite(x) & np.isfinite(y)
        num += float(np.sum(x[ok] * y[ok]))
        den_a += float(np.sum(x[ok] ** 2))
        den_b += float(np.sum(y[ok] ** 2))
  return float(np.clip(num / math.sqrt(den_a * den_b), 0.0, 0.95)) if den_a * den_b > 0 else 0.0


def _stream(*key):
  return np.random.default_rng([int(k) for k in key])


def _rkey(ratio):
  return int(round(float(ratio) * 1e6))


def series_draws(ser: Series, t_CxN, w_CxN, run_CxN, seed_of_run, pooled_CxN: dict,
                 n_boot: int, seed: int) -> bootstrap.Replicates:
  """B replicate sweeps. A replicate run of cell (size, R) and seed s = its curve's pooled fit
  + the seed's offset (held: within seed it cancels) + a residual series: that of the same
  size in a donor cluster (R', s') drawn uniformly from all (ratio, seed) clusters, times
  kappa c v (v ~ N(0, 1) per cluster and replicate, c a t_df scale per replicate, kappa =
  sqrt(C n / ((C - 1)(n - 1))) undoing the two-way fit's shrinkage). The sizes of one (R, s)
  share donor and v, so they keep the realised correlation of their eval noise (same batches,
  same eval rows); the residual keeps its realised serial correlation and its change along T;
  the variance is pooled over every cluster. The eval noise is in the residual: nothing
  redraws it a second time. General and domain share donors and v (one eval measures both).
  Streams are keyed by (R, seed label): every budget cut of a sweep draws the same donors and
  multipliers (replicate b is paired across budgets)."""
  c_all, n_pts = w_CxN.shape
  n = len(ser.seeds)
  keys, at = _aligned(t_CxN, w_CxN, run_CxN, seed_of_run, ser.seeds)
  j_of = np.searchsorted(ser.keys_L, keys)
  clusters = sorted({(_rkey(r), lab) for r in ser.ratio_C for lab in ser.seeds})
  cell = {(int(ser.size_C[c]), _rkey(ser.ratio_C[c])): c for c in range(c_all)}
  kappa = math.sqrt(c_all * n / max((c_all - 1) * (n - 1), 1))
  scale = kappa * np.sqrt(ser.df / _stream(seed, 31).chisquare(max(ser.df, 1), n_boot))
  pick = {}
  for key in clusters:
    rng = _stream(seed, 23, *key)
    pick[key] = (rng.integers(0, len(clusters), n_boot), rng.standard_normal(n_boot))
  y = {k: np.broadcast_to(pooled_CxN[k], (n_boot, c_all, n_pts)).copy() for k in pooled_CxN}
  for c in range(c_all):
    i = int(ser.size_C[c])
    for s, lab in enumerate(ser.seeds):
      ok = at[c][s] >= 0
      idx, j = at[c][s][ok], j_of[ok]
      donor, v = pick[(_rkey(ser.ratio_C[c]), lab)]
      src = np.array([cell.get((i, clusters[d][0]), c) for d in donor])
      src_s = np.array([ser.seeds.index(clusters[d][1]) for d in donor])
      for k in y:
        r = np.nan_to_num(ser.resid[k][src[:, None], src_s[:, None], j[None]])
        off = np.nan_to_num(ser.offset[k][s, j])
        y[k][:, c, idx] += off + (scale * v)[:, None] * r
  return bootstrap.Replicates(y, np.broadcast_to(w_CxN, (n_boot,) + w_CxN.shape).copy())


def offset_shifts(ser: Series, t_b: float, smooth_k: int, window: float, lam: float,
                  n_boot: int, seed: int) -> dict:
  """B draws of what the mean offset of a fresh set of n data orders adds at budget t_b: to
  the general loss's level (the mean over the last smooth_k steps) and to g = dF/dT (offset
  slopes over the trailing window, domain + lam general). The multipliers are the same at
  every budget (paired), kappa c v with v ~ N(0, 1) per seed and c a t_{n-1} scale."""
  n = len(ser.seeds)
  rng = _stream(seed, 37)
  v = rng.standard_normal((n_boot, n))
  c = bootstrap.t_scale(rng, n_boot, max(n - 1, 1)) * math.sqrt(n / max(n - 1, 1))
  keys = ser.keys_L
  upto = np.flatnonzero(keys <= t_b * (1 + 1e-9))
  last = upto[-smooth_k:]
  win = upto[keys[upto] > t_b * (1 - window)]
  win = win if win.size >= 3 else upto[-3:]
  level = np.nanmean(ser.offset['general'][:, last], axis=1)
  slope = {k: np.array([_slope(keys[win], ser.offset[k][s, win]) for s in range(n)])
           for k in ser.offset}
  g = slope.get('domain', 0.0) + lam * slope['general']
  mix = lambda x: c * (v @ np.nan_to_num(x)) / n
  return dict(level_B=mix(level), g_B=mix(g), level_S=level, g_S=g)


def _slope(t, y):
  ok = np.isfinite(y)
  if ok.sum() < 2:
    return float('nan')
  return float(np.polyfit(t[ok], y[ok], 1)[0])
