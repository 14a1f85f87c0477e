"""The shape of fits.json (docs/laws.md, "fits.json"): every stage's result (pipeline.Fit) as
JSON-able rows, in the order of the file. It computes nothing: values are named, made JSON-safe
(intervals.num) and censor codes spelled out (cmr.CENSOR).
"""

from mixlaw.laws import cmr as cmr_lib
from mixlaw.laws import forms as forms_lib
from mixlaw.laws import surface as surface_lib
from mixlaw.laws.intervals import num, nums, pdict
from mixlaw.laws.options import LAM_RANGE
from mixlaw.laws.pipeline import Fit

SCHEMA_VERSION = 3
CENSOR = cmr_lib.CENSOR


def to_json(fit: Fit) -> dict:
  """The fits.json dict of a pipeline run."""
  sweep, opts, s = fit.sweep, fit.opts, fit.summary
  out = dict(schema_version=SCHEMA_VERSION, options=_options_json(sweep, opts))
  out['options']['data_orders_used'] = 'shared' if fit.budget_fits.shared else 'independent'
  out['forms'] = {k: forms_lib.get_form(k).describe() for k in
                  ('eq6_gen', 'eq6_dom', 'ratio_law', 'cmr_law', surface_lib.GEN,
                   surface_lib.DOM)}
  out['sizes'] = [_size(i) for i in s.sizes]
  out['curves'] = [_curve(c, bool(fit.budget_fits.full.boot.n_boot)) for c in s.curves]
  out['final'] = [_final(f, opts) for f in s.finals]
  out['feasibility'] = [_feasibility(f) for f in s.feasibility]
  out['cmr'] = [_cmr(c, opts) for c in s.cmr]
  out['cmr_law'] = [_law(c, opts.n_boot) for c in fit.series.laws]
  out['cmr_series'] = [_series(i.size.name, pts) for i, pts in zip(s.sizes, fit.series.points)]
  out['leave_future_out'] = [_lfo(r, opts) for r in fit.leave_future_out.rows]
  out['decisions'] = [_decision(d) for d in fit.decisions.items + fit.related]
  out['ratio_law'] = [_ratio_law(r) for r in fit.ratio_law.laws]
  out['ratio_heldout'] = [_heldout(h) for h in fit.ratio_law.heldout]
  out['surface'] = fit.surface.fit
  out['trends'] = [vars(t) for t in fit.checks.trends]
  out['gates'] = dict(checks=[vars(c) for c in fit.checks.gates.checks],
                      per_size=fit.checks.gates.per_size)
  return out


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


def _size(i):
  s = i.size
  return dict(size=s.name, n_params=num(s.n_params), n_params_nonemb=num(s.n_params_nonemb),
              N=num(s.n), base_general_loss=s.base_gen, base_domain_loss=s.base_dom,
              T_max=s.t_max, T_min=s.t_lo, ratios=nums(s.ratios),
              seeds_per_ratio=i.seeds_per_ratio, evals_per_run=i.evals_per_run,
              warmup_step=i.warmup_step, warmup_evals_dropped=i.warmup_evals_dropped,
              sigma_general=num(i.sigma_general), sigma_domain=num(i.sigma_domain), rho=i.rho,
              block_length=i.block_length)


def _curve(f, has_boot):
  c, res, j, names = f.curve, f.result, f.index, f.form.params
  row = dict(size=c.size, ratio=c.ratio, which=f.which, form=f.form.name, terms=f.terms,
             evals_turn=f.evals_turn, late_slope_rejects_one_term=f.late_slope_rejects_one_term,
             run_ids=c.run_ids, seeds=[r.seed for r in c.runs], params=pdict(names, f.params_P),
             objective=num(res.objective_C[j]), mse=num(res.mse_C[j]), r2=num(res.r2_C[j]),
             converged=bool(res.converged_C[j]), n_points=int(res.n_points_C[j]),
             sigma=num(f.sigma), huber_delta=num(f.huber_delta), flags=f.flags,
             bounds={k: [num(a), num(b)] for k, a, b in zip(names, f.bounds_lo_P,
                                                            f.bounds_hi_P)})
  if has_boot:
    row.update(params_lo=pdict(names, f.params_lo_P), params_hi=pdict(names, f.params_hi_P),
               n_ok=f.n_ok, band_lo=nums(f.band_lo_G), band_hi=nums(f.band_hi_G))
  else:
    row.update(params_lo=None, params_hi=None, n_ok=0, band_lo=None, band_hi=None)
  row.update(T=nums(c.t_N), dL=nums(f.dL_N), run_index=[int(v) for v in c.run_of()],
             T_grid=nums(f.t_grid_G), dL_fit=nums(f.dL_fit_G))
  return row


def _final(f, opts):
  c, s = f.curve, f.size
  row = dict(size=c.size, ratio=c.ratio, T=c.final_t, general_loss=c.final_gen_loss,
             domain_loss=c.final_dom_loss, dL_general=c.final_gen_loss - s.base_gen,
             dL_domain=c.final_dom_loss - s.base_dom, T_fit=s.t_max,
             dL_general_fit=num(f.dL_general_fit), dL_domain_fit=num(f.dL_domain_fit),
             smooth_k=opts.smooth_k)
  for k in ('general', 'domain'):
    for tag in ('', '_half'):
      m, se = f.smooth[(k, tag)]
      row[f'dL_{k}_smooth{tag}'], row[f'dL_{k}_smooth{tag}_se'] = num(m), num(se)
  row['n_runs'] = len(c.runs)
  return row


def _feasibility(f):
  return dict(size=f.size, ratio=f.ratio, T0=num(f.t0), T0_kind=cmr_lib.KIND[f.kind],
              has_critical_point=f.has_critical_point, g_T_max=num(f.g_t_max),
              dL_general_T_max=f.dL_general_t_max, condition_A=f.condition_a,
              feasible=f.feasible)


def _mf(d):
  return dict(cmr=num(d['cmr']), censored=CENSOR[d['censor']], lo=num(d['lo']),
              hi=num(d['hi']), ci_widened=bool(d['widened']))


def _cmr(c, opts):
  free, fa, fd = c.free, c.free['condition_A'], c.free['def2']
  row = dict(size=c.size.name, T_max=c.size.t_max, cmr=num(c.cmr), censored=CENSOR[c.censor],
             n_boot=c.n_boot, lo=c.lo, hi=c.hi, n_ok=c.n_ok, n_censored_above=c.n_censored_above,
             n_censored_below=c.n_censored_below, ci_widened=c.ci_widened)
  row.update(
      cmr_condition_A=num(c.cmr_a), cmr_condition_A_lo=num(c.lo_a),
      cmr_condition_A_hi=num(c.hi_a), censored_condition_A=CENSOR[c.censor_a],
      condition_A_decides=c.condition_a_decides, lam_decides=c.lam_decides,
      lam_sensitivity=[dict(lam=l, cmr=num(v), censored=CENSOR[int(z)])
                       for l, v, z in c.lam_sensitivity],
      decides=c.decides,
      model_free=dict(cmr=num(fa['cmr']), censored=CENSOR[fa['censor']], lo=num(fa['lo']),
                      hi=num(fa['hi']), ci_widened=fa['widened'],
                      dL_general_smooth=nums(free['dL_general']), se=nums(free['dL_general_se']),
                      n_runs=free['n_runs'], k=opts.smooth_k, disagrees=c.model_free_disagrees),
      model_free_def2=dict(
          _mf(fd), decides=free['decides'], window=opts.slope_window,
          slope_general=nums(free['slope_general']), slope_general_se=nums(
              free['slope_general_se']), slope_domain=nums(free['slope_domain']),
          g=nums(free['g']), g_se=nums(free['g_se']),
          feasible_A=[bool(v) for v in free['feasible_A']],
          feasible_B=[bool(v) for v in free['feasible_B']]),
      fitted_vs_model_free=dict(
          disagree=c.def2_disagrees, model_free_cmr=num(c.def2_model_free_cmr),
          reason=('; '.join(c.def2_why) or 'interpolation between the same feasible ratios')
          if c.def2_disagrees else None),
      interp_exponent_general=c.e_general, interp_exponent_domain=c.e_domain, flags=c.flags)
  return row


def _law(c, n_boot):
  form = forms_lib.get_form('cmr_law')
  if c.result is None:
    return dict(size=c.size, form=form.name, params=None, n_ok=0,
                reason=f'{c.n_series_ok} uncensored CMR point(s); the law needs 4')
  row = c.result.row(c.index)
  res = dict(size=c.size, form=form.name, params=pdict(form.params, c.params_P),
             mse=num(row['mse']), r2=num(row['r2']), converged=row['converged'],
             at_bound=row['at_bound'], n_points=row['n_points'], cmr_at_T_max=num(c.at_max),
             T_grid=nums(c.t_grid), R_fit=nums(c.r_fit), reason=None, params_lo=None,
             params_hi=None, cmr_at_T_max_lo=None, cmr_at_T_max_hi=None, n_ok=0,
             boot_params=None)
  if n_boot:
    res.update(params_lo=pdict(form.params, c.params_lo_P),
               params_hi=pdict(form.params, c.params_hi_P),
               boot_params=[nums(p) for p in c.boot_BxP], cmr_at_T_max_lo=num(c.at_max_lo),
               cmr_at_T_max_hi=num(c.at_max_hi), n_ok=c.n_ok)
  return res


def _point(p):
  if p.reason is not None:
    return dict(fraction=p.fraction, T=p.T, reason=p.reason)
  fr = p.free
  row = dict(fraction=p.fraction, T=p.T, cmr=num(p.cmr), censored=CENSOR[p.censor],
             cmr_condition_A=num(p.cmr_a), censored_condition_A=CENSOR[p.censor_a],
             lo=p.lo, hi=p.hi, condition_A_lo=p.a_lo, condition_A_hi=p.a_hi, n_boot=p.n_boot,
             model_free_def2=_mf(fr['def2']), model_free_condition_A=_mf(fr['condition_A']),
             model_free_decides=fr['decides'], reason=None)
  if p.control is not None:
    row['control_dL_general'], row['control_dL_general_se'] = num(p.control[0]), num(
        p.control[1])
  return row


def _series(size, pts):
  rows = [_point(p) for p in pts]
  return dict(size=size, no_future_data=True, T=[p['T'] for p in rows],
              cmr=[p.get('cmr') for p in rows], lo=[p.get('lo') for p in rows],
              hi=[p.get('hi') for p in rows], censored=[p.get('censored') for p in rows],
              points=rows)


def _lfo(r, opts):
  row = dict(size=r.size, fraction=r.fraction, T_fit_max=r.t_fit_max, T_max=r.t_max)
  for p in r.cmr:
    tag = p.tag
    row[f'cmr{tag}_predicted'], row[f'cmr{tag}_measured'] = num(p.predicted), num(p.measured)
    row[f'cmr{tag}_predicted_censored'] = CENSOR[p.predicted_censor]
    row[f'cmr{tag}_measured_censored'] = CENSOR[p.measured_censor]
    row[f'cmr{tag}_error'] = num(p.error)
    if p.has_interval:
      row[f'cmr{tag}_predicted_lo'], row[f'cmr{tag}_predicted_hi'] = p.predicted_lo, p.predicted_hi
  curves = []
  for c in r.curves:
    cr = dict(ratio=c.ratio)
    for which, (pv, mv, se, err, err_eps) in c.dL.items():
      cr[f'dL_{which}_predicted'], cr[f'dL_{which}_measured'] = num(pv), num(mv)
      cr[f'dL_{which}_measured_se'] = num(se)
      cr[f'dL_{which}_error'] = num(err)
      cr[f'dL_{which}_error_eps'] = num(err_eps)
    cr['flags'] = c.flags
    curves.append(cr)
  row['curves'] = curves
  row['dL_general_max_abs_error'] = r.dL_general_max_abs_error
  return row


def _decision(d):
  return dict(id=d.id, claim=d.claim, verdict=d.verdict, **d.detail)


def _ratio_law(r):
  res, m = r.result, r.index
  form = forms_lib.get_form('ratio_law')
  return dict(size=r.size, which=r.which, loss='absolute validation loss at T_max', T=r.t_max,
              ratios=nums(r.ratios), measured=nums(r.measured),
              params=pdict(form.params, res.params_CxP[m]), mse=num(res.mse_C[m]),
              r2=num(res.r2_C[m]), converged=bool(res.converged_C[m]), flags=res.flags(m),
              at_bound=res.bounded(m), R_grid=nums(r.r_grid), L_fit=nums(r.l_fit))


def _heldout(h):
  res, m = h.result, h.index
  return dict(size=h.size, which=h.which, heldout_ratio=h.ratio, measured=h.measured,
              predicted=num(h.predicted), rel_error=num(h.rel_error),
              abs_error=num(h.abs_error), error_eps=num(h.error_eps),
              extrapolated=h.extrapolated, params=res.params(m),
              converged=bool(res.converged_C[m]), flags=res.flags(m))
