"""Eq. 6 on every curve of one budget, and its bootstrap (the steps of budgetfits.fit_budget):

  prepare (padded arrays) -> fit_eq6 (noise-aware, bounded, flagged; the general-loss form never
  monotone where the evals turn) -> replicate (bootstrap refits; seed indices drawn jointly when
  data orders are shared).
"""

import dataclasses
import math

import numpy as np

from mixlaw.laws import bootstrap
from mixlaw.laws import cmr as cmr_lib
from mixlaw.laws import curves as curves_lib
from mixlaw.laws import fit as fit_lib
from mixlaw.laws import forms as forms_lib
from mixlaw.laws import modelfree
from mixlaw.laws import noise
from mixlaw.laws.options import FitOptions

N_GRID = 64  # points of every fitted-curve evaluation grid in fits.json.
WHICH = ('general', 'domain')

# ----------------------------------------------------------------------------- the padded arrays

@dataclasses.dataclass
class Data:
  """Every curve's points in padded C x N arrays (runs back to back; run_CxN = run index)."""
  sweep: curves_lib.Sweep
  curves: list
  size_of: np.ndarray
  t_CxN: np.ndarray
  w_CxN: np.ndarray
  run_CxN: np.ndarray
  y: dict

  def of_size(self, i):
    return np.flatnonzero(self.size_of == i)


def prepare(sweep) -> Data:
  pairs = sweep.curves()
  curves = [c for _, c in pairs]
  n = max(c.t_N.size for c in curves)
  t, w, run = np.ones((len(curves), n)), np.zeros((len(curves), n)), -np.ones((len(curves), n))
  y = {k: np.ones((len(curves), n)) for k in WHICH}
  for i, c in enumerate(curves):
    k = c.t_N.size
    t[i, :k], w[i, :k], run[i, :k] = c.t_N, 1.0, c.run_of()
    y['general'][i, :k], y['domain'][i, :k] = c.gen_N, c.dom_N
  return Data(sweep, curves, np.array([i for i, _ in pairs]), t, w, run.astype(int), y)


# ----------------------------------------------------------------------------- Eq. 6 point fits

@dataclasses.dataclass
class Eq6:
  """Point fits. params: which -> C x P (general in eq6_gen's layout; its one-term case has
  a3 = 0). two_term_C: the general fit keeps both terms. fitted: values at the data points."""
  params: dict
  two_term_C: np.ndarray
  results: dict  # 'general2', 'general1', 'domain' -> FitResult
  sigma: dict
  delta: dict
  rho_S: np.ndarray
  block_C: np.ndarray
  fitted: dict
  run_fitted: dict  # each run's own fit at its points (= fitted with one run).
  flags: dict  # which -> [[reason, ...] per curve]
  turn_C: np.ndarray  # the general evals rise then fall (turns()): never one term there.
  late_C: np.ndarray  # the one-term fit's slope at T_max contradicts the measured late slope.


def one_term_as_eq6(p_xP):
  """a T^s + b (power layout a, s, b) in eq6_gen's layout: a2 = a, s2 = s, a3 = 0, s3 = s."""
  p = np.asarray(p_xP)
  return np.stack([p[..., 0], p[..., 1], np.zeros_like(p[..., 0]), p[..., 1], p[..., 2]], -1)


def _aicc(sse, n, k, rho):
  """AICc with the effective sample size of AR(1) noise (serially correlated evals carry less
  information than independent ones)."""
  n_eff = np.maximum(n * (1 - rho) / (1 + rho), k + 2.0)
  with np.errstate(divide='ignore'):
    return n_eff * np.log(np.maximum(sse, 1e-300) / n) + 2 * k + 2 * k * (k + 1) / (n_eff - k - 1)


def _select(r2, r1, n_C, rho_C, terms, turn_C=None):
  """Two terms or one per curve: as options.general_terms says, or with 'auto' two where the
  evals turn (turn_C: the monotone one-term law cannot represent them) or where the data
  support them over the one-term case (lower AICc). Where one failed, the other."""
  ok2 = np.all(np.isfinite(r2.params_CxP), axis=1)
  ok1 = np.all(np.isfinite(r1.params_CxP), axis=1)
  if terms == 'auto':
    two = _aicc(r2.mse_C * n_C, n_C, 5, rho_C) < _aicc(r1.mse_C * n_C, n_C, 3, rho_C)
    if turn_C is not None:
      two = two | turn_C
  else:
    two = np.full(n_C.shape, terms == 2)
  return np.where(ok1 & ok2, two, ok2)


def _flags(res, i, form, y_N, fitted_grid, sigma):
  """Why a fit should not be trusted blindly: at a bound, off the data's range, unconverged."""
  out = []
  for k in res.bounded(i):
    lo, hi = res.lo_CxP[i][form.params.index(k)], res.hi_CxP[i][form.params.index(k)]
    what = ('amplitude bound: |term| <= %g x max|dL|' % form.amp_bound
            if form.kinds[k] == 'linear' else f'box [{lo:g}, {hi:g}]')
    out.append(f'at bound: {k} = {res.params_CxP[i][form.params.index(k)]:.4g} ({what})')
  span = float(y_N.max() - y_N.min())
  margin = max(float(sigma) if np.isfinite(sigma) else 0.0, 0.1 * span)
  lo, hi = y_N.min() - margin, y_N.max() + margin
  off = (fitted_grid < lo) | (fitted_grid > hi)
  if off.any():
    out.append(f'leaves the data range [{y_N.min():.3g}, {y_N.max():.3g}] (+-{margin:.2g}) '
               f'inside [T_min, T_max]: {float(fitted_grid[off][0]):.3g}')
  if not res.converged_C[i]:
    out += [f for f in res.flags(i) if not f.startswith('off range')] or ['not converged']
  return out


def turns(curve, sigma: float, rho: float, z: float, n_windows: int = 6):
  """(turns, fall, se): the curve's evals rise then fall. Each run's evals are cut into
  n_windows consecutive windows; window means are averaged over runs; the evals turn when the
  highest window is neither the first (a curve that falls throughout is monotone) nor the last
  and the fall from it to the last window exceeds z standard errors (eval noise sigma with
  AR(1) correlation rho; the max of noisy means is biased up, so this errs towards 'turns',
  i.e. towards the form that can turn)."""
  m = min(run.t_N.size for run in curve.runs)
  w = max(2, min(n_windows, m // 2))
  if m < 4 or not np.isfinite(sigma):
    return False, float('nan'), float('nan')
  means = np.mean([[v.mean() for v in np.array_split(run.gen_N[-m:], w)]
                   for run in curve.runs], axis=0)
  k = m // w
  se_w = sigma * math.sqrt(noise.ar_factor(rho, k) / k / len(curve.runs))
  top = int(np.argmax(means))
  fall, se = float(means[top] - means[-1]), math.sqrt(2.0) * se_w
  return bool(0 < top < w - 1 and fall > z * se), fall, se


def contradicts_late_slope(curve, p1_P, t_b: float, frac: float, rho: float, z: float) -> bool:
  """The evals fall over the trailing window ending at t_b (modelfree.slope: least squares per
  run; standard error across seeds and from serially correlated noise) and the one-term
  (monotone) general fit's slope at t_b lies above that slope by more than z standard errors:
  the late evals reject the monotone form (a turn too late or too shallow for the window
  test, which a one-term fit reads as still rising)."""
  if not np.all(np.isfinite(p1_P)):
    return False
  s, se, _ = modelfree.slope([r.t_N for r in curve.runs], [r.gen_N for r in curve.runs], t_b,
                             frac, rho)
  if not (np.isfinite(s) and np.isfinite(se) and se > 0):
    return False
  fitted = float(cmr_lib.eq6_slope('general', one_term_as_eq6(p1_P[None])[0], t_b))
  return bool(s < 0 and fitted - s > z * se)


def _size_rho(data, i, resid, n_params) -> float:
  """Bias-corrected lag-1 correlation of size i's eval noise, from residuals {which: C x N}
  within runs: the larger of general and domain."""
  w = data.w_CxN
  return max(noise.lag1([resid[k][j][(data.run_CxN[j] == r) & (w[j] > 0)]
                         for j in data.of_size(i) for r in range(len(data.curves[j].runs))], p)
             for k, p in n_params.items())


def fit_eq6(data: Data, opts: FitOptions) -> Eq6:
  """Eq. 6 per curve: Huber delta = huber_c x sigma (second differences) per curve; the
  general loss with one or two terms (options.general_terms); bounded; flagged. Then each
  run's own fit (what the bootstrap keeps of a seed) and the eval noise's serial correlation."""
  sweep, t, w = data.sweep, data.t_CxN, data.w_CxN
  sigma = {k: np.array([noise.sigma_2nd([getattr(r, attr) for r in c.runs])
                        for c in data.curves]) for k, attr in (('general', 'gen_N'),
                                                               ('domain', 'dom_N'))}
  floor = {k: max(float(np.nanmedian(v)) * 1e-3, 1e-12) if np.isfinite(v).any() else 1e-6
           for k, v in sigma.items()}  # a noiseless curve: a tiny delta, i.e. least squares.
  delta = {k: opts.huber_c * np.where(np.isfinite(v) & (v > 0), np.maximum(v, floor[k]),
                                      floor[k] * 1e3) for k, v in sigma.items()}
  kw = dict(n_starts=opts.n_starts, what='Eq. 6 curve')
  res = {'domain': fit_lib.fit_curves('eq6_dom', {'T': t}, data.y['domain'], w,
                                      huber_delta=delta['domain'], **kw)}
  for key, form, terms in (('general2', 'eq6_gen', 2), ('general1', 'power', 1)):
    res[key] = (fit_lib.fit_curves(form, {forms_lib.get_form(form).variables[0]: t},
                                   data.y['general'], w, huber_delta=delta['general'], **kw)
                if opts.general_terms in ('auto', terms) else _unfitted(form, len(data.curves)))
  fitted = {'general2': cmr_lib.eq6_at('general', res['general2'].params_CxP[:, None], t),
            'general1': cmr_lib.eq6_at('general', one_term_as_eq6(
                res['general1'].params_CxP)[:, None], t),
            'domain': cmr_lib.eq6_at('domain', res['domain'].params_CxP[:, None], t)}
  gkey, gp = ('general1', 3) if opts.general_terms == 1 else ('general2', 5)
  # Each run's own fits in every variant (a curve with one run: its fit). The serial correlation
  # of the eval noise is read from residuals about them: residuals about the pooled fit also
  # carry each seed's smooth deviation, which reads as strong correlation.
  runs = _run_fits(data, res, delta, fitted)
  rho_S = np.array([_size_rho(data, i, {k: data.y[k] - runs[key] for k, key in
                                        (('general', gkey), ('domain', 'domain'))},
                              dict(general=gp, domain=3)) for i in range(len(sweep.sizes))])
  turn = np.array([turns(c, eq6_sigma, float(rho_S[data.size_of[j]]), opts.turn_z)[0]
                   for j, (c, eq6_sigma) in enumerate(zip(data.curves, sigma['general']))])
  late = np.array([contradicts_late_slope(
      c, res['general1'].params_CxP[j], sweep.sizes[data.size_of[j]].t_max, opts.slope_window,
      float(rho_S[data.size_of[j]]), opts.turn_z) for j, c in enumerate(data.curves)])
  two = _select(res['general2'], res['general1'], w.sum(axis=1), rho_S[data.size_of],
                opts.general_terms, turn | late)
  params = {'general': np.where(two[:, None], res['general2'].params_CxP,
                                one_term_as_eq6(res['general1'].params_CxP)),
            'domain': res['domain'].params_CxP}
  fit_vals = {'general': np.where(two[:, None], fitted['general2'], fitted['general1']),
              'domain': fitted['domain']}
  run_vals = {'general': np.where(two[:, None], runs['general2'], runs['general1']),
              'domain': runs['domain']}
  if opts.general_terms == 'auto' and any(len(c.runs) > 1 for c in data.curves):
    resid = {k: data.y[k] - run_vals[k] for k in WHICH}
    rho_S = np.array([_size_rho(data, i, resid, dict(general=gp, domain=3))
                      for i in range(len(sweep.sizes))])
  m = np.array([np.mean([r.t_N.size for r in c.runs]) for c in data.curves])
  block = np.array([noise.block_length(rho_S[s], int(mm)) for s, mm in zip(data.size_of, m)])
  return Eq6(params, two, res, sigma, delta, rho_S, block, fit_vals, run_vals,
             _all_flags(data, res, two, params, sigma), turn, late)


def _all_flags(data, res, two, params, sigma) -> dict:
  """which -> per curve the reasons its chosen fit should not be trusted blindly (_flags)."""
  flags = {'general': [], 'domain': []}
  for j, c in enumerate(data.curves):
    grid = np.geomspace(c.t_N.min(), data.sweep.sizes[data.size_of[j]].t_max, N_GRID)
    for k, key, form in (('general', 'general2' if two[j] else 'general1',
                          'eq6_gen' if two[j] else 'power'), ('domain', 'domain', 'eq6_dom')):
      y = getattr(c, 'gen_N' if k == 'general' else 'dom_N')
      flags[k].append(_flags(res[key], j, forms_lib.get_form(form), y,
                             cmr_lib.eq6_at(k, params[k][j], grid), sigma[k][j]))
  return flags


def _run_fits(data, res, delta, fitted) -> dict:
  """Each run's own Eq. 6 fit in every variant ('general2', 'general1', 'domain'; warm-started
  at its curve's fit) at its points: key -> C x N. A curve with one run: its fit. What the
  bootstrap keeps of a run (its seed's smooth deviation) and what it redraws (the eval noise)."""
  out = {k: v.copy() for k, v in fitted.items()}
  rows = [(j, r) for j, c in enumerate(data.curves) if len(c.runs) >= 2
          for r in range(len(c.runs))]
  if not rows:
    return out
  m = max(data.curves[j].runs[r].t_N.size for j, r in rows)
  t, w = np.ones((len(rows), m)), np.zeros((len(rows), m))
  y = {k: np.zeros((len(rows), m)) for k in WHICH}
  for i, (j, r) in enumerate(rows):
    run = data.curves[j].runs[r]
    k = run.t_N.size
    t[i, :k], w[i, :k], y['general'][i, :k], y['domain'][i, :k] = run.t_N, 1, run.gen_N, run.dom_N
  js = np.array([j for j, _ in rows])
  for which, key, form in (('domain', 'domain', 'eq6_dom'), ('general', 'general2', 'eq6_gen'),
                           ('general', 'general1', 'power')):
    ok = np.all(np.isfinite(res[key].params_CxP[js]), axis=1)
    sel = np.flatnonzero(ok)
    if not sel.size:
      continue
    f = forms_lib.get_form(form)
    r = fit_lib.fit_curves(f, {f.variables[0]: t[sel]}, y[which][sel], w[sel],
                           huber_delta=delta[which][js[sel]], what='run',
                           init_CxSxP=res[key].params_CxP[js[sel]][:, None])
    p = r.params_CxP if key != 'general1' else one_term_as_eq6(r.params_CxP)
    vals = cmr_lib.eq6_at(which, p[:, None], t[sel])
    for i, v in zip(sel, vals):
      j, run = rows[i]
      pts = np.flatnonzero(data.run_CxN[j] == run)
      out[key][j, pts] = v[:pts.size]
  return out


def _unfitted(form, c):
  """A FitResult of NaNs: a variant the options leave out (general_terms)."""
  p = len(forms_lib.get_form(form).params)
  nan = np.full((c, p), np.nan)
  return fit_lib.FitResult(form, forms_lib.get_form(form).params, nan, np.full(c, np.nan),
                           np.full(c, np.nan), np.full(c, np.nan), np.zeros(c, bool),
                           np.zeros(c, int), np.zeros(c, int), np.zeros((c, p), bool), nan, nan)


# ----------------------------------------------------------------------------- bootstrap refits

@dataclasses.dataclass
class Boot:
  """Replicates of every Eq. 6 fit: which -> B x C x P, index 0 = the point estimate."""
  params: dict
  ok_BxC: np.ndarray  # the replicate's fits are finite.
  two_term_BxC: np.ndarray
  n_boot: int


def replicate(data: Data, eq6: Eq6, opts: FitOptions, n_boot: int | None = None,
              seeds: list | None = None) -> Boot:
  """Two-stage bootstrap (bootstrap.py): vary the seeds (seeds: per curve its stage-1 draw,
  default drawn independently per curve), redraw each run's residuals as serially correlated
  noise; refit Eq. 6 on every replicate, warm-started at the point fit (with
  general_terms 'auto' both general variants, reselected per replicate)."""
  c = len(data.curves)
  params = {k: eq6.params[k][None] for k in WHICH}
  two = eq6.two_term_C[None]
  b = opts.n_boot if n_boot is None else n_boot
  if not b:
    return Boot(params, np.ones((1, c), bool), two, 0)
  if seeds is None:
    seeds = bootstrap.seed_draws(data.sweep.seed_labels(), b, opts.seed, False,
                                 opts.seed_resampling)
  reps = bootstrap.draw(data.run_CxN, data.w_CxN, eq6.fitted, eq6.run_fitted, data.y, b,
                        opts.seed, rho_C=eq6.rho_S[data.size_of],
                        n_params=dict(general=np.where(eq6.two_term_C, 5, 3), domain=3),
                        blocks_C=eq6.block_C, mode=opts.eval_resampling, seeds=seeds)
  t = np.broadcast_to(data.t_CxN, (b,) + data.t_CxN.shape).reshape(b * c, -1)
  w = reps.w_BxCxN.reshape(b * c, -1)
  tile = lambda a: np.broadcast_to(a, (b,) + a.shape).reshape((b * c,) + a.shape[1:])
  out = {}
  for key, form, which in (('general2', 'eq6_gen', 'general'), ('general1', 'power', 'general'),
                           ('domain', 'eq6_dom', 'domain')):
    point = eq6.results[key].params_CxP
    if not np.isfinite(point).any():  # a variant general_terms leaves out.
      out[key] = _unfitted(form, b * c)
      continue
    f = forms_lib.get_form(form)
    init = np.where(np.isfinite(point), point, fit_lib.start_grid(f, 1)[0])  # failed fits
    out[key] = fit_lib.fit_curves(
        f, {f.variables[0]: t}, reps.y_BxCxN[which].reshape(b * c, -1), w,
        huber_delta=tile(eq6.delta[which]), init_CxSxP=tile(init)[:, None],
        what='bootstrap curve', polish_iter=fit_lib.POLISH_ITER_BOOT)
  n = w.sum(axis=1)
  sel = _select(out['general2'], out['general1'], n, tile(eq6.rho_S[data.size_of]),
                opts.general_terms, tile(eq6.turn_C | eq6.late_C))
  gen = np.where(sel[:, None], out['general2'].params_CxP,
                 one_term_as_eq6(out['general1'].params_CxP))
  dom = out['domain'].params_CxP
  params = {'general': np.concatenate([params['general'], gen.reshape(b, c, -1)]),
            'domain': np.concatenate([params['domain'], dom.reshape(b, c, -1)])}
  ok = np.all(np.isfinite(params['general']), axis=2) & np.all(np.isfinite(params['domain']),
                                                                axis=2)
  return Boot(params, ok, np.concatenate([two, sel.reshape(b, c)]), b)
