"""fits.json's `dynamics_law` section: the CPT learning-dynamics law (dynamics.py) per size.

Per size: both losses' fits with their replicates (seed-level), the Definition-2 and
condition-A CMRs at T_max in both readings of dL_gen (against the base model, the paper's, and
against the R = 0 control at the same step), the fitted curves, leave-future-out at
options.predict_fraction (beside Eq. 6's refit and the no-change guess) and
leave-one-ratio-out at T_max (docs/laws.md, "The CPT learning-dynamics law").
"""

import dataclasses
import math

import numpy as np

from mixlaw.laws import bootstrap
from mixlaw.laws import dynamics as dyn
from mixlaw.laws import schedules as sched
from mixlaw.laws.dynamics import PARAMS, WHICH, Fit, Problem


def _num(x):
  x = float(x)
  return x if math.isfinite(x) else None


def _fit_json(f: Fit, which: str) -> dict:
  keep = f.w > 0
  return dict(params=f.named(which), converged=f.converged(which), status=int(f.status[which]),
              iters=int(f.iters[which]), objective=_num(f.objective[which]),
              at_bound=[p for p, a in zip(PARAMS, f.at_bound[which]) if a],
              flags=f.flags(which), r2=_num(f.r2[which]), rmse=_num(f.rmse[which]),
              huber_delta=_num(f.delta[which]), n_points=int(keep.sum()))


def _reading_json(point: dict, reps: dict | None, level: float) -> dict:
  """One reference's CMRs (Definition 2, condition A) with censoring and intervals."""
  out = {}
  for key, above, lo_k, hi_k in (('cmr', 'above', 'lo', 'hi'),
                                 ('cmr_condition_A', 'above_A', 'condition_A_lo',
                                  'condition_A_hi')):
    v = float(np.ravel(point[key])[0])
    out[key] = None if np.isneginf(v) else v
    out[key.replace('cmr', 'censored')] = ('below' if np.isneginf(v) else 'above'
                                           if bool(np.ravel(point[above])[0]) else None)
    out[lo_k] = out[hi_k] = None
    if reps is not None and np.size(reps[key]):
      lo, hi, out['n_ok'], _ = bootstrap.interval(reps[key], v, level)
      out[lo_k], out[hi_k] = (None if np.isneginf(lo) else _num(lo)), _num(hi)
  out.setdefault('n_ok', 0)
  return out


def cmr_json(f: Fit, rs: sched.RunSchedule, step: int, eps: float, lam: float,
             level: float) -> dict:
  """{'base': ..., 'control': ...}: Definition 2 and condition-A CMRs at `step` under rs, each
  with its percentile interval over the converged replicates of f."""
  prob = f.prob
  r_lo, r_hi = min(prob.run_ratio), max(prob.run_ratio)
  point = dyn.readings(f.params, prob.base_loss, rs, step, eps, lam, r_lo, r_hi)
  reps = None
  if f.boot is not None and len(f.boot['general']):
    ok = np.all(np.isfinite(f.boot['general']), 1) & np.all(np.isfinite(f.boot['domain']), 1)
    if ok.any():
      reps = dyn.readings({k: f.boot[k][ok] for k in WHICH}, prob.base_loss, rs, step, eps,
                          lam, r_lo, r_hi)
  return {ref: _reading_json(point[ref], None if reps is None else reps[ref], level)
          for ref in ('base', 'control')}


def curve_rows(f: Fit, n_grid: int = 53) -> list:
  """Per trained ratio the fitted dL on a grid of CPT steps 0..last, with T (the fits' unit)."""
  prob = f.prob
  steps = np.unique(np.linspace(0, prob.t_max_step(), n_grid).round().astype(int))
  ratios = sorted(set(prob.run_ratio))
  inc = dyn.increments(f.params, prob.base_loss, prob.schedule, steps, ratios)
  t = steps * prob.schedule.tokens_per_step / prob.tokens_per_unit
  return [dict(ratio=r, step=steps.tolist(), T=t.tolist(),
               dL_general=[_num(v) for v in inc['general'][:, j]],
               dL_domain=[_num(v) for v in inc['domain'][:, j]])
          for j, r in enumerate(ratios)]


def section(sweep, schedules: dict, opts, *, source: str, rho: dict,
            eq6_lfo: dict | None = None, base_from: float = dyn.BASE_FROM) -> dict:
  """fits.json's `dynamics_law`: per size the fit with intervals, both CMR readings at T_max,
  leave-future-out at opts.predict_fraction (beside Eq. 6's rows `eq6_lfo` {size: row} and the
  no-change guess) and leave-one-ratio-out. rho: {size: lag-1 eval correlation} (smoothing)."""
  shared = sweep.shared_orders(opts.data_orders)
  sizes = []
  for size in sweep.sizes:
    prob = dyn.problem(size, schedules, sweep.tokens_per_unit, base_from)
    sizes.append(_size_json(size, prob, opts, shared, float(rho.get(size.name, 0.0)),
                            (eq6_lfo or {}).get(size.name)))
  return dict(reason=None, equation=dyn.EQUATION, params=list(PARAMS),
              bounds={p: [dyn.BOUNDS[p][0], dyn.BOUNDS[p][1]] for p in PARAMS},
              e_log10=True, momentum=sched.MOMENTUM, source=source, base_from=base_from,
              fraction=opts.predict_fraction, level=opts.ci_level, eps=opts.eps, lam=opts.lam,
              sizes=sizes)


def _boot_json(f: Fit) -> dict:
  ok = np.all(np.isfinite(f.boot['general']), 1) & np.all(np.isfinite(f.boot['domain']), 1)
  return dict(n_boot=int(len(ok)), n_ok=int(ok.sum()),
              general=f.boot['general'][ok].tolist(), domain=f.boot['domain'][ok].tolist())


def _size_json(size, prob: Problem, opts, shared: bool, rho: float, eq6_row) -> dict:
  kw = dict(huber_c=opts.huber_c)
  boot = lambda f, n: dyn.fit_boot(f, n, opts.seed, shared, opts.seed_resampling)
  full = boot(dyn.fit(prob, **kw), opts.n_boot)
  n_cut = opts.n_boot if opts.budget_boot is None else min(opts.budget_boot, opts.n_boot)
  cut = boot(dyn.fit(prob, dyn.cut_weights(prob, opts.predict_fraction), **kw), n_cut)
  t = prob.t_max_step()
  cmr = lambda f: cmr_json(f, prob.schedule, t, opts.eps, opts.lam, opts.ci_level)
  meas = dyn.measured(size, size.t_max, opts.smooth_k, rho)
  inc0 = dyn.predicted_final(full)
  return dict(size=size.name, N=prob.n, schedule=prob.schedule.to_json(),
              tokens_per_unit=prob.tokens_per_unit, t_max_step=t, T_max=size.t_max,
              ratios=sorted(set(prob.run_ratio)), base_general_loss=prob.base_loss['general'],
              base_domain_loss=prob.base_loss['domain'],
              general=_fit_json(full, 'general'), domain=_fit_json(full, 'domain'),
              vector={k: full.params[k].tolist() for k in WHICH}, boot=_boot_json(full),
              cmr=cmr(full), control_dL_general=_num(inc0['general'][0]),
              control_dL_general_measured=_num(meas['general'][0][0]),
              curves=curve_rows(full),
              leave_future_out=_lfo_json(size, prob, full, cut, cmr, meas, opts, rho, eq6_row),
              leave_one_ratio_out=_loro_json(prob, meas, kw))


def _lfo_json(size, prob, full, cut, cmr, meas, opts, rho, eq6_row) -> dict:
  frac = opts.predict_fraction
  pred = dyn.predicted_final(cut)
  half = dyn.measured(size, frac * size.t_max, opts.smooth_k, rho)
  eq6 = {c['ratio']: c for c in (eq6_row or {}).get('curves', [])}
  rows = []
  for k, r in enumerate(sorted(set(prob.run_ratio))):
    row = dict(ratio=r)
    for w in WHICH:
      m, se = meas[w][k]
      e6 = eq6.get(r, {}).get(f'dL_{w}_predicted')
      row.update({f'dL_{w}_predicted': _num(pred[w][k]), f'dL_{w}_measured': _num(m),
                  f'dL_{w}_measured_se': _num(se), f'dL_{w}_error': _num(pred[w][k] - m),
                  f'dL_{w}_no_change_error': _num(half[w][k][0] - m),
                  f'dL_{w}_eq6_error': None if e6 is None else _num(e6 - m)})
    rows.append(row)
  big = lambda key: _num(max((abs(x[key]) for x in rows if x[key] is not None),
                             default=float('nan')))
  pc, fc = cmr(cut), cmr(full)
  errs = {ref: {key: (None if pc[ref][key] is None or fc[ref][key] is None
                      else pc[ref][key] - fc[ref][key]) for key in ('cmr', 'cmr_condition_A')}
          for ref in ('base', 'control')}
  return dict(fraction=frac, cut_step=int(frac * prob.t_max_step()), T_cut=frac * size.t_max,
              converged=all(cut.converged(w) for w in WHICH),
              flags={w: cut.flags(w) for w in WHICH}, rows=rows,
              dL_general_max_abs_error=big('dL_general_error'),
              eq6_dL_general_max_abs_error=big('dL_general_eq6_error'),
              no_change_dL_general_max_abs_error=big('dL_general_no_change_error'),
              cmr_predicted=pc, cmr_full_fit=fc, cmr_error=errs,
              eq6_cmr_error=(eq6_row or {}).get('cmr_error'), curves=curve_rows(cut))


def _loro_json(prob, meas, kw) -> list:
  out = []
  ratios = sorted(set(prob.run_ratio))
  for lo in dyn.leave_one_ratio_out(prob, **kw):
    k = ratios.index(lo['ratio'])
    row = dict(ratio=lo['ratio'], converged=all(lo['fit'].converged(w) for w in WHICH))
    for w in WHICH:
      m = meas[w][k][0]
      row.update({f'dL_{w}_predicted': _num(lo['predicted'][w]), f'dL_{w}_measured': _num(m),
                  f'dL_{w}_error': _num(lo['predicted'][w] - m)})
    out.append(row)
  return out


SAME_SIZE = 0.01  # relative distance at which N is a trained size (as predict.py's).


def predict(sec: dict, n_params: float, tokens: float, cpt_lr: float | None = None) -> dict:
  """The CMR at CPT `tokens` and CPT peak learning rate `cpt_lr` (None: the trained one) from
  fits.json's dynamics_law section, for a trained size within 1% of n_params: Definition 2 and
  condition A in both readings, with percentile intervals over the stored replicates."""
  if not sec or sec.get('reason'):
    return dict(cmr=None, reason=(sec or {}).get('reason') or 'no dynamics_law in fits.json')
  near = [s for s in sec['sizes'] if abs(s['N'] - n_params) <= SAME_SIZE * s['N']]
  if not near:
    return dict(cmr=None, reason='the dynamics law is fitted per size; --params must be a '
                'trained size: ' + ', '.join(f'{s["size"]} ({s["N"]:.4g})' for s in sec['sizes']))
  s = near[0]
  rs = sched.RunSchedule.from_json(s['schedule'])
  step = int(round(tokens / rs.tokens_per_step))
  if step < 2:
    return dict(cmr=None, reason=f'--tokens {tokens:g} is under two CPT steps')
  lr = rs.cpt.peak if cpt_lr is None else float(cpt_lr)
  steps = step if rs.cpt.kind == 'cosine' else max(rs.cpt.steps, step)
  new = sched.RunSchedule(rs.base, dataclasses.replace(rs.cpt, peak=lr, steps=steps),
                          rs.tokens_per_step)
  base = dict(general=s['base_general_loss'], domain=s['base_domain_loss'])
  vec = {k: np.asarray(s['vector'][k], np.float64) for k in WHICH}
  reps = {k: np.asarray(s['boot'][k], np.float64).reshape(-1, len(PARAMS)) for k in WHICH}
  r_lo, r_hi = min(s['ratios']), max(s['ratios'])
  point = dyn.readings(vec, base, new, step, sec['eps'], sec['lam'], r_lo, r_hi)
  rep = (dyn.readings(reps, base, new, step, sec['eps'], sec['lam'], r_lo, r_hi)
         if len(reps['general']) else None)
  out = {ref: _reading_json(point[ref], None if rep is None else rep[ref], sec['level'])
         for ref in ('base', 'control')}
  return dict(size=s['size'], cpt_lr=lr, trained_cpt_lr=rs.cpt.peak, step=step,
              trained_steps=s['t_max_step'], extrapolated_budget=step > s['t_max_step'],
              extrapolated_lr=not math.isclose(lr, rs.cpt.peak, rel_tol=1e-9), level=sec['level'],
              cmr=out['base']['cmr'], **out)


def format_lines(p: dict) -> list:
  """The lines `mixlaw predict` prints for the dynamics law's answer."""
  if p.get('cmr') is None and p.get('reason'):
    return [f'dynamics law: none ({p["reason"]})']
  pct = lambda v: '-' if v is None else f'{100 * v:.1f}%'
  cen = lambda c: '' if not c else f' ({c})'
  lv = f'{100 * p["level"]:.0f}%'
  lines = [f'dynamics law of {p["size"]} at CPT LR {p["cpt_lr"]:.3g} (trained '
           f'{p["trained_cpt_lr"]:.3g}), {p["step"]} CPT steps (trained {p["trained_steps"]})'
           + ('; EXTRAPOLATES in ' + ' and '.join(
               w for w, f in (('LR', p['extrapolated_lr']), ('budget', p['extrapolated_budget']))
               if f) if p['extrapolated_lr'] or p['extrapolated_budget'] else '')]
  for ref, what in (('base', 'dL_gen against the base model'),
                    ('control', 'dL_gen against the R = 0 control')):
    r = p[ref]
    lines.append(f'  {what}: Definition 2 {pct(r["cmr"])}{cen(r["censored"])} '
                 f'[{pct(r["lo"])}, {pct(r["hi"])}] ({lv}); condition A only '
                 f'{pct(r["cmr_condition_A"])}{cen(r["censored_condition_A"])} '
                 f'[{pct(r["condition_A_lo"])}, {pct(r["condition_A_hi"])}]')
  return lines
