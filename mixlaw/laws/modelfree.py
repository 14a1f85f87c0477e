"""Model-free CMRs at a budget T_b: no fitted curve form, only the evals with T <= T_b.

Per (size, R), from each run's evals:
  level  m(R):  dL_gen at T_b, the mean of each run's last smooth_k evals (noise.smoothed);
  slopes:       least-squares slopes of dL_gen and dL_dom over the trailing window
                (T_b (1 - slope_window), T_b] (at least MIN_WINDOW evals per run);
  g(R)        = slope_dom + lam slope_gen: the Eq. 7 derivative dF/dT measured, not fitted.
Condition A: m(R) <= eps. Condition B (the critical point has passed by T_b): g(R) <= 0.
Both are interpolated piecewise-linearly in u = R^e between the trained ratios (e: the
ratio-law exponent of the general loss, as the fitted CMR uses) on a fine grid; the
condition-A CMR is the largest R with m <= eps, the Definition-2 CMR the largest R where both
hold. Standard errors: across runs (seeds) when a curve has >= 2, never below the within-run
error of serially correlated eval noise (AR(1) inflation, noise.ar_factor). Intervals by Monte
Carlo, drawn as the bootstrap's stage 1 draws seeds (bootstrap.seed_draws, 'wild_t'): each
run's deviation from the seed mean (of level and of g) times Gaussian weights and a t_{n-1}
scale, the same weights at every ratio when the data orders are shared (a seed's deviation is
one data order's, at every R); plus normal noise for whatever the within-run error exceeds the
between-seed one by; with one run, normal draws of the within-run error, independent across
ratios.
"""

import math

import numpy as np

from mixlaw.laws import bootstrap
from mixlaw.laws import noise

N_DRAWS = 4000  # Monte Carlo draws of the intervals.
N_GRID = 2001  # R grid of the interpolated conditions.
MIN_WINDOW = 3  # evals per run in a slope window, at least.


def _ols(t, y):
  """Slope and its standard error (independent noise) of y on t."""
  tc = t - t.mean()
  sxx = float(np.sum(tc * tc))
  if t.size < 2 or sxx <= 0:
    return float('nan'), float('nan')
  b = float(np.sum(tc * (y - y.mean())) / sxx)
  if t.size < 3:
    return b, float('nan')
  r = y - y.mean() - b * tc
  return b, math.sqrt(float(np.sum(r * r)) / (t.size - 2) / sxx)


def window(t_N, t_b: float, frac: float) -> np.ndarray:
  """Indices of the evals in (t_b (1 - frac), t_b], widened to the last MIN_WINDOW evals."""
  upto = np.flatnonzero(t_N <= t_b * (1 + 1e-9))
  keep = upto[t_N[upto] > t_b * (1 - frac)]
  return keep if keep.size >= MIN_WINDOW else upto[-MIN_WINDOW:]


def slope(runs_t, runs_y, t_b: float, frac: float, rho: float) -> tuple[float, float, int]:
  """(slope, standard error, runs) of y over the trailing window ending at t_b."""
  return _pooled(*run_slopes(runs_t, runs_y, t_b, frac, rho))


def _pooled(b, se) -> tuple[float, float, int]:
  """(mean, standard error, runs) of per-run slopes b with standard errors se: across runs
  with >= 2, never below the within-run error."""
  if not b:
    return float('nan'), float('nan'), 0
  n = len(b)
  within = math.sqrt(np.nansum(np.square(se))) / n if np.isfinite(se).any() else float('nan')
  if n >= 2:
    between = float(np.std(b, ddof=1) / math.sqrt(n))
    return float(np.mean(b)), float(np.nanmax([between, within])), n
  return b[0], within, 1


def run_slopes(runs_t, runs_y, t_b: float, frac: float, rho: float) -> tuple[list, list]:
  """Per run with >= 2 evals in the window: its slope and that slope's standard error."""
  b, se = [], []
  for t, y in zip(runs_t, runs_y):
    t, y = np.asarray(t, np.float64), np.asarray(y, np.float64)
    k = window(t, t_b, frac)
    if k.size >= 2:
      s, e = _ols(t[k], y[k])
      b.append(s)
      # Serial correlation: the OLS error of a trend under AR(1) noise grows like the error of a
      # mean, by about sqrt(ar_factor) (conservative for short windows).
      se.append(e * math.sqrt(noise.ar_factor(rho, k.size)))
  return b, se


def _interp(ratios, vals_K, e, r_G):
  u = ratios ** e
  return np.interp(r_G ** e, u, vals_K)


def _largest(ratios, ok_G, r_G):
  """(CMR, censor) from a feasibility mask on the R grid (censor as cmr.CENSOR)."""
  if ok_G[-1]:
    return float(ratios[-1]), 1
  if not ok_G.any():
    return float('nan'), 2
  return float(r_G[int(np.flatnonzero(ok_G)[-1])]), 0


def cmrs(ratios, m_K, g_K, e, eps):
  """(condition-A CMR, censor), (Definition-2 CMR, censor), which condition decides Def. 2."""
  r_G = np.linspace(ratios[0], ratios[-1], N_GRID)
  r_G[-1] = ratios[-1]
  ok_a = _interp(ratios, m_K, e, r_G) <= eps
  ok_b = _interp(ratios, g_K, e, r_G) <= 0
  a, za = _largest(ratios, ok_a, r_G)
  d, zd = _largest(ratios, ok_a & ok_b, r_G)
  if zd == 1:
    decides = 'none (every trained ratio feasible)'
  elif za == zd and (za == 2 or abs(a - d) < 1e-12):
    decides = 'A'
  else:
    decides = 'B'
  return (a, za), (d, zd), decides


def _draws(mean_K, se_K, runs_K, seeds, z_DxK):
  """D Monte-Carlo draws of K values: mean + the seed part (each curve's per-run deviations
  times its stage-1 scales, averaged over runs) + normal noise of the SE the seed spread falls
  short of (all of it with one run)."""
  out = mean_K[None] + np.zeros_like(z_DxK)
  for j, (vals, (_, scale)) in enumerate(zip(runs_K, seeds)):
    vals = np.asarray(vals, np.float64)
    extra = np.nan_to_num(se_K[j])
    if vals.size >= 2 and scale.shape[1] == vals.size:
      dev = vals - vals.mean()
      out[:, j] += scale @ dev / vals.size
      between = float(np.std(vals, ddof=1) / math.sqrt(vals.size))
      extra = math.sqrt(max(extra * extra - between * between, 0.0))
    out[:, j] += extra * z_DxK[:, j]
  return out


def at_budget(size, t_b: float, e: float, rho: float, opts, rng, shared: bool = False) -> dict:
  """A size's model-free CMRs at budget t_b (evals with T <= t_b of `size`, a table.Size).
  shared: the data orders are shared across ratios (the Monte Carlo's seed weights too)."""
  lam, eps = float(opts.lam), float(opts.eps)
  rows, lev_runs, g_runs = [], [], []
  for c in size.curves:
    ts = [r.t_N for r in c.runs]
    gen = [r.gen_N for r in c.runs]
    bg = run_slopes(ts, gen, t_b, opts.slope_window, rho)
    bd = run_slopes(ts, [r.dom_N for r in c.runs], t_b, opts.slope_window, rho)
    rows.append((noise.smoothed(ts, gen, t_b, opts.smooth_k, rho), _pooled(*bg), _pooled(*bd)))
    lev_runs.append([float(y.mean()) for y in noise.last_evals(ts, gen, t_b, opts.smooth_k)])
    g_runs.append([d + lam * g for d, g in zip(bd[0], bg[0])] if len(bd[0]) == len(bg[0])
                  else [])
  m = np.array([r[0][0] for r in rows])
  m_se = np.array([r[0][1] for r in rows])
  sg, sg_se = np.array([r[1][0] for r in rows]), np.array([r[1][1] for r in rows])
  sd, sd_se = np.array([r[2][0] for r in rows]), np.array([r[2][1] for r in rows])
  g = sd + lam * sg
  g_se = np.hypot(np.nan_to_num(sd_se), lam * np.nan_to_num(sg_se))
  ratios = size.ratios
  (a, za), (d, zd), decides = cmrs(ratios, m, g, e, eps)
  seeds = bootstrap.seed_draws([[r.seed for r in c.runs] for c in size.curves], N_DRAWS,
                               int(rng.integers(2 ** 31)), shared, 'wild_t')
  z = rng.standard_normal((2, N_DRAWS, ratios.size))
  m_d = _draws(m, m_se, lev_runs, seeds, z[0])
  g_d = _draws(g, g_se, g_runs, seeds, z[1])
  draws = [cmrs(ratios, mm, gg, e, eps) for mm, gg in zip(m_d, g_d)]
  out = {}
  for key, (est, cen), k in (('condition_A', (a, za), 0), ('def2', (d, zd), 1)):
    rep = np.array([dr[k][0] for dr in draws])
    cz = np.array([dr[k][1] for dr in draws])
    lo, hi, _, widened = bootstrap.interval(np.where(cz == 2, bootstrap.BELOW, rep),
                                            bootstrap.BELOW if cen == 2 else est,
                                            opts.ci_level)
    out[key] = dict(cmr=est, censor=cen, lo=lo, hi=hi, widened=widened)
  out.update(T=t_b, decides=decides, dL_general=m, dL_general_se=m_se, slope_general=sg,
             slope_general_se=sg_se, slope_domain=sd, slope_domain_se=sd_se, g=g, g_se=g_se,
             feasible_A=m <= eps, feasible_B=g <= 0, n_runs=[r[0][2] for r in rows],
             exponent=e)
  return out


def disagree(a, a_lo, a_hi, b, b_lo, b_hi) -> bool:
  """Two estimates differ by more than their uncertainty: the gap exceeds the root sum of
  squares of the half-widths facing each other (conservative: they share the data)."""
  if any(v is None or not np.isfinite(v) for v in (a, b)):
    return False
  if a >= b:
    h = math.hypot(a - a_lo, b_hi - b) if np.isfinite(a_lo) and np.isfinite(b_hi) else np.inf
  else:
    h = math.hypot(a_hi - a, b - b_lo) if np.isfinite(a_hi) and np.isfinite(b_lo) else np.inf
  return bool(abs(a - b) > h)
