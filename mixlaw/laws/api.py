"""Entry points: results table -> fits.json dict; one form on a CSV; the forms.

`fit_table` runs named stages, each returning a dataclass:
  load (table.py) -> prepare (padded arrays) -> fit_eq6 (noise-aware, bounded, flagged) ->
  replicate (bootstrap refits) -> interp_exponents -> cmr_stage (Definition 2 at every budget)
  -> model_free -> cmr_laws -> ratio_tables -> surface -> checks (trends, gates) -> to_json.
"""

import csv
import dataclasses
import json
import logging
import math
import os
import time

import numpy as np

from mixlaw import results
from mixlaw.laws import bootstrap
from mixlaw.laws import checks
from mixlaw.laws import cmr as cmr_lib
from mixlaw.laws import decisions
from mixlaw.laws import fit as fit_lib
from mixlaw.laws import budgets as budgets_lib
from mixlaw.laws import forms as forms_lib
from mixlaw.laws import modelfree
from mixlaw.laws import noise
from mixlaw.laws import surface as surface_lib
from mixlaw.laws import table as table_lib
from mixlaw.laws.options import FitError, FitOptions, LAM_RANGE

SCHEMA_VERSION = 3
log = logging.getLogger(__name__)
N_GRID = 64  # points of every fitted-curve evaluation grid in fits.json.
WHICH = ('general', 'domain')


def num(x):
  """JSON-safe float: NaN/inf -> None."""
  if x is None:
    return None
  x = float(x)
  return x if math.isfinite(x) else None


def nums(a):
  return [num(v) for v in np.asarray(a, np.float64).ravel()]


def _pdict(names, values):
  return {k: num(v) for k, v in zip(names, values)}


# ----------------------------------------------------------------------------- stage: prepare

@dataclasses.dataclass
class Data:
  """Every curve's points in padded C x N arrays (runs back to back; run_CxN = run index)."""
  sweep: table_lib.Sweep
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


# ----------------------------------------------------------------------------- stage: Eq. 6

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


def _one_term_as_eq6(p_xP):
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
    out.append('not converged (tight tolerance not met)')
  return out


def turns(curve, sigma: float, rho: float, z: float, n_windows: int = 6):
  """(turns, fall, se): the curve's evals rise then fall. Each run's evals are cut into
  n_windows consecutive windows; window means are averaged over runs; the evals turn when the
  highest window is not the last and the fall from it to the last window exceeds z standard
  errors (eval noise sigma with AR(1) correlation rho; the max of noisy means is biased up, so
  this errs towards 'turns', i.e. towards the form that can turn)."""
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
  return bool(top < w - 1 and fall > z * se), fall, se


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
            'general1': cmr_lib.eq6_at('general', _one_term_as_eq6(
                res['general1'].params_CxP)[:, None], t),
            'domain': cmr_lib.eq6_at('domain', res['domain'].params_CxP[:, None], t)}
  gkey, gp = ('general1', 3) if opts.general_terms == 1 else ('general2', 5)
  resid = {'general': data.y['general'] - fitted[gkey], 'domain': data.y['domain'] -
           fitted['domain']}
  rho_S = np.array([_size_rho(data, i, resid, dict(general=gp, domain=3))
                    for i in range(len(sweep.sizes))])
  turn = np.array([turns(c, eq6_sigma, float(rho_S[data.size_of[j]]), opts.turn_z)[0]
                   for j, (c, eq6_sigma) in enumerate(zip(data.curves, sigma['general']))])
  two = _select(res['general2'], res['general1'], w.sum(axis=1), rho_S[data.size_of],
                opts.general_terms, turn)
  params = {'general': np.where(two[:, None], res['general2'].params_CxP,
                                _one_term_as_eq6(res['general1'].params_CxP)),
            'domain': res['domain'].params_CxP}
  fit_vals = {'general': np.where(two[:, None], fitted['general2'], fitted['general1']),
              'domain': fitted['domain']}
  run_vals = _run_fits(data, res, two, delta, fit_vals)
  if any(len(c.runs) > 1 for c in data.curves):  # seeds' own deviations are not eval noise.
    resid = {k: data.y[k] - run_vals[k] for k in WHICH}
    rho_S = np.array([_size_rho(data, i, resid, dict(general=gp, domain=3))
                      for i in range(len(sweep.sizes))])
  m = np.array([np.mean([r.t_N.size for r in c.runs]) for c in data.curves])
  block = np.array([noise.block_length(rho_S[s], int(mm)) for s, mm in zip(data.size_of, m)])
  flags = {'general': [], 'domain': []}
  for j, c in enumerate(data.curves):
    grid = np.geomspace(c.t_N.min(), sweep.sizes[data.size_of[j]].t_max, N_GRID)
    for k, key, form in (('general', 'general2' if two[j] else 'general1',
                          'eq6_gen' if two[j] else 'power'), ('domain', 'domain', 'eq6_dom')):
      y = getattr(c, 'gen_N' if k == 'general' else 'dom_N')
      flags[k].append(_flags(res[key], j, forms_lib.get_form(form), y,
                             cmr_lib.eq6_at(k, params[k][j], grid), sigma[k][j]))
  return Eq6(params, two, res, sigma, delta, rho_S, block, fit_vals, run_vals, flags, turn)


def _run_fits(data, res, two, delta, fit_vals) -> dict:
  """Each run's own Eq. 6 fit (its curve's form, warm-started at the curve's fit) at its points:
  which -> C x N. A curve with one run: its fit. What the bootstrap keeps of a run (its seed's
  smooth deviation) and what it redraws (the residual eval noise)."""
  out = {k: v.copy() for k, v in fit_vals.items()}
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
    sel = np.flatnonzero(np.ones(len(rows), bool) if which == 'domain'
                         else two[js] == (key == 'general2'))
    if not sel.size:
      continue
    f = forms_lib.get_form(form)
    r = fit_lib.fit_curves(f, {f.variables[0]: t[sel]}, y[which][sel], w[sel],
                           huber_delta=delta[which][js[sel]], what='run',
                           init_CxSxP=res[key].params_CxP[js[sel]][:, None])
    p = r.params_CxP if key != 'general1' else _one_term_as_eq6(r.params_CxP)
    vals = cmr_lib.eq6_at(which, p[:, None], t[sel])
    for i, v in zip(sel, vals):
      j, run = rows[i]
      pts = np.flatnonzero(data.run_CxN[j] == run)
      out[which][j, pts] = v[:pts.size]
  return out


def _unfitted(form, c):
  """A FitResult of NaNs: a variant the options leave out (general_terms)."""
  p = len(forms_lib.get_form(form).params)
  nan = np.full((c, p), np.nan)
  return fit_lib.FitResult(form, forms_lib.get_form(form).params, nan, np.full(c, np.nan),
                           np.full(c, np.nan), np.full(c, np.nan), np.zeros(c, bool),
                           np.zeros(c, int), np.zeros(c, int), np.zeros((c, p), bool), nan, nan)


# ----------------------------------------------------------------------------- stage: bootstrap

@dataclasses.dataclass
class Boot:
  """Replicates of every Eq. 6 fit: which -> B x C x P, index 0 = the point estimate."""
  params: dict
  ok_BxC: np.ndarray  # the replicate's fits are finite.
  two_term_BxC: np.ndarray
  n_boot: int


def multiplicities(sweep, n_boot: int, seed: int, shared: bool) -> list:
  """Per curve, B x runs multiplicities of whole runs for the bootstrap. shared: one draw of
  the seed labels per replicate, applied to every (size, R) (data orders shared across cells,
  so the seeds are paired); a curve that draws none of its labels is drawn on its own."""
  rng = np.random.default_rng([seed, 7])
  curves = [c for _, c in sweep.curves()]
  labels = sorted({r.seed for c in curves for r in c.runs})
  joint = np.stack([np.bincount(rng.integers(0, len(labels), len(labels)),
                                minlength=len(labels)) for _ in range(n_boot)]) if n_boot else None
  out = []
  for c in curves:
    k = len(c.runs)
    own = np.stack([np.bincount(rng.integers(0, k, k), minlength=k) for _ in range(n_boot)])
    if shared and k >= 2:
      m = joint[:, [labels.index(r.seed) for r in c.runs]]
      m = np.where(m.sum(axis=1, keepdims=True) > 0, m, own)
    else:
      m = own
    out.append(m if k >= 2 else np.ones((n_boot, k), int))
  return out


def shared_orders(sweep, option: str) -> bool:
  """Whether the seeds are paired across (size, R): the option, or with 'auto' whether every
  curve has the same seed labels (a sweep with data seed = f(CPT seed) only)."""
  if option != 'auto':
    return option == 'shared'
  sets = {tuple(sorted(r.seed for r in c.runs)) for _, c in sweep.curves()}
  return len(sets) == 1 and len(next(iter(sets))) >= 2


def replicate(data: Data, eq6: Eq6, opts: FitOptions, n_boot: int | None = None,
              mult: list | None = None) -> Boot:
  """Two-stage bootstrap (bootstrap.py): resample runs, redraw each run's residuals as serially
  correlated noise; refit Eq. 6 on every replicate, warm-started at the point fit (with
  general_terms 'auto' both general variants, reselected per replicate)."""
  c = len(data.curves)
  params = {k: eq6.params[k][None] for k in WHICH}
  two = eq6.two_term_C[None]
  b = opts.n_boot if n_boot is None else n_boot
  if not b:
    return Boot(params, np.ones((1, c), bool), two, 0)
  reps = bootstrap.draw(data.run_CxN, data.w_CxN, eq6.fitted, eq6.run_fitted, data.y, b,
                        opts.seed, rho_C=eq6.rho_S[data.size_of],
                        n_params=dict(general=np.where(eq6.two_term_C, 5, 3), domain=3),
                        blocks_C=eq6.block_C, mode=opts.eval_resampling, mult=mult)
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
                opts.general_terms, tile(eq6.turn_C))
  gen = np.where(sel[:, None], out['general2'].params_CxP,
                 _one_term_as_eq6(out['general1'].params_CxP))
  dom = out['domain'].params_CxP
  params = {'general': np.concatenate([params['general'], gen.reshape(b, c, -1)]),
            'domain': np.concatenate([params['domain'], dom.reshape(b, c, -1)])}
  ok = np.all(np.isfinite(params['general']), axis=2) & np.all(np.isfinite(params['domain']),
                                                                axis=2)
  return Boot(params, ok, np.concatenate([two, sel.reshape(b, c)]), b)


# ----------------------------------------------------------------------------- stage: exponents

def _ratio_law_rows(x_rows, y_rows, w_rows, init=None, polish_iter=fit_lib.POLISH_ITER):
  k = max(len(x) for x in x_rows)
  x, y, w = np.ones((len(x_rows), k)), np.ones((len(x_rows), k)), np.zeros((len(x_rows), k))
  for i, (xr, yr, wr) in enumerate(zip(x_rows, y_rows, w_rows)):
    x[i, :len(xr)], y[i, :len(xr)], w[i, :len(xr)] = xr, yr, wr
  return fit_lib.fit_curves('ratio_law', {'R': x}, y, w, init_CxSxP=init, what='ratio-law fit',
                            polish_iter=polish_iter)


def interp_exponents(data: Data, boot: Boot) -> dict:
  """Ratio-law exponent e per (replicate, size) for each loss (cmr.interp_exponent; 1 with
  < 3 ratios). Replicates are warm-started from the point estimate's fit."""
  sizes, n_rep = data.sweep.sizes, 1 + boot.n_boot
  e = {k: np.ones((n_rep, len(sizes))) for k in WHICH}
  jobs = [(i, k) for i, s in enumerate(sizes) if len(s.curves) >= 3 for k in WHICH]
  if not jobs:
    return e
  vals = {(i, k): cmr_lib.eq6_at(k, boot.params[k][:, data.of_size(i)], sizes[i].t_max)
          for i, k in jobs}
  point = _ratio_law_rows([sizes[i].ratios for i, _ in jobs], [vals[j][0] for j in jobs],
                          [np.ones(len(sizes[i].ratios)) for i, _ in jobs])
  for j, (i, k) in enumerate(jobs):
    e[k][0, i] = cmr_lib.interp_exponent(point.params_CxP[j, 1], point.r2_C[j])
  if not boot.n_boot:
    return e
  where = [(b, j) for b in range(1, n_rep) for j in range(len(jobs))
           if np.all(np.isfinite(vals[jobs[j]][b]))]
  if where:
    r = _ratio_law_rows([sizes[jobs[j][0]].ratios for _, j in where],
                        [vals[jobs[j]][b] for b, j in where],
                        [np.ones(len(sizes[jobs[j][0]].ratios)) for _, j in where],
                        init=point.params_CxP[[j for _, j in where]][:, None],
                        polish_iter=fit_lib.POLISH_ITER_BOOT)
    ex = cmr_lib.interp_exponent(r.params_CxP[:, 1], r.r2_C)
    for (b, j), v in zip(where, ex):
      e[jobs[j][1]][b, jobs[j][0]] = v
  return e


# ----------------------------------------------------------------------------- stage: CMR

@dataclasses.dataclass
class SizeCMR:
  """One size's CMR analysis (cmr.family_analysis) plus its budgets and failed replicates."""
  budgets: np.ndarray
  out: dict
  bad_B: np.ndarray


def cmr_stage(data: Data, boot: Boot, e: dict, opts: FitOptions,
              budgets_of=None) -> list[SizeCMR]:
  """Definition 2 per size and replicate at the budgets budgets_of(size) (default: a grid
  over [T_min, T_max])."""
  lams = [float(opts.lam)] + [x for x in LAM_RANGE if x != float(opts.lam)]
  per_size = []
  for i, s in enumerate(data.sweep.sizes):
    idx = data.of_size(i)
    n_rep = 1 + boot.n_boot
    fam = dict(ratios_K=np.broadcast_to(s.ratios, (n_rep, s.ratios.size)),
               gen_KxP=boot.params['general'][:, idx], dom_KxP=boot.params['domain'][:, idx],
               e_gen=e['general'][:, i], e_dom=e['domain'][:, i])
    bad = ~boot.ok_BxC[:, idx].all(axis=1)
    fam = {k: np.where(bad.reshape((-1,) + (1,) * (np.ndim(v) - 1)), np.asarray(v)[:1], v)
           for k, v in fam.items()}
    bud = cmr_lib.budgets(s.t_lo, s.t_max) if budgets_of is None else budgets_of(s)
    out = cmr_lib.family_analysis(fam, lams, opts.eps, s.t_lo, s.t_max, bud)
    out['lams'] = lams
    for k, z in (('cmr_BxJ', 'censor_BxJ'), ('cmr_a_B', 'censor_a_B')):
      out[k][bad], out[z][bad] = np.nan, -1  # failed replicates: NaN, dropped with a count.
    per_size.append(SizeCMR(bud, out, bad))
  return per_size


def _ranked(cmr, censor):
  """CMR replicates for percentiles: censored below -> -inf, failed -> NaN."""
  return np.where(censor == 2, bootstrap.BELOW, cmr)


# ----------------------------------------------------------------------------- stage: CMR law

def _cmr_law(series_T, series_y, series_ok, init=None):
  """CMR-law fits of rows with >= 4 uncensored points; returns (FitResult | None, row mask)."""
  rows = np.flatnonzero(series_ok.sum(axis=1) >= 4)
  if not rows.size:
    return None, rows
  y = np.where(series_ok[rows], series_y[rows], 0.0)
  res = fit_lib.fit_curves('cmr_law', {'T': series_T[rows]}, y, series_ok[rows].astype(float),
                           what='CMR-law fit',
                           init_CxSxP=None if init is None else init[rows][:, None],
                           polish_iter=fit_lib.POLISH_ITER if init is None
                           else fit_lib.POLISH_ITER_BOOT)
  return res, rows


@dataclasses.dataclass
class Laws:
  point: object  # FitResult | None
  rows: np.ndarray  # sizes with a law
  params_SxP: np.ndarray
  boot_BxSxP: np.ndarray
  series_ok: np.ndarray


def cmr_laws(per_size: list[SizeCMR], n_boot: int) -> Laws:
  """CMR law per size (point estimate, then replicates warm-started from it)."""
  ser_T = np.stack([p.budgets for p in per_size])
  ser_y = np.stack([p.out['cmr_BxJ'][0] for p in per_size])
  ser_ok = np.stack([p.out['censor_BxJ'][0] == 0 for p in per_size])
  law, rows = _cmr_law(ser_T, ser_y, ser_ok)
  law_p = np.full((len(per_size), 3), np.nan)
  if law is not None:
    law_p[rows] = law.params_CxP
  boot = np.full((n_boot, len(per_size), 3), np.nan)
  if n_boot and law is not None:
    b_T = np.broadcast_to(ser_T, (n_boot,) + ser_T.shape).reshape(-1, ser_T.shape[1])
    b_y = np.stack([p.out['cmr_BxJ'][1:] for p in per_size], 1).reshape(-1, ser_T.shape[1])
    b_ok = np.stack([(p.out['censor_BxJ'][1:] == 0) & ~p.bad_B[1:, None] for p in per_size],
                    1).reshape(-1, ser_T.shape[1])
    init = np.broadcast_to(law_p, (n_boot,) + law_p.shape).reshape(-1, 3)
    b_ok &= np.isfinite(init).all(axis=1)[:, None]
    rb, rws = _cmr_law(b_T, b_y, b_ok, init=np.where(np.isfinite(init), init, 0))
    if rb is not None:
      flat = boot.reshape(-1, 3)
      flat[rws] = rb.params_CxP
      boot = flat.reshape(boot.shape)
  return Laws(law, rows, law_p, boot, ser_ok)


# ----------------------------------------------------------------------------- stage: ratio law

def ratio_tables(data: Data, eq6: Eq6, opts: FitOptions):
  """Ratio law on all ratios at T_max, and leave-one-ratio-out predictions (paper Table 2)."""
  sweep, laws, held = data.sweep, [], []
  jobs_all, jobs_out = [], []
  for i, s in enumerate(sweep.sizes):
    js = data.of_size(i)
    for k in WHICH:
      y = []
      for j in js:
        c = data.curves[j]
        if abs(c.final_t - s.t_max) <= 1e-9 * s.t_max:
          y.append(c.final_gen_loss if k == 'general' else c.final_dom_loss)
        else:  # the run went past the common budget: its Eq. 6 value at T_max.
          base = s.base_gen if k == 'general' else s.base_dom
          y.append(base + float(cmr_lib.eq6_at(k, eq6.params[k][j], s.t_max)))
      y = np.array(y)
      if js.size >= 3:
        jobs_all.append((s, k, y))
      if js.size >= 4:
        jobs_out += [(s, k, y, h) for h in range(js.size)]
  xs = [j[0].ratios for j in jobs_all] + [j[0].ratios for j in jobs_out]
  if not xs:
    return laws, held
  ys = [j[2] for j in jobs_all] + [j[2] for j in jobs_out]
  ws = [np.ones(len(r)) for r in xs]
  for n, (_, _, _, h) in enumerate(jobs_out):
    ws[len(jobs_all) + n][h] = 0.0
  r = _ratio_law_rows(xs, ys, ws)
  form = forms_lib.get_form('ratio_law')
  for m, (s, k, y) in enumerate(jobs_all):
    grid = np.linspace(s.ratios.min(), s.ratios.max(), N_GRID)
    laws.append(dict(size=s.name, which=k, loss='absolute validation loss at T_max',
                     T=s.t_max, ratios=nums(s.ratios), measured=nums(y),
                     params=_pdict(form.params, r.params_CxP[m]), mse=num(r.mse_C[m]),
                     r2=num(r.r2_C[m]), converged=bool(r.converged_C[m]),
                     at_bound=r.bounded(m), R_grid=nums(grid),
                     L_fit=nums(forms_lib.evaluate(form, r.params(m), R=grid))))
  for n, (s, k, y, h) in enumerate(jobs_out):
    m = len(jobs_all) + n
    pred = float(forms_lib.evaluate('ratio_law', r.params(m), R=s.ratios[h]))
    held.append(dict(size=s.name, which=k, heldout_ratio=float(s.ratios[h]),
                     measured=float(y[h]), predicted=num(pred),
                     rel_error=num((pred - y[h]) / y[h]), abs_error=num(pred - y[h]),
                     error_eps=num((pred - y[h]) / opts.eps),
                     extrapolated=bool(h in (0, s.ratios.size - 1)),
                     params=r.params(m), converged=bool(r.converged_C[m])))
  return laws, held


# ----------------------------------------------------------------------------- fit_table

@dataclasses.dataclass
class Analysis:
  """Every stage of one fit of a sweep (the full one, or one cut at a budget)."""
  sweep: table_lib.Sweep
  data: Data
  eq6: Eq6
  boot: Boot
  e: dict
  per_size: list  # SizeCMR at the sweep's own T_max per size.
  free: list  # modelfree.at_budget per size at its T_max.


def analyse(sweep, opts: FitOptions, n_boot: int, mult_of: dict) -> Analysis:
  """Eq. 6, bootstrap, exponents, Definition 2 and the model-free CMRs at each size's T_max.
  mult_of: (size, R) -> B x runs whole-run multiplicities (shared by every cut, so replicate b
  draws the same seeds at every budget)."""
  data = prepare(sweep)
  eq6 = fit_eq6(data, opts)
  mult = [mult_of[(c.size, c.ratio)][:n_boot] for c in data.curves]
  boot = replicate(data, eq6, opts, n_boot, mult)
  e = interp_exponents(data, boot)
  per_size = cmr_stage(data, boot, e, opts, budgets_of=lambda s: np.array([s.t_max]))
  rng = np.random.default_rng([opts.seed, 11])
  free = [modelfree.at_budget(s, s.t_max, float(e['general'][0, i]), float(eq6.rho_S[i]),
                              opts, rng) for i, s in enumerate(sweep.sizes)]
  return Analysis(sweep, data, eq6, boot, e, per_size, free)


def fit_table(table, options: FitOptions | None = None, **overrides) -> dict:
  """Fits everything in docs/laws.md to a results table; returns the JSON-able fits dict.

  table: column -> array mapping (dict, pandas DataFrame) or list of row dicts (results schema).
  options / overrides: FitOptions fields (options.py; None = the default).
  Stages: load -> for every budget fraction f (1 last): cut the evals at f T_max, analyse
  (Eq. 6, bootstrap, exponents, Definition 2, model-free) -> the CMR series and CMR laws from
  those refits -> leave-future-out -> ratio laws -> surface -> checks -> fits.json dict.
  """
  opts = FitOptions.make(options, **overrides)
  clock = _Clock()
  sweep = table_lib.load(table, opts)
  shared = shared_orders(sweep, opts.data_orders)
  mults = multiplicities(sweep, opts.n_boot, opts.seed, shared)
  mult_of = {(c.size, c.ratio): m for (_, c), m in zip(sweep.curves(), mults)}
  full = analyse(sweep, opts, opts.n_boot, mult_of)
  clock('full fit')
  cuts, dropped = {}, {}
  n_cut = opts.n_boot if opts.budget_boot is None else min(opts.budget_boot, opts.n_boot)
  for f in opts.budget_fractions:
    if f >= 1.0:
      continue
    sw, dropped[f] = budgets_lib.cut(sweep, f)
    cuts[f] = analyse(sw, opts, n_cut, mult_of) if sw.sizes else None
    clock(f'refit at {f:g} T_max')
  data, eq6, boot, e, per_size = full.data, full.eq6, full.boot, full.e, full.per_size
  series = _series(full, cuts, dropped, opts)
  laws = cmr_laws(series['families'], min(opts.n_boot, n_cut))
  ratio_law, heldout = ratio_tables(data, eq6, opts)
  out = to_json(data, eq6, boot, e, per_size, full.free, laws, opts)
  out['options']['data_orders_used'] = 'shared' if shared else 'independent'
  out['cmr_series'] = series['rows']
  out['leave_future_out'] = _lfo_rows(full, cuts, opts)
  out['decisions'] = [
      decisions.growth(sweep.sizes, series['families'], series['fractions'], opts),
      decisions.size_trend(sweep.sizes, per_size, shared, opts),
      decisions.predictable_in_t(out['leave_future_out'], out['cmr'], opts)]
  clock('CMR series, laws, leave-future-out')
  out['ratio_law'], out['ratio_heldout'] = ratio_law, heldout
  observed = np.array([np.nan if r['cmr'] is None else r['cmr'] for r in out['cmr']])
  out['surface'] = (surface_lib.fit(sweep, huber_delta=float(np.nanmedian(eq6.delta['general'])),
                                    lam=opts.lam, eps=opts.eps, observed_cmr=observed,
                                    n_starts=opts.n_starts) if opts.surface
                    else dict(reason='not requested (option surface = false)'))
  clock('ratio laws, surface')
  out['trends'] = checks.trends(out)
  out['gates'] = dataclasses.asdict(checks.gates(sweep, out, opts))
  return out


def _interval(rep_B, censor_B, est, censor, level):
  lo, hi, n_ok, widened = bootstrap.interval(np.where(censor_B == 2, bootstrap.BELOW, rep_B),
                                             bootstrap.BELOW if censor == 2 else est, level)
  return num(lo), num(hi), n_ok, widened


def _at_size(a: Analysis, name: str):
  for i, s in enumerate(a.sweep.sizes):
    if s.name == name:
      return i
  return None


def _series(full: Analysis, cuts: dict, dropped: dict, opts) -> dict:
  """Per size, the CMR at every budget from that budget's refit (evals with T <= T_b only):
  Definition 2 and condition A with intervals, the model-free pair, the R = 0 control's
  measured dL_gen; and per size the family of replicates the CMR law is fitted to."""
  rows, families = [], []
  b_law = None
  for i, s in enumerate(full.sweep.sizes):
    pts = []
    for f in sorted(opts.budget_fractions):
      a = full if f >= 1.0 else cuts.get(f)
      j = None if a is None else _at_size(a, s.name)
      if j is None:
        pts.append(dict(fraction=f, T=f * s.t_max, reason=dropped.get(f, {}).get(
            s.name, 'no refit')))
        continue
      o, sz, fr = a.per_size[j].out, a.sweep.sizes[j], a.free[j]
      est, cen = float(o['cmr_BxJ'][0, 0]), int(o['censor_BxJ'][0, 0])
      p = dict(fraction=f, T=sz.t_max, cmr=num(est), censored=cmr_lib.CENSOR[cen],
               cmr_condition_A=num(o['cmr_a_B'][0]),
               censored_condition_A=cmr_lib.CENSOR[int(o['censor_a_B'][0])],
               lo=None, hi=None, condition_A_lo=None, condition_A_hi=None,
               n_boot=a.boot.n_boot,
               model_free_def2=_mf(fr['def2']), model_free_condition_A=_mf(fr['condition_A']),
               model_free_decides=fr['decides'], reason=None)
      if a.boot.n_boot:
        p['lo'], p['hi'], _, _ = _interval(o['cmr_BxJ'][1:, 0], o['censor_BxJ'][1:, 0], est,
                                           cen, opts.ci_level)
        p['condition_A_lo'], p['condition_A_hi'], _, _ = _interval(
            o['cmr_a_B'][1:], o['censor_a_B'][1:], float(o['cmr_a_B'][0]),
            int(o['censor_a_B'][0]), opts.ci_level)
      c0 = [k for k, c in enumerate(sz.curves) if c.ratio == 0.0]
      if c0:
        m, se = fr['dL_general'][c0[0]], fr['dL_general_se'][c0[0]]
        p['control_dL_general'], p['control_dL_general_se'] = num(m), num(se)
      pts.append(p)
      p['_o'] = (o, a.per_size[j].bad_B)
    ok = [p for p in pts if '_o' in p]
    b = min(p['_o'][0]['cmr_BxJ'].shape[0] for p in ok) if ok else 1
    b_law = b if b_law is None else min(b_law, b)
    families.append(SizeCMR(
        np.array([p['T'] for p in ok]) if ok else np.zeros(0),
        dict(cmr_BxJ=np.stack([p['_o'][0]['cmr_BxJ'][:b, 0] for p in ok], 1) if ok
             else np.zeros((b, 0)),
             censor_BxJ=np.stack([p['_o'][0]['censor_BxJ'][:b, 0] for p in ok], 1) if ok
             else np.zeros((b, 0), int)),
        np.any(np.stack([p['_o'][1][:b] for p in ok], 1), axis=1) if ok else np.zeros(b, bool)))
    for p in pts:
      p.pop('_o', None)
    rows.append(dict(size=s.name, no_future_data=True, T=[p['T'] for p in pts],
                     cmr=[p.get('cmr') for p in pts], lo=[p.get('lo') for p in pts],
                     hi=[p.get('hi') for p in pts],
                     censored=[p.get('censored') for p in pts], points=pts))
  b_law = b_law or 1
  for fam in families:  # one replicate count for every size's law.
    fam.out = {k: v[:b_law] for k, v in fam.out.items()}
    fam.bad_B = fam.bad_B[:b_law]
  fractions = [[p['fraction'] for p in r['points'] if p.get('reason') is None] for r in rows]
  return dict(rows=rows, families=families, fractions=fractions)


def _mf(d):
  return dict(cmr=num(d['cmr']), censored=cmr_lib.CENSOR[d['censor']], lo=num(d['lo']),
              hi=num(d['hi']), ci_widened=bool(d['widened']))


def _lfo_rows(full: Analysis, cuts: dict, opts) -> list[dict]:
  """Leave-future-out: each cut's fits predict the full T_max (per size the CMR, Definition 2
  and condition A; per (size, R) dL_gen and dL_dom), compared with the full data there (the
  full fit's CMRs; the smoothed measured losses). Errors = predicted - measured."""
  rows = []
  for f in opts.lfo_fractions:
    a = cuts.get(f)
    if a is None:
      continue
    t_full = {s.name: s.t_max for s in full.sweep.sizes}
    pred = cmr_stage(a.data, a.boot, a.e, opts, budgets_of=lambda s: np.array([t_full[s.name]]))
    for j, s in enumerate(a.sweep.sizes):
      i = _at_size(full, s.name)
      fs, fo, o = full.sweep.sizes[i], full.per_size[i].out, pred[j].out
      row = dict(size=s.name, fraction=f, T_fit_max=s.t_max, T_max=fs.t_max)
      for tag, pk, pz, mk, mz in (('', 'cmr_BxJ', 'censor_BxJ', 'cmr_BxJ', 'censor_BxJ'),
                                  ('_condition_A', 'cmr_a_B', 'censor_a_B', 'cmr_a_B',
                                   'censor_a_B')):
        pv = float(np.ravel(o[pk][0])[0])
        mv = float(np.ravel(fo[mk][0])[0])
        row[f'cmr{tag}_predicted'], row[f'cmr{tag}_measured'] = num(pv), num(mv)
        row[f'cmr{tag}_predicted_censored'] = cmr_lib.CENSOR[int(np.ravel(o[pz][0])[0])]
        row[f'cmr{tag}_measured_censored'] = cmr_lib.CENSOR[int(np.ravel(fo[mz][0])[0])]
        row[f'cmr{tag}_error'] = num(pv - mv)
        if a.boot.n_boot:
          lo, hi, _, _ = _interval(np.ravel(o[pk][1:]) if o[pk].ndim == 1 else o[pk][1:, 0],
                                   np.ravel(o[pz][1:]) if o[pz].ndim == 1 else o[pz][1:, 0],
                                   pv, int(np.ravel(o[pz][0])[0]), opts.ci_level)
          row[f'cmr{tag}_predicted_lo'], row[f'cmr{tag}_predicted_hi'] = lo, hi
      meas = budgets_lib.measured_at(fs, fs.t_max, opts.smooth_k, float(full.eq6.rho_S[i]))
      curves = []
      for k, c in enumerate(s.curves):
        jc = a.data.of_size(j)[k]
        cr = dict(ratio=c.ratio)
        for which in WHICH:
          pv = float(cmr_lib.eq6_at(which, a.eq6.params[which][jc], fs.t_max))
          mv, se = meas[which][k]
          cr[f'dL_{which}_predicted'], cr[f'dL_{which}_measured'] = num(pv), num(mv)
          cr[f'dL_{which}_measured_se'] = num(se)
          cr[f'dL_{which}_error'] = num(pv - mv)
          cr[f'dL_{which}_error_eps'] = num((pv - mv) / opts.eps)
        cr['flags'] = a.eq6.flags['general'][jc] + a.eq6.flags['domain'][jc]
        curves.append(cr)
      row['curves'] = curves
      errs = np.array([c['dL_general_error'] for c in curves if c['dL_general_error'] is not None])
      row['dL_general_max_abs_error'] = num(np.max(np.abs(errs))) if errs.size else None
      rows.append(row)
  return rows


class _Clock:
  """Logs the time of each stage (logging level DEBUG)."""

  def __init__(self):
    self.t = time.perf_counter()

  def __call__(self, stage):
    t = time.perf_counter()
    log.debug('fit_table: %s took %.2f s', stage, t - self.t)
    self.t = t


# ----------------------------------------------------------------------------- stage: to_json

def _options_json(sweep, opts):
  o = {k: list(v) if isinstance(v, tuple) else v for k, v in opts.to_dict().items()}
  o.update(tokens_per_unit=sweep.tokens_per_unit, tokens_per_unit_option=opts.tokens_per_unit,
           t_unit=f'T = CPT tokens / {sweep.tokens_per_unit:g}', domain=sweep.domain,
           size_column=sweep.size_column, lam_range=list(LAM_RANGE),
           cmr_method=('Eq. 6 curves interpolated between trained ratios in u = R^e (e: '
                       'ratio-law exponent at T_max, else 1); R is feasible at budget T if '
                       'the critical point has passed (g = dF/dT <= 0 on [T0, T], T0 the last '
                       '+ to - sign change of g) and dL_gen(T) <= eps (condition A); CMR = '
                       'largest feasible R (grid + bisection)'),
           eq6_fit=('Huber delta = huber_c x sigma per curve (sigma from second differences); '
                    f'general loss with general_terms = {opts.general_terms!r} (auto: two '
                    'terms where AICc with the effective n under serial correlation supports '
                    'them, else a T^s + b); parameters bounded (forms.py); fits at a bound or '
                    'off the data range flagged'),
           bootstrap=('two-stage: whole runs (seeds) resampled when a (size, R) has >= 2, '
                      'and fit residuals redrawn within runs as serially correlated noise '
                      f'({opts.eval_resampling}: ' + ('AR(1) with the estimated correlation'
                                                      if opts.eval_resampling == 'ar1' else
                                                      'circular moving blocks') + '); Eq. 6, '
                      'ratio-law and CMR-law fits redone per replicate (warm start); '
                      'percentile intervals, widened to contain the point estimate if needed'),
           model_free=('mean of the last smooth_k evals of dL_gen before T_max per run (its '
                       'standard error across runs, or AR(1)-inflated when one run), '
                       'interpolated linearly in u = R^e_gen; CMR = largest R with it <= eps; '
                       'interval by Monte Carlo over those errors'))
  return o


def to_json(data, eq6, boot, e, per_size, free, laws, opts) -> dict:
  sweep = data.sweep
  out = dict(schema_version=SCHEMA_VERSION, options=_options_json(sweep, opts))
  out['forms'] = {k: forms_lib.get_form(k).describe() for k in
                  ('eq6_gen', 'eq6_dom', 'ratio_law', 'cmr_law', surface_lib.GEN,
                   surface_lib.DOM)}
  out['sizes'] = []
  for i, s in enumerate(sweep.sizes):
    idx = data.of_size(i)
    runs = [r for c in s.curves for r in c.runs]
    out['sizes'].append(dict(
        size=s.name, n_params=num(s.n_params), n_params_nonemb=num(s.n_params_nonemb),
        N=num(s.n), base_general_loss=s.base_gen, base_domain_loss=s.base_dom, T_max=s.t_max,
        T_min=s.t_lo, ratios=nums(s.ratios),
        seeds_per_ratio=[len(c.runs) for c in s.curves],
        evals_per_run=int(min(r.t_N.size for r in runs)),
        warmup_step=int(max(r.warmup_step for r in runs)),
        warmup_evals_dropped=int(sum(r.n_warmup for r in runs)),
        sigma_general=num(np.nanmedian(eq6.sigma['general'][idx])),
        sigma_domain=num(np.nanmedian(eq6.sigma['domain'][idx])),
        rho=float(eq6.rho_S[i]), block_length=int(eq6.block_C[idx].max())))
  out['curves'] = _curve_rows(data, eq6, boot, opts)
  out['final'] = _final_rows(data, eq6, opts)
  out['feasibility'] = []
  for i, s in enumerate(sweep.sizes):
    o = per_size[i].out
    for j, r in enumerate(s.ratios):
      t0, kind, dg = float(o['t0_K'][j]), int(o['kind_K'][j]), float(o['dgen_K'][j])
      out['feasibility'].append(dict(
          size=s.name, ratio=float(r), T0=num(t0), T0_kind=cmr_lib.KIND[kind],
          has_critical_point=bool(kind != 2), g_T_max=num(o['g_K'][j]), dL_general_T_max=dg,
          condition_A=bool(dg <= opts.eps), feasible=bool(kind != 2 and dg <= opts.eps)))
  out['cmr'] = [_cmr_row(data, eq6, boot, e, i, per_size[i], free[i], opts)
                for i in range(len(sweep.sizes))]
  out['cmr_law'] = [_law_row(s, i, laws, boot.n_boot, opts)
                    for i, s in enumerate(sweep.sizes)]
  return out


def _curve_rows(data, eq6, boot, opts):
  rows = []
  for k in WHICH:
    form = forms_lib.get_form(cmr_lib.EQ6[k])
    p = boot.params[k]
    for j, c in enumerate(data.curves):
      s = data.sweep.sizes[data.size_of[j]]
      grid = np.geomspace(c.t_N.min(), s.t_max, N_GRID)
      fit = cmr_lib.eq6_at(k, p[0, j], grid)
      key = k if k == 'domain' else ('general2' if eq6.two_term_C[j] else 'general1')
      res = eq6.results[key]
      row = dict(size=c.size, ratio=c.ratio, which=k, form=form.name,
                 terms=(2 if eq6.two_term_C[j] else 1) if k == 'general' else 1,
                 run_ids=c.run_ids, seeds=[r.seed for r in c.runs],
                 params=_pdict(form.params, p[0, j]), objective=num(res.objective_C[j]),
                 mse=num(res.mse_C[j]), r2=num(res.r2_C[j]), converged=bool(res.converged_C[j]),
                 n_points=int(res.n_points_C[j]), sigma=num(eq6.sigma[k][j]),
                 huber_delta=num(eq6.delta[k][j]), flags=eq6.flags[k][j],
                 bounds=_bounds(res, j, form, one_term=key == 'general1'))
      if boot.n_boot:
        ok = boot.ok_BxC[1:, j]
        lo, hi = bootstrap.interval_axis(p[1:, j][ok], p[0, j], opts.ci_level)
        band = cmr_lib.eq6_at(k, p[1:, j][ok][:, None], grid)
        blo, bhi = bootstrap.interval_axis(band, fit, opts.ci_level)
        row.update(params_lo=_pdict(form.params, lo), params_hi=_pdict(form.params, hi),
                   n_ok=int(ok.sum()), band_lo=nums(blo), band_hi=nums(bhi))
      else:
        row.update(params_lo=None, params_hi=None, n_ok=0, band_lo=None, band_hi=None)
      row.update(T=nums(c.t_N), dL=nums(getattr(c, 'gen_N' if k == 'general' else 'dom_N')),
                 run_index=[int(v) for v in c.run_of()], T_grid=nums(grid), dL_fit=nums(fit))
      rows.append(row)
  return rows


def _bounds(res, j, form, one_term):
  """{param: [lo, hi]} the fit of curve j was held to (a one-term general fit's a, s, b
  become a2, s2 (= s3), b2; its a3 is 0)."""
  lo, hi = res.lo_CxP[j], res.hi_CxP[j]
  if one_term:
    lo, hi = _one_term_as_eq6(lo), _one_term_as_eq6(hi)
  return {k: [num(a), num(b)] for k, a, b in zip(form.params, lo, hi)}


def _final_rows(data, eq6, opts):
  rows = []
  for j, c in enumerate(data.curves):
    i = data.size_of[j]
    s = data.sweep.sizes[i]
    row = dict(size=c.size, ratio=c.ratio, T=c.final_t, general_loss=c.final_gen_loss,
               domain_loss=c.final_dom_loss, dL_general=c.final_gen_loss - s.base_gen,
               dL_domain=c.final_dom_loss - s.base_dom, T_fit=s.t_max,
               dL_general_fit=num(cmr_lib.eq6_at('general', eq6.params['general'][j], s.t_max)),
               dL_domain_fit=num(cmr_lib.eq6_at('domain', eq6.params['domain'][j], s.t_max)),
               smooth_k=opts.smooth_k)
    for k, attr in (('general', 'gen_N'), ('domain', 'dom_N')):
      for tag, tb in (('', s.t_max), ('_half', s.t_max / 2)):
        m, se, n = noise.smoothed([r.t_N for r in c.runs], [getattr(r, attr) for r in c.runs],
                                  tb, opts.smooth_k, eq6.rho_S[i])
        row[f'dL_{k}_smooth{tag}'], row[f'dL_{k}_smooth{tag}_se'] = num(m), num(se)
    row['n_runs'] = len(c.runs)
    rows.append(row)
  return rows


def _cmr_row(data, eq6, boot, e, i, sc, free, opts):
  s, o, level = data.sweep.sizes[i], sc.out, opts.ci_level
  est = float(o['cmr_BxJ'][0, -1])
  censor = int(o['censor_BxJ'][0, -1])
  row = dict(size=s.name, T_max=s.t_max, cmr=num(est), censored=cmr_lib.CENSOR[censor],
             n_boot=boot.n_boot, lo=None, hi=None, n_ok=0, n_censored_above=0,
             n_censored_below=0, ci_widened=False)
  est_a = float(o['cmr_a_B'][0])
  if boot.n_boot:
    rep = _ranked(o['cmr_BxJ'][1:, -1], o['censor_BxJ'][1:, -1])
    lo, hi, n_ok, widened = bootstrap.interval(rep, bootstrap.BELOW if censor == 2 else est,
                                               level)
    z = o['censor_BxJ'][1:, -1][~sc.bad_B[1:]]
    row.update(lo=num(lo), hi=num(hi), n_ok=n_ok, ci_widened=widened,
               n_censored_above=int(np.sum(z == 1)), n_censored_below=int(np.sum(z == 2)))
    rep_a = _ranked(o['cmr_a_B'][1:], o['censor_a_B'][1:])
    lo_a, hi_a, _, _ = bootstrap.interval(
        rep_a, bootstrap.BELOW if o['censor_a_B'][0] == 2 else est_a, level)
  else:
    lo_a = hi_a = float('nan')
  flagged = [f'R={c.ratio:g} {k}: ' + '; '.join(eq6.flags[k][j])
             for j, c in zip(data.of_size(i), s.curves) for k in WHICH if eq6.flags[k][j]]
  sens = sorted((dict(lam=l, cmr=num(c), censored=cmr_lib.CENSOR[int(z)])
                 for l, c, z in zip(o['lams'], o['sens_cmr_L'], o['sens_censor_L'])),
                key=lambda d: d['lam'])
  a_decides = bool(np.isfinite(est) and np.isfinite(est_a) and abs(est - est_a) < 1e-6
                   or censor == int(o['censor_a_B'][0]) == 2)
  fa, fd = free['condition_A'], free['def2']
  mf_lo = fa['lo'] if np.isfinite(fa['lo']) else -np.inf
  row.update(
      cmr_condition_A=num(est_a), cmr_condition_A_lo=num(lo_a), cmr_condition_A_hi=num(hi_a),
      censored_condition_A=cmr_lib.CENSOR[int(o['censor_a_B'][0])],
      condition_A_decides=a_decides,
      lam_decides=len({s_['cmr'] for s_ in sens}) > 1,
      lam_sensitivity=sens,
      decides='A' if a_decides else ('none (every trained ratio feasible)' if censor == 1
                                     else 'B'),
      model_free=dict(cmr=num(fa['cmr']), censored=cmr_lib.CENSOR[fa['censor']],
                      lo=num(fa['lo']), hi=num(fa['hi']), ci_widened=fa['widened'],
                      dL_general_smooth=nums(free['dL_general']), se=nums(free['dL_general_se']),
                      n_runs=free['n_runs'], k=opts.smooth_k,
                      disagrees=modelfree.disagree(est_a, lo_a if np.isfinite(lo_a) else -np.inf,
                                                   hi_a, fa['cmr'], mf_lo, fa['hi'])
                      if boot.n_boot else None),
      model_free_def2=dict(
          _mf(fd), decides=free['decides'], window=opts.slope_window,
          slope_general=nums(free['slope_general']), slope_general_se=nums(
              free['slope_general_se']), slope_domain=nums(free['slope_domain']),
          g=nums(free['g']), g_se=nums(free['g_se']),
          feasible_A=[bool(v) for v in free['feasible_A']],
          feasible_B=[bool(v) for v in free['feasible_B']]),
      fitted_vs_model_free=_compare_def2(data, i, o, est, row, fd, free, censor, opts),
      interp_exponent_general=float(e['general'][0, i]),
      interp_exponent_domain=float(e['domain'][0, i]), flags=flagged)
  return row


def _compare_def2(data, i, o, est, row, fd, free, censor, opts) -> dict:
  """Whether the fitted and model-free Definition-2 CMRs disagree beyond their uncertainty,
  and if so why: the trained ratios where the two disagree on condition A or B."""
  lo = row['lo'] if row.get('lo') is not None else (-np.inf if censor == 2 else est)
  hi = row['hi'] if row.get('hi') is not None else est
  e_lo = -np.inf if censor == 2 and row.get('lo') is None else lo
  mf = fd['cmr'] if fd['censor'] != 2 else float('nan')
  gone = censor == 2 or fd['censor'] == 2
  differ = (modelfree.disagree(est, e_lo, hi, fd['cmr'], fd['lo'] if np.isfinite(fd['lo'])
                               else -np.inf, fd['hi']) if not gone
            else (censor == 2) != (fd['censor'] == 2))
  s = data.sweep.sizes[i]
  why = []
  for k, r in enumerate(s.ratios):
    fit_b, mf_b = int(o['kind_K'][k]) != 2, bool(free['feasible_B'][k])
    fit_a, mf_a = float(o['dgen_K'][k]) <= opts.eps, bool(free['feasible_A'][k])
    if fit_b != mf_b:
      why.append(f'R={r:g}: condition B {"holds" if fit_b else "fails"} on the fitted curves, '
                 f'{"holds" if mf_b else "fails"} on the window slopes (g = '
                 f'{free["g"][k]:+.3g} +- {free["g_se"][k]:.2g}, fitted g = {float(o["g_K"][k]):+.3g})')
    if fit_a != mf_a:
      why.append(f'R={r:g}: condition A {"holds" if fit_a else "fails"} on the fitted curve '
                 f'(dL_gen {float(o["dgen_K"][k]):+.4f}), {"holds" if mf_a else "fails"} '
                 f'on the smoothed evals ({free["dL_general"][k]:+.4f})')
  return dict(disagree=bool(differ), model_free_cmr=num(mf),
              reason=('; '.join(why) or 'interpolation between the same feasible ratios')
              if differ else None)


def _law_row(s, i, laws, n_boot, opts):
  form = forms_lib.get_form('cmr_law')
  if laws.point is None or i not in laws.rows:
    return dict(size=s.name, form=form.name, params=None, n_ok=0,
                reason=f'{int(laws.series_ok[i].sum())} uncensored CMR point(s); the law '
                       'needs 4')
  j = int(np.flatnonzero(laws.rows == i)[0])
  row = laws.point.row(j)
  grid = np.linspace(s.t_lo, s.t_max, N_GRID)
  at_max = float(forms_lib.evaluate(form, row['params'], T=s.t_max))
  res = dict(size=s.name, form=form.name, params=_pdict(form.params, laws.params_SxP[i]),
             mse=num(row['mse']), r2=num(row['r2']), converged=row['converged'],
             at_bound=row['at_bound'], n_points=row['n_points'], cmr_at_T_max=num(at_max),
             T_grid=nums(grid), R_fit=nums(forms_lib.evaluate(form, row['params'], T=grid)),
             reason=None, params_lo=None, params_hi=None, cmr_at_T_max_lo=None,
             cmr_at_T_max_hi=None, n_ok=0, boot_params=None)
  if n_boot:
    pb = laws.boot_BxSxP[:, i]
    ok = np.isfinite(pb).all(axis=1)
    lo, hi = bootstrap.interval_axis(pb[ok], laws.params_SxP[i], opts.ci_level)
    vals = [float(forms_lib.evaluate(form, dict(zip(form.params, p)), T=s.t_max))
            for p in pb[ok]]
    l2, h2, n2, _ = bootstrap.interval(vals, at_max, opts.ci_level)
    res.update(params_lo=_pdict(form.params, lo), params_hi=_pdict(form.params, hi),
               boot_params=[nums(p) for p in pb[ok]],
               cmr_at_T_max_lo=num(l2), cmr_at_T_max_hi=num(h2), n_ok=n2)
  return res


# ----------------------------------------------------------------------------- workdir

def read_fit_options(workdir) -> dict:
  """The experiment's fit settings: the workdir's sweep.json "fit_options" ({} if absent)."""
  from mixlaw import workdir as workdir_lib
  try:
    return workdir_lib.read_fit_options(workdir)
  except workdir_lib.WorkdirError as e:
    raise FitError(str(e)) from None


def write_fits(workdir, sources=None, results_csv=None, **options) -> dict:
  """Reads the workdir's results table (through mixlaw.results), fits with its sweep.json
  fit_options overridden by the non-None keyword options, writes its fits.json; returns it.

  sources: where each keyword option came from ('flag', 'gin', ...; default 'argument'),
  recorded with the stored ones ('sweep.json') in fits['options']['source'].
  results_csv: a CSV of runs trained elsewhere (csvtable.py): it becomes the workdir's results
  table first (an existing one is replaced). Options other_domain / reference add decisions
  (e) / (d) (related.py).
  """
  from mixlaw import workdir as workdir_lib
  from mixlaw.laws import csvtable
  from mixlaw.laws import related
  path = workdir_lib.results_path(workdir)
  if results_csv is not None:
    rows = csvtable.read(results_csv)
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(path):
      os.remove(path)
    results.append(workdir, rows)
  if not os.path.exists(path):
    raise FitError(f'{path} not found: run the sweep first (it writes the results table)')
  try:
    rows = results.read_rows(workdir)
  except json.JSONDecodeError as e:
    raise FitError(f'{path}: not a JSON-lines table ({e.msg} at line {e.lineno})') from None
  if not rows:
    raise FitError(f'{path} is empty: the laws need validation rows of CPT runs')
  stored = dict(read_fit_options(workdir))
  orders = workdir_lib.read_sweep(workdir).get('data_orders')
  if orders and stored.get('data_orders', 'auto') == 'auto':
    stored['data_orders'] = orders  # the sweep knows its design.
  given = {k: v for k, v in options.items() if v is not None}
  opts = FitOptions.make(FitOptions.make(**stored), **given)
  fits = fit_table(rows, opts)
  if opts.reference:
    fits['decisions'].append(related.across_sizes(fits, rows, workdir, opts))
  if opts.other_domain:
    fits['decisions'].append(related.domains(fits, workdir, opts))
  fits['options']['source'] = {
      k: (sources or {}).get(k, 'argument') if k in given else workdir_lib.SWEEP
      for k in sorted(set(stored) | set(given))}
  workdir_lib.write_fits(workdir, fits)
  return fits


def fit_form_csv(form_name: str, csv_path, huber_delta: float | None = None) -> dict:
  """Fits a named form to a CSV whose columns are the form's variables plus `loss`."""
  form = forms_lib.get_form(form_name)
  with open(csv_path, newline='') as f:
    rows = list(csv.DictReader(f))
  if not rows:
    raise FitError(f'{csv_path}: no data rows; need columns {", ".join(form.variables)}, loss')
  missing = [c for c in form.variables + ('loss',) if c not in rows[0]]
  if missing:
    raise FitError(f'{csv_path}: missing column(s) {missing}; form {form.name} needs '
                   f'{", ".join(form.variables)} and loss')
  try:
    cols = {c: np.array([float(r[c]) for r in rows]) for c in form.variables + ('loss',)}
  except (TypeError, ValueError) as e:
    raise FitError(f'{csv_path}: non-numeric value ({e})') from None
  kw = {} if huber_delta is None else dict(huber_delta=huber_delta)
  res = fit_lib.fit_one(form, {k: cols[k] for k in form.variables}, cols['loss'], **kw)
  row = res.row(0)
  return dict(form=form.name, params=row['params'], objective=row['objective'],
              mse=row['mse'], r2=row['r2'], converged=row['converged'],
              at_bound=row['at_bound'])


def list_forms() -> list[dict]:
  return forms_lib.list_forms()
