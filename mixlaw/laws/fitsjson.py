"""The shaping of fits.json (docs/laws.md, "fits.json"): every stage's results as JSON-able
rows: options, sizes, curves, finals, feasibility, the CMR with its model-free checks, the CMR
series of the budget refits, leave-future-out, the CMR laws.
"""

from __future__ import annotations


import numpy as np

from mixlaw.laws import bootstrap
from mixlaw.laws import budgets as budgets_lib
from mixlaw.laws import cmr as cmr_lib
from mixlaw.laws import forms as forms_lib
from mixlaw.laws import modelfree
from mixlaw.laws import noise
from mixlaw.laws import surface as surface_lib
from mixlaw.laws.options import LAM_RANGE
from mixlaw.laws.stages import N_GRID, WHICH, SizeCMR, _one_term_as_eq6, _pdict, _ranked, \
    cmr_stage, num, nums

SCHEMA_VERSION = 3

def _interval(rep_B, censor_B, est, censor, level):
  lo, hi, n_ok, widened = bootstrap.interval(np.where(censor_B == 2, bootstrap.BELOW, rep_B),
                                             bootstrap.BELOW if censor == 2 else est, level)
  return num(lo), num(hi), n_ok, widened


def _at_size(a, name: str):
  for i, s in enumerate(a.sweep.sizes):
    if s.name == name:
      return i
  return None


def _series(full, cuts: dict, dropped: dict, opts) -> dict:
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


def _lfo_rows(full, cuts: dict, opts) -> list[dict]:
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
                    'terms where the evals rise then fall, where the one-term slope at T_max '
                    'contradicts the late window slope by > turn_z standard errors, or where '
                    'AICc with the effective n under serial correlation supports them, else '
                    'a T^s + b); parameters bounded (forms.py); fits at a bound or '
                    'off the data range flagged'),
           bootstrap=('two-stage: seeds varied when a (size, R) has >= 2 runs ('
                      + ('each run\'s deviation from the pooled fit times Gaussian weights and '
                         'a t_{n-1} scale (wild_t)' if opts.seed_resampling == 'wild_t' else
                         'whole runs drawn with replacement (runs)')
                      + ', jointly across cells when data orders are shared), '
                      'and fit residuals redrawn within runs as serially correlated noise '
                      f'({opts.eval_resampling}: ' + ('AR(1) with the estimated correlation'
                                                      if opts.eval_resampling == 'ar1' else
                                                      'circular moving blocks') + '); Eq. 6, '
                      'ratio-law and CMR-law fits redone per replicate (warm start); '
                      'percentile intervals, widened to contain the point estimate if needed'),
           model_free=('mean of the last smooth_k evals of dL_gen before T_max per run (its '
                       'standard error across runs, or AR(1)-inflated when one run), '
                       'interpolated linearly in u = R^e_gen; CMR = largest R with it <= eps; '
                       'interval by Monte Carlo over those errors (seed deviations with '
                       'wild_t weights, shared across ratios when data orders are)'))
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
                 evals_turn=bool(eq6.turn_C[j]) if k == 'general' else None,
                 late_slope_rejects_one_term=bool(eq6.late_C[j]) if k == 'general' else None,
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
                 f'{free["g"][k]:+.3g} +- {free["g_se"][k]:.2g}, fitted g = '
                 f'{float(o["g_K"][k]):+.3g})')
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
