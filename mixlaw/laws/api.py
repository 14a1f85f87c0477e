"""Entry points: results table -> fits.json dict; one form on a CSV; the forms; text tables."""

import csv
import json
import logging
import math
import os
import time

import numpy as np

from mixlaw.laws import bootstrap
from mixlaw.laws import cmr as cmr_lib
from mixlaw.laws import fit as fit_lib
from mixlaw.laws import forms as forms_lib
from mixlaw.laws import surface as surface_lib
from mixlaw.laws import table as table_lib
from mixlaw.laws.fit import FitError

SCHEMA_VERSION = 1
log = logging.getLogger(__name__)
N_GRID = 64  # points of every fitted-curve evaluation grid in fits.json.


def _num(x):
  """JSON-safe float: NaN/inf -> None."""
  if x is None:
    return None
  x = float(x)
  return x if math.isfinite(x) else None


def _nums(a):
  return [_num(v) for v in np.asarray(a, np.float64).ravel()]


def _pdict(names, values):
  return {k: _num(v) for k, v in zip(names, values)}


def _padded(curves, attr):
  n = max(c.t_N.size for c in curves)
  out = np.ones((len(curves), n))
  w = np.zeros((len(curves), n))
  for i, c in enumerate(curves):
    out[i, :c.t_N.size] = getattr(c, attr)
    w[i, :c.t_N.size] = 1.0
  return out, w


def _ratio_law_rows(x_rows, y_rows, w_rows, huber_delta, init=None):
  k = max(len(x) for x in x_rows)
  x, y, w = np.ones((len(x_rows), k)), np.ones((len(x_rows), k)), np.zeros((len(x_rows), k))
  for i, (xr, yr, wr) in enumerate(zip(x_rows, y_rows, w_rows)):
    x[i, :len(xr)], y[i, :len(xr)], w[i, :len(xr)] = xr, yr, wr
  return fit_lib.fit_curves('ratio_law', {'R': x}, y, w, huber_delta=huber_delta,
                            init_CxSxP=init, what='ratio-law fit')


def _exponent(p_xP, r2_x, conv_x):
  """Interpolation exponent from ratio-law fits: s if the fit is good and 0 < s <= 4, else 1."""
  s = p_xP[..., 1]
  return np.where((s > 0) & (s <= 4) & (r2_x >= 0.9) & conv_x, s, 1.0)


def _cmr_law(series_T, series_y, series_ok, huber_delta, init=None):
  """CMR-law fits of rows with >= 4 uncensored points; returns (FitResult | None, row mask)."""
  rows = np.flatnonzero(series_ok.sum(axis=1) >= 4)
  if not rows.size:
    return None, rows
  y = np.where(series_ok[rows], series_y[rows], 0.0)
  res = fit_lib.fit_curves('cmr_law', {'T': series_T[rows]}, y, series_ok[rows].astype(float),
                           huber_delta=huber_delta, what='CMR-law fit',
                           init_CxSxP=None if init is None else init[rows][:, None])
  return res, rows


def fit_table(table, *, eps: float = cmr_lib.EPS, lam: float = cmr_lib.LAM,
              tokens_per_unit: float | str | None = None, n_boot: int = 200, seed: int = 0,
              huber_delta: float = 1e-3, domain: str | None = None,
              size_column: str = 'n_params_nonemb', n_starts: int = 64) -> dict:
  """Fits everything in docs/laws.md to a results table; returns the JSON-able fits dict.

  table: column -> array mapping (dict, pandas DataFrame) or list of row dicts (results schema).
  eps: tolerance of condition A (nats). lam: the lambda of Definition 2 (paper: 100..7000).
  tokens_per_unit: CPT tokens per unit of T (None: the paper's 0.2e9; 'auto': T_max = 100).
  n_boot: bootstrap replicates (0 disables intervals). seed: bootstrap seed.
  huber_delta: Huber delta of every fit. domain: which domain (needed if the table has several).
  size_column: model-size variable of the surface (falls back to n_params).
  """
  if not (np.isfinite(eps) and eps > 0):
    raise FitError(f'eps must be a positive number of nats, got {eps}')
  if not (np.isfinite(lam) and lam > 0):
    raise FitError(f'lam must be positive (the paper uses 100..7000), got {lam}')
  if n_boot < 0 or int(n_boot) != n_boot:
    raise FitError(f'n_boot must be an integer >= 0, got {n_boot}')
  clock = _Clock()
  sweep = table_lib.load(table, tokens_per_unit=tokens_per_unit, domain=domain,
                         size_column=size_column)
  curves = [c for _, c in sweep.curves()]
  size_of = np.array([i for i, _ in sweep.curves()])
  t_CxN, w_CxN = _padded(curves, 't_N')
  data = {'general': _padded(curves, 'gen_N')[0], 'domain': _padded(curves, 'dom_N')[0]}
  form_of = {'general': 'eq6_gen', 'domain': 'eq6_dom'}
  fits = {k: fit_lib.fit_curves(form_of[k], {'T': t_CxN}, data[k], w_CxN,
                                huber_delta=huber_delta, n_starts=n_starts, what='Eq. 6 curve')
          for k in data}
  clock('Eq. 6 fits')
  # Bootstrap replicates of every Eq. 6 fit: B x C x P (index 0 = the point estimate).
  params = {k: fits[k].params_CxP[None] for k in data}
  if n_boot:
    w_BxCxN = bootstrap.resample(w_CxN, n_boot, seed, min_distinct=5)
    for k in data:
      r = bootstrap.refit(form_of[k], {'T': t_CxN}, data[k], w_BxCxN, fits[k].params_CxP,
                          huber_delta=huber_delta)
      p = r.params_CxP.reshape(n_boot, len(curves), -1)
      p[~r.converged_C.reshape(n_boot, len(curves))] = np.nan
      params[k] = np.concatenate([params[k], p])
  n_rep = 1 + n_boot
  clock('Eq. 6 bootstrap refits')
  # Ratio-law exponents for interpolating between ratios (per replicate, size, which).
  sizes = sweep.sizes
  idx = [np.flatnonzero(size_of == i) for i in range(len(sizes))]
  e = {k: np.ones((n_rep, len(sizes))) for k in data}
  law_rows = [(i, k) for i in range(len(sizes)) if idx[i].size >= 3 for k in data]
  vals = {(i, k): _eq6(k, params[k][:, idx[i]], sizes[i].t_max) for i, k in law_rows}
  ratio_law_out, heldout_out, r0 = _ratio_tables(
      sweep, curves, size_of, fits, huber_delta,
      extra=[(sizes[i].ratios, vals[ik][0]) for ik in law_rows for i in [ik[0]]])
  if law_rows:
    for j, (i, k) in enumerate(law_rows):
      e[k][0, i] = _exponent(r0.params_CxP[j], r0.r2_C[j], r0.converged_C[j])
    if n_boot:
      xs, ys, ws, init = [], [], [], []
      for b in range(1, n_rep):
        for j, (i, k) in enumerate(law_rows):
          v = vals[(i, k)][b]
          xs.append(sizes[i].ratios)
          ys.append(np.where(np.isfinite(v), v, 0.0))
          ws.append(np.full(v.size, 1.0 if np.all(np.isfinite(v)) else 0.0))
          init.append(r0.params_CxP[j])
      ok = np.array([w.sum() >= 3 for w in ws])
      xs, ys, ws = ([a for a, o in zip(z, ok) if o] for z in (xs, ys, ws))
      if ok.any():
        rb = _ratio_law_rows(xs, ys, ws, huber_delta, init=np.asarray(init)[ok][:, None])
        ex = np.full(ok.size, np.nan)
        ex[ok] = _exponent(rb.params_CxP, rb.r2_C, rb.converged_C)
        ex = ex.reshape(n_boot, len(law_rows))
        for j, (i, k) in enumerate(law_rows):
          e[k][1:, i] = ex[:, j]
  clock('ratio laws')
  # CMR at every budget, per size, for every replicate.
  per_size = []
  for i, s in enumerate(sizes):
    fam = dict(ratios_K=np.broadcast_to(s.ratios, (n_rep, s.ratios.size)),
               gen_KxP=params['general'][:, idx[i]], dom_KxP=params['domain'][:, idx[i]],
               e_gen=e['general'][:, i], e_dom=e['domain'][:, i])
    bad = ~np.all(np.isfinite(fam['gen_KxP']), axis=(1, 2)) | ~np.all(
        np.isfinite(fam['dom_KxP']), axis=(1, 2)) | ~np.isfinite(fam['e_gen'] + fam['e_dom'])
    fam = {k: np.where(bad.reshape((-1,) + (1,) * (np.ndim(v) - 1)), np.asarray(v)[:1], v)
           for k, v in fam.items()}
    bud = cmr_lib.budgets(s.t_lo, s.t_max)
    lams = [float(lam)] + [x for x in cmr_lib.LAM_RANGE if x != float(lam)]
    a = cmr_lib.family_analysis(fam, lams, eps, s.t_lo, s.t_max, bud)
    c_BxJ, z_BxJ = a['cmr_BxJ'], a['censor_BxJ']
    c_BxJ[bad] = np.nan
    z_BxJ[bad] = -1
    t0, kind, dg = a['t0_K'], a['kind_K'], a['dgen_K']
    sens = sorted((dict(lam=l, cmr=_num(c), censored=cmr_lib.CENSOR[int(z)])
                   for l, c, z in zip(lams, a['sens_cmr_L'], a['sens_censor_L'])),
                  key=lambda d: d['lam'])
    per_size.append(dict(budgets=bud, cmr=c_BxJ, censor=z_BxJ, t0=t0, kind=kind, dg=dg,
                         sens=sens, bad=bad))
  clock('CMR at every budget')
  # CMR law per size (point estimate, then replicates warm-started from it).
  ser_T = np.stack([p['budgets'] for p in per_size])
  ser_y = np.stack([p['cmr'][0] for p in per_size])
  ser_ok = np.stack([p['censor'][0] == 0 for p in per_size])
  law, law_rows_ok = _cmr_law(ser_T, ser_y, ser_ok, huber_delta)
  law_p = np.full((len(sizes), 3), np.nan)
  if law is not None:
    law_p[law_rows_ok] = law.params_CxP
  law_boot = np.full((n_boot, len(sizes), 3), np.nan)
  if n_boot and law is not None:
    b_T = np.broadcast_to(ser_T, (n_boot,) + ser_T.shape).reshape(-1, ser_T.shape[1])
    b_y = np.stack([p['cmr'][1:] for p in per_size], 1).reshape(-1, ser_T.shape[1])
    b_ok = np.stack([p['censor'][1:] == 0 for p in per_size], 1).reshape(-1, ser_T.shape[1])
    init = np.broadcast_to(law_p, (n_boot,) + law_p.shape).reshape(-1, 3)
    keep = np.isfinite(init).all(axis=1)
    b_ok &= keep[:, None]
    rb, rows = _cmr_law(b_T, b_y, b_ok, huber_delta, init=np.where(np.isfinite(init), init, 0))
    if rb is not None:
      flat = law_boot.reshape(-1, 3)
      flat[rows] = np.where(rb.converged_C[:, None], rb.params_CxP, np.nan)
      law_boot = flat.reshape(law_boot.shape)
  clock('CMR laws')
  out = dict(schema_version=SCHEMA_VERSION)
  out['options'] = dict(
      eps=float(eps), lam=float(lam), lam_range=list(cmr_lib.LAM_RANGE),
      tokens_per_unit=sweep.tokens_per_unit, t_unit=f'T = CPT tokens / {sweep.tokens_per_unit:g}',
      n_boot=int(n_boot), seed=int(seed), huber_delta=float(huber_delta), domain=sweep.domain,
      size_column=sweep.size_column, n_starts=int(n_starts), ci_level=bootstrap.LEVEL,
      cmr_method=('Eq. 6 curves interpolated between trained ratios in u = R^e (e: ratio-law '
                  'exponent at T_max, else 1); feasible if the first Eq. 7 root T0 <= T and '
                  'dL_gen(T) <= eps; CMR = largest feasible R (grid + bisection)'),
      bootstrap=('points of every curve resampled with replacement; Eq. 6, ratio-law and '
                 'CMR-law fits redone per replicate (warm start); percentile intervals'))
  out['forms'] = {k: forms_lib.get_form(k).describe() for k in
                  ('eq6_gen', 'eq6_dom', 'ratio_law', 'cmr_law', surface_lib.GEN,
                   surface_lib.DOM)}
  out['sizes'] = [dict(size=s.name, n_params=_num(s.n_params), n_params_nonemb=_num(
      s.n_params_nonemb), N=_num(s.n), base_general_loss=s.base_gen, base_domain_loss=s.base_dom,
                       T_max=s.t_max, T_min=s.t_lo, ratios=_nums(s.ratios)) for s in sizes]
  out['curves'] = []
  for k in data:
    form = forms_lib.get_form(form_of[k])
    lo, hi = bootstrap.interval_axis(params[k][1:]) if n_boot else (None, None)
    for j, c in enumerate(curves):
      s = sizes[size_of[j]]
      grid = np.geomspace(s.t_lo, s.t_max, N_GRID)
      row = dict(size=c.size, ratio=c.ratio, which=k, form=form.name, run_ids=c.run_ids,
                 **fits[k].row(j))
      row['params'] = _pdict(form.params, fits[k].params_CxP[j])
      row['objective'], row['mse'], row['r2'] = (_num(row[x]) for x in ('objective', 'mse', 'r2'))
      row['params_lo'] = _pdict(form.params, lo[j]) if n_boot else None
      row['params_hi'] = _pdict(form.params, hi[j]) if n_boot else None
      row.update(T=_nums(c.t_N), dL=_nums(getattr(c, 'gen_N' if k == 'general' else 'dom_N')),
                 T_grid=_nums(grid), dL_fit=_nums(_eq6(k, fits[k].params_CxP[j], grid)))
      out['curves'].append(row)
  out['final'] = []
  for j, c in enumerate(curves):
    s = sizes[size_of[j]]
    out['final'].append(dict(
        size=c.size, ratio=c.ratio, T=c.final_t, general_loss=c.final_gen_loss,
        domain_loss=c.final_dom_loss, dL_general=c.final_gen_loss - s.base_gen,
        dL_domain=c.final_dom_loss - s.base_dom,
        dL_general_fit=_num(_eq6('general', fits['general'].params_CxP[j], s.t_max)),
        dL_domain_fit=_num(_eq6('domain', fits['domain'].params_CxP[j], s.t_max)),
        T_fit=s.t_max))
  out['ratio_law'], out['ratio_heldout'] = ratio_law_out, heldout_out
  out['feasibility'] = []
  for i, s in enumerate(sizes):
    p = per_size[i]
    for j, r in enumerate(s.ratios):
      t0, kind, dg = float(p['t0'][j]), int(p['kind'][j]), float(p['dg'][j])
      out['feasibility'].append(dict(
          size=s.name, ratio=float(r), T0=_num(t0),
          T0_kind={0: 'root', 1: 'before_first_eval', 2: 'none'}[kind],
          has_critical_point=bool(t0 <= s.t_max), dL_general_T_max=dg,
          condition_A=bool(dg <= eps), feasible=bool(t0 <= s.t_max and dg <= eps)))
  out['cmr'], out['cmr_series'], out['cmr_law'] = [], [], []
  for i, s in enumerate(sizes):
    p = per_size[i]
    boot = p['cmr'][1:, -1]
    lo, hi, n_ok = bootstrap.interval(boot) if n_boot else (None, None, 0)
    out['cmr'].append(dict(
        size=s.name, T_max=s.t_max, cmr=_num(p['cmr'][0, -1]),
        censored=cmr_lib.CENSOR[int(p['censor'][0, -1])], lo=_num(lo), hi=_num(hi),
        n_boot_ok=n_ok, n_boot_censored_above=int(np.sum(p['censor'][1:, -1] == 1)),
        interp_exponent_general=float(e['general'][0, i]),
        interp_exponent_domain=float(e['domain'][0, i]), lam_sensitivity=p['sens']))
    slo, shi = bootstrap.interval_axis(p['cmr'][1:]) if n_boot else (None, None)
    out['cmr_series'].append(dict(
        size=s.name, T=_nums(p['budgets']), cmr=_nums(p['cmr'][0]),
        censored=[cmr_lib.CENSOR[int(z)] for z in p['censor'][0]],
        lo=_nums(slo) if n_boot else None, hi=_nums(shi) if n_boot else None))
    out['cmr_law'].append(_law_row(s, i, law, law_rows_ok, law_p, law_boot, ser_ok, n_boot))
  observed = np.array([_nan_if_none(r['cmr']) for r in out['cmr']])
  out['surface'] = surface_lib.fit(sweep, huber_delta=huber_delta, lam=lam, eps=eps,
                                   observed_cmr=observed, n_starts=n_starts)
  clock('surface')
  return out


class _Clock:
  """Logs the time of each stage (logging level DEBUG)."""

  def __init__(self):
    self.t = time.perf_counter()

  def __call__(self, stage):
    t = time.perf_counter()
    log.debug('fit_table: %s took %.2f s', stage, t - self.t)
    self.t = t


def _nan_if_none(x):
  return float('nan') if x is None else float(x)


def _eq6(which, params_xP, t):
  return cmr_lib.eq6_at(which, params_xP, t)


def _law_row(s, i, law, rows_ok, law_p, law_boot, ser_ok, n_boot):
  form = forms_lib.get_form('cmr_law')
  if law is None or i not in rows_ok:
    return dict(size=s.name, form=form.name, params=None,
                reason=f'{int(ser_ok[i].sum())} uncensored CMR point(s); the law needs 4')
  j = int(np.flatnonzero(rows_ok == i)[0])
  row = law.row(j)
  grid = np.linspace(s.t_lo, s.t_max, N_GRID)
  at_max = float(forms_lib.evaluate(form, row['params'], T=s.t_max))
  res = dict(size=s.name, form=form.name, params=_pdict(form.params, law_p[i]),
             mse=_num(row['mse']), r2=_num(row['r2']), converged=row['converged'],
             n_points=row['n_points'], cmr_at_T_max=_num(at_max), T_grid=_nums(grid),
             R_fit=_nums(forms_lib.evaluate(form, row['params'], T=grid)), reason=None)
  if n_boot:
    lo, hi = bootstrap.interval_axis(law_boot[:, i])
    res['params_lo'], res['params_hi'] = _pdict(form.params, lo), _pdict(form.params, hi)
    pb = law_boot[:, i]
    ok = np.isfinite(pb).all(axis=1)
    vals = pb[ok, 0] * s.t_max ** pb[ok, 1] + pb[ok, 2]
    l2, h2, n2 = bootstrap.interval(vals)
    res.update(cmr_at_T_max_lo=_num(l2), cmr_at_T_max_hi=_num(h2), n_boot_ok=n2)
  return res


def _ratio_tables(sweep, curves, size_of, fits, huber_delta, extra=()):
  """Ratio law on all ratios at T_max, and leave-one-ratio-out predictions (paper Table 2).

  extra: more (ratios, values) rows fitted in the same call; their FitResult rows come first in
  the returned result (None if there are no rows at all).
  """
  laws, held = [], []
  jobs_all, jobs_out = [], []
  for i, s in enumerate(sweep.sizes):
    js = np.flatnonzero(size_of == i)
    for k in ('general', 'domain'):
      y = []
      for j in js:
        c = curves[j]
        if abs(c.final_t - s.t_max) <= 1e-9 * s.t_max:
          y.append(c.final_gen_loss if k == 'general' else c.final_dom_loss)
        else:  # the run went past the common budget: its Eq. 6 value at T_max.
          base = s.base_gen if k == 'general' else s.base_dom
          y.append(base + float(_eq6(k, fits[k].params_CxP[j], s.t_max)))
      y = np.array(y)
      if js.size >= 3:
        jobs_all.append((s, k, y))
      if js.size >= 4:
        for h in range(js.size):
          jobs_out.append((s, k, y, h))
  xs = [r for r, _ in extra] + [j[0].ratios for j in jobs_all] + [j[0].ratios for j in jobs_out]
  if not xs:
    return laws, held, None
  ys = [v for _, v in extra] + [j[2] for j in jobs_all] + [j[2] for j in jobs_out]
  ws = [np.ones(len(r)) for r in xs]
  for n, (_, _, _, h) in enumerate(jobs_out):
    ws[len(extra) + len(jobs_all) + n][h] = 0.0
  r = _ratio_law_rows(xs, ys, ws, huber_delta)
  form = forms_lib.get_form('ratio_law')
  for n, (s, k, y) in enumerate(jobs_all):
    m = len(extra) + n
    grid = np.linspace(s.ratios.min(), s.ratios.max(), N_GRID)
    laws.append(dict(size=s.name, which=k, loss='absolute validation loss at T_max',
                     T=s.t_max, ratios=_nums(s.ratios), measured=_nums(y),
                     params=_pdict(form.params, r.params_CxP[m]), mse=_num(r.mse_C[m]),
                     r2=_num(r.r2_C[m]), converged=bool(r.converged_C[m]),
                     R_grid=_nums(grid), L_fit=_nums(forms_lib.evaluate(form, r.params(m),
                                                                        R=grid))))
  for n, (s, k, y, h) in enumerate(jobs_out):
    m = len(extra) + len(jobs_all) + n
    pred = float(forms_lib.evaluate('ratio_law', r.params(m), R=s.ratios[h]))
    held.append(dict(size=s.name, which=k, heldout_ratio=float(s.ratios[h]),
                     measured=float(y[h]), predicted=_num(pred),
                     rel_error=_num((pred - y[h]) / y[h]),
                     extrapolated=bool(h in (0, s.ratios.size - 1)),
                     params=r.params(m), converged=bool(r.converged_C[m])))
  return laws, held, r


def read_results(path) -> list[dict]:
  """Rows of a results.jsonl file (one JSON object a line; blank lines skipped)."""
  rows = []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if line.strip():
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise FitError(f'{path}:{n}: not a JSON line ({e.msg})') from None
  return rows


def write_fits(workdir, **options) -> dict:
  """Reads DIR/results.jsonl, fits (options as fit_table), writes DIR/fits.json; returns it."""
  path = os.path.join(workdir, 'results.jsonl')
  if not os.path.exists(path):
    raise FitError(f'{path} not found: run the sweep first (it writes results.jsonl)')
  rows = read_results(path)
  if not rows:
    raise FitError(f'{path} is empty: the laws need validation rows of CPT runs')
  fits = fit_table(table_lib.dedupe(table_lib.columns(rows)), **options)
  tmp = os.path.join(workdir, 'fits.json.tmp')
  with open(tmp, 'w') as f:
    json.dump(fits, f, indent=1, allow_nan=False)
  os.replace(tmp, os.path.join(workdir, 'fits.json'))
  return fits


def fit_form_csv(form_name: str, csv_path, huber_delta: float = 1e-3) -> dict:
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
  res = fit_lib.fit_one(form, {k: cols[k] for k in form.variables}, cols['loss'],
                    huber_delta=huber_delta)
  row = res.row(0)
  return dict(form=form.name, params=row['params'], objective=row['objective'],
              mse=row['mse'], r2=row['r2'], converged=row['converged'])


def list_forms() -> list[dict]:
  return forms_lib.list_forms()


def _table(title, header, rows):
  cells = [header] + [[('-' if v is None else v) if isinstance(v, str) or v is None else
                       (f'{v:.4g}' if isinstance(v, float) else str(v)) for v in r] for r in rows]
  width = [max(len(str(r[i])) for r in cells) for i in range(len(header))]
  lines = [title, '  '.join(str(h).ljust(w) for h, w in zip(header, width)),
           '  '.join('-' * w for w in width)]
  lines += ['  '.join(str(v).ljust(w) for v, w in zip(r, width)) for r in cells[1:]]
  return '\n'.join(lines)


def format_tables(fits: dict) -> str:
  """Plain-text tables of a fits dict (what `mixlaw fit` prints)."""
  o = fits['options']
  parts = [f'mixlaw fits (schema {fits["schema_version"]}): eps={o["eps"]:g} lam={o["lam"]:g} '
           f'{o["t_unit"]} domain={o["domain"]} n_boot={o["n_boot"]}']
  parts.append(_table('Base losses and budgets', ['size', 'N', 'L_gen(S)', 'L_dom(S)', 'T_max'],
                      [[s['size'], s['N'], s['base_general_loss'], s['base_domain_loss'],
                        s['T_max']] for s in fits['sizes']]))
  quality = {}
  for c in fits['curves']:
    quality.setdefault((c['size'], c['ratio']), {})[c['which']] = c
  parts.append(_table(
      'Eq. 6 fit quality (paper Table 3)',
      ['size', 'R', 'R2 dom', 'MSE dom', 'R2 gen', 'MSE gen', 'converged'],
      [[s, r, q['domain']['r2'], q['domain']['mse'], q['general']['r2'], q['general']['mse'],
        str(q['domain']['converged'] and q['general']['converged'])]
       for (s, r), q in quality.items()]))
  parts.append(_table('Held-out ratio predictions at T_max (paper Table 2)',
                      ['size', 'loss', 'R', 'measured', 'predicted', 'rel.err %', 'extrap.'],
                      [[h['size'], h['which'], h['heldout_ratio'], h['measured'], h['predicted'],
                        None if h['rel_error'] is None else 100 * h['rel_error'],
                        str(h['extrapolated'])] for h in fits['ratio_heldout']]))
  parts.append(_table('Feasibility (Definition 2)',
                      ['size', 'R', 'T0', 'kind', 'dL_gen(T_max)', 'cond A', 'feasible'],
                      [[f['size'], f['ratio'], f['T0'], f['T0_kind'], f['dL_general_T_max'],
                        str(f['condition_A']), str(f['feasible'])] for f in fits['feasibility']]))
  parts.append(_table('Critical mixture ratio at T_max',
                      ['size', 'CMR', 'lo', 'hi', 'censored'] +
                      [f'CMR@lam={s["lam"]:g}' for s in fits['cmr'][0]['lam_sensitivity']],
                      [[c['size'], c['cmr'], c['lo'], c['hi'], c['censored']] +
                       [s['cmr'] for s in c['lam_sensitivity']] for c in fits['cmr']]))
  parts.append(_table('CMR law R_CMR(T) = a T^s + b (paper Eq. 8, Table 5)',
                      ['size', 'a', 's', 'b', 'R2', 'R_CMR(T_max)', 'lo', 'hi'],
                      [[l['size']] + ([l['params'][k] for k in ('a', 's', 'b')] +
                                      [l['r2'], l['cmr_at_T_max'], l.get('cmr_at_T_max_lo'),
                                       l.get('cmr_at_T_max_hi')]
                                      if l['params'] else [None] * 4 + [l['reason'], None, None])
                       for l in fits['cmr_law']]))
  sf = fits['surface']
  if sf.get('reason'):
    parts.append(f'Surface: skipped ({sf["reason"]})')
  else:
    parts.append(_table(
        'Joint surface (R, N, T): fit and CMR',
        ['size', 'CMR surface', 'CMR observed'],
        [[c['size'], c['cmr_surface'], c['cmr_observed']] for c in sf['cmr']]) +
        f'\n  R2 general {sf["general"]["r2"]:.4g}, domain {sf["domain"]["r2"]:.4g}')
    if sf['loso']:
      parts.append(_table(
          'Leave-one-size-out (surface refit without the size)',
          ['held out', 'rel.RMSE gen', 'rel.RMSE dom', 'CMR pred', 'CMR obs', '|err|'],
          [[l['heldout_size'], l['general']['rel_rmse'], l['domain']['rel_rmse'],
            l['cmr_predicted'], l['cmr_observed'], l['cmr_abs_error']] for l in sf['loso']]))
  return '\n\n'.join(parts) + '\n'
