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
from mixlaw.laws import fit as fit_lib
from mixlaw.laws import forms as forms_lib
from mixlaw.laws import noise
from mixlaw.laws import surface as surface_lib
from mixlaw.laws import table as table_lib
from mixlaw.laws.options import FitError, FitOptions, LAM_RANGE

SCHEMA_VERSION = 2
log = logging.getLogger(__name__)
N_GRID = 64  # points of every fitted-curve evaluation grid in fits.json.
N_MODEL_FREE = 4000  # Monte Carlo draws of the model-free CMR's interval.
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


def _select(r2, r1, n_C, rho_C, terms):
  """Two terms or one per curve: as options.general_terms says, or with 'auto' two only where
  the data support them over the one-term case: lower AICc. Where one failed, the other."""
  ok2 = np.all(np.isfinite(r2.params_CxP), axis=1)
  ok1 = np.all(np.isfinite(r1.params_CxP), axis=1)
  if terms == 'auto':
    two = _aicc(r2.mse_C * n_C, n_C, 5, rho_C) < _aicc(r1.mse_C * n_C, n_C, 3, rho_C)
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
  two = _select(res['general2'], res['general1'], w.sum(axis=1), rho_S[data.size_of],
                opts.general_terms)
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
  return Eq6(params, two, res, sigma, delta, rho_S, block, fit_vals, run_vals, flags)


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


def replicate(data: Data, eq6: Eq6, opts: FitOptions) -> Boot:
  """Two-stage bootstrap (bootstrap.py): resample runs, redraw each run's residuals as serially
  correlated noise; refit Eq. 6 on every replicate, warm-started at the point fit (with
  general_terms 'auto' both general variants, reselected per replicate)."""
  c = len(data.curves)
  params = {k: eq6.params[k][None] for k in WHICH}
  two = eq6.two_term_C[None]
  if not opts.n_boot:
    return Boot(params, np.ones((1, c), bool), two, 0)
  b = opts.n_boot
  reps = bootstrap.draw(data.run_CxN, data.w_CxN, eq6.fitted, eq6.run_fitted, data.y, b,
                        opts.seed, rho_C=eq6.rho_S[data.size_of],
                        n_params=dict(general=np.where(eq6.two_term_C, 5, 3), domain=3),
                        blocks_C=eq6.block_C, mode=opts.eval_resampling)
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
                opts.general_terms)
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


def cmr_stage(data: Data, boot: Boot, e: dict, opts: FitOptions) -> list[SizeCMR]:
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
    bud = cmr_lib.budgets(s.t_lo, s.t_max)
    out = cmr_lib.family_analysis(fam, lams, opts.eps, s.t_lo, s.t_max, bud)
    out['lams'] = lams
    for k, z in (('cmr_BxJ', 'censor_BxJ'), ('cmr_a_B', 'censor_a_B')):
      out[k][bad], out[z][bad] = np.nan, -1  # failed replicates: NaN, dropped with a count.
    per_size.append(SizeCMR(bud, out, bad))
  return per_size


def _ranked(cmr, censor):
  """CMR replicates for percentiles: censored below -> -inf, failed -> NaN."""
  return np.where(censor == 2, bootstrap.BELOW, cmr)


# ----------------------------------------------------------------------------- stage: model-free

def _crossing(ratios, m_K, e, eps):
  """Largest R with m(R) <= eps, m piecewise linear in u = R^e; (R, censor)."""
  ok = m_K <= eps
  if ok[-1]:
    return float(ratios[-1]), 1
  if not ok.any():
    return float('nan'), 2
  k = int(np.flatnonzero(ok)[-1])
  u0, u1 = ratios[k] ** e, ratios[k + 1] ** e
  u = u0 + (eps - m_K[k]) / (m_K[k + 1] - m_K[k]) * (u1 - u0)
  return float(u ** (1 / e)), 0


def model_free(data: Data, eq6: Eq6, e: dict, opts: FitOptions) -> list[dict]:
  """Per size: the smoothed dL_gen at T_max of every ratio (mean of the last k evals per run,
  standard error across runs or from serial-correlation-aware spread) interpolated in
  u = R^e_gen; CMR = largest R where it is <= eps (condition A alone, no fitted model);
  interval by Monte Carlo over the smoothed values' errors."""
  rng = np.random.default_rng(opts.seed)
  out = []
  for i, s in enumerate(data.sweep.sizes):
    sm = [noise.smoothed([r.t_N for r in c.runs], [r.gen_N for r in c.runs], s.t_max,
                         opts.smooth_k, eq6.rho_S[i]) for c in s.curves]
    m = np.array([v[0] for v in sm])
    se = np.array([v[1] for v in sm])
    ex = float(e['general'][0, i])
    cmr, z = _crossing(s.ratios, m, ex, opts.eps)
    draws = m[None] + np.where(np.isfinite(se), se, 0.0)[None] * rng.standard_normal(
        (N_MODEL_FREE, m.size))
    dc = np.array([_crossing(s.ratios, d, ex, opts.eps) for d in draws])
    lo, hi, _, widened = bootstrap.interval(_ranked(dc[:, 0], dc[:, 1]),
                                            bootstrap.BELOW if z == 2 else cmr, opts.ci_level)
    out.append(dict(cmr=cmr, censor=z, lo=lo, hi=hi, widened=widened, values=m, se=se,
                    n_runs=[v[2] for v in sm], exponent=ex))
  return out


def _disagree(a, a_lo, a_hi, b, b_lo, b_hi):
  """Two estimates differ by more than their uncertainty: the gap exceeds the root sum of
  squares of the half-widths facing each other (conservative: they share the data)."""
  vals = [a, b]
  if any(v is None or not np.isfinite(v) for v in vals):
    return False
  if a >= b:
    h = math.hypot(a - a_lo, b_hi - b) if np.isfinite(a_lo) and np.isfinite(b_hi) else np.inf
  else:
    h = math.hypot(a_hi - a, b - b_lo) if np.isfinite(a_hi) and np.isfinite(b_lo) else np.inf
  return bool(abs(a - b) > h)


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

def fit_table(table, options: FitOptions | None = None, **overrides) -> dict:
  """Fits everything in docs/laws.md to a results table; returns the JSON-able fits dict.

  table: column -> array mapping (dict, pandas DataFrame) or list of row dicts (results schema).
  options / overrides: FitOptions fields (options.py; None = the default).
  """
  opts = FitOptions.make(options, **overrides)
  clock = _Clock()
  sweep = table_lib.load(table, opts)
  data = prepare(sweep)
  eq6 = fit_eq6(data, opts)
  clock('Eq. 6 fits')
  boot = replicate(data, eq6, opts)
  clock('bootstrap refits')
  e = interp_exponents(data, boot)
  clock('ratio-law exponents')
  per_size = cmr_stage(data, boot, e, opts)
  clock('CMR at every budget')
  free = model_free(data, eq6, e, opts)
  laws = cmr_laws(per_size, boot.n_boot)
  clock('model-free CMR, CMR laws')
  ratio_law, heldout = ratio_tables(data, eq6, opts)
  out = to_json(data, eq6, boot, e, per_size, free, laws, opts)
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
  o = opts.to_dict()
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
  out['cmr_series'] = []
  for i, s in enumerate(sweep.sizes):
    o = per_size[i].out
    ranked = _ranked(o['cmr_BxJ'], o['censor_BxJ'])
    est = np.where(o['censor_BxJ'][0] == 2, bootstrap.BELOW, o['cmr_BxJ'][0])
    lo, hi = (bootstrap.interval_axis(ranked[1:], est, opts.ci_level) if boot.n_boot
              else (None, None))
    out['cmr_series'].append(dict(
        size=s.name, T=nums(per_size[i].budgets), cmr=nums(o['cmr_BxJ'][0]),
        censored=[cmr_lib.CENSOR[int(z)] for z in o['censor_BxJ'][0]],
        lo=nums(lo) if boot.n_boot else None, hi=nums(hi) if boot.n_boot else None))
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
  mf_lo = free['lo'] if np.isfinite(free['lo']) else -np.inf
  row.update(
      cmr_condition_A=num(est_a), cmr_condition_A_lo=num(lo_a), cmr_condition_A_hi=num(hi_a),
      censored_condition_A=cmr_lib.CENSOR[int(o['censor_a_B'][0])],
      condition_A_decides=a_decides,
      lam_decides=len({s_['cmr'] for s_ in sens}) > 1,
      lam_sensitivity=sens,
      model_free=dict(cmr=num(free['cmr']), censored=cmr_lib.CENSOR[free['censor']],
                      lo=num(free['lo']), hi=num(free['hi']), ci_widened=free['widened'],
                      dL_general_smooth=nums(free['values']), se=nums(free['se']),
                      n_runs=free['n_runs'], k=opts.smooth_k,
                      disagrees=_disagree(est_a, lo_a if np.isfinite(lo_a) else -np.inf,
                                          hi_a, free['cmr'], mf_lo, free['hi'])
                      if boot.n_boot else None),
      interp_exponent_general=float(e['general'][0, i]),
      interp_exponent_domain=float(e['domain'][0, i]), flags=flagged)
  return row


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
             cmr_at_T_max_hi=None, n_ok=0)
  if n_boot:
    pb = laws.boot_BxSxP[:, i]
    ok = np.isfinite(pb).all(axis=1)
    lo, hi = bootstrap.interval_axis(pb[ok], laws.params_SxP[i], opts.ci_level)
    vals = [float(forms_lib.evaluate(form, dict(zip(form.params, p)), T=s.t_max))
            for p in pb[ok]]
    l2, h2, n2, _ = bootstrap.interval(vals, at_max, opts.ci_level)
    res.update(params_lo=_pdict(form.params, lo), params_hi=_pdict(form.params, hi),
               cmr_at_T_max_lo=num(l2), cmr_at_T_max_hi=num(h2), n_ok=n2)
  return res


# ----------------------------------------------------------------------------- workdir

def read_fit_options(workdir) -> dict:
  """The experiment's fit settings: WORKDIR/sweep.json["fit_options"] ({} if absent)."""
  path = os.path.join(workdir, 'sweep.json')
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      opts = json.load(f).get('fit_options') or {}
  except (OSError, json.JSONDecodeError) as e:
    raise FitError(f'{path}: unreadable ({e})') from None
  if not isinstance(opts, dict):
    raise FitError(f'{path}: "fit_options" must be an object, got {type(opts).__name__}')
  return opts


def write_fits(workdir, **options) -> dict:
  """Reads DIR/results.jsonl (through mixlaw.results), fits with DIR/sweep.json's fit_options
  overridden by the non-None keyword options, writes DIR/fits.json; returns it."""
  path = results.table_path(workdir)
  if not os.path.exists(path):
    raise FitError(f'{path} not found: run the sweep first (it writes results.jsonl)')
  try:
    rows = results.read_rows(workdir)
  except json.JSONDecodeError as e:
    raise FitError(f'{path}: not a JSON-lines table ({e.msg} at line {e.lineno})') from None
  if not rows:
    raise FitError(f'{path} is empty: the laws need validation rows of CPT runs')
  stored = read_fit_options(workdir)
  given = {k: v for k, v in options.items() if v is not None}
  fits = fit_table(rows, FitOptions.make(**stored), **given)
  fits['options']['source'] = {k: ('argument' if k in given else 'sweep.json')
                               for k in sorted(set(stored) | set(given))}
  tmp = os.path.join(workdir, 'fits.json.tmp')
  with open(tmp, 'w') as f:
    json.dump(fits, f, indent=1, allow_nan=False)
  os.replace(tmp, os.path.join(workdir, 'fits.json'))
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
