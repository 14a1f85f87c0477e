"""What this sweep can and cannot show: the paper's trends judged against the noise, and the
design gates a powered experiment needs.

Trends are judged at T_max on smoothed values (mean of the last k evals per run, with standard
errors from noise.smoothed) and on CMRs (standard error from the bootstrap interval,
(hi - lo) / (2 z_0.975)). A sequence "grows" when no step goes the other way by more than z
standard errors of the difference and the first-to-last change does not go the other way by
more than z of its standard error (else it fails), and the first-to-last change exceeds z of
its standard error (else undecided); z = 2. CMRs of one size at two budgets share their runs,
so treating them as independent overstates the error there: those verdicts err to undecided.
"""

import dataclasses
import math

import numpy as np

Z = 2.0
Z95 = 1.959964


def _se(x):
  return float('inf') if x is None or not math.isfinite(x) else float(x)


def monotone(vals, ses, sign: int, z: float = Z) -> str:
  """'holds' | 'fails' | 'undecided' for "vals move in direction sign" (see module doc)."""
  v = np.asarray([np.nan if x is None else x for x in vals], np.float64)
  s = np.asarray([_se(x) for x in ses], np.float64)
  if v.size < 2 or not np.all(np.isfinite(v)):
    return 'undecided'
  d = sign * np.diff(v)
  sd = np.hypot(s[1:], s[:-1])
  if np.any(d < -z * sd) or sign * (v[-1] - v[0]) < -z * math.hypot(s[0], s[-1]):
    return 'fails'
  return 'holds' if sign * (v[-1] - v[0]) > z * math.hypot(s[0], s[-1]) else 'undecided'


def _combine(verdicts):
  if 'fails' in verdicts:
    return 'fails'
  return 'holds' if verdicts and all(v == 'holds' for v in verdicts) else 'undecided'


def _interval_se(c):
  lo, hi = c.get('lo'), c.get('hi')
  if c.get('cmr') is None or lo is None or hi is None or c.get('censored'):
    return float('inf')
  return (hi - lo) / (2 * Z95)


def _fmt(x, d=3):
  return '–' if x is None or not math.isfinite(x) else f'{x:.{d}f}'


def trends(fits) -> list[dict]:
  """The paper's qualitative trends on this sweep: [{trend, verdict, noise, evidence}]."""
  sizes = [s['size'] for s in fits['sizes']]
  final = {s: sorted((f for f in fits['final'] if f['size'] == s), key=lambda f: f['ratio'])
           for s in sizes}
  out = []

  def per_size(key, sign, title):
    verdicts, ev, noise = [], [], []
    for s in sizes:
      v = [f[key] for f in final[s]]
      se = [f[key + '_se'] for f in final[s]]
      verdicts.append(monotone(v, se, sign))
      noise += [x for x in se if x is not None]
      ev.append(f'{s}: ' + ', '.join(_fmt(x) for x in v) + f' ({verdicts[-1]})')
    out.append(dict(trend=title, verdict=_combine(verdicts), judged_at='T_max',
                    noise=float(np.median(noise)) if noise else None, noise_unit='nats',
                    noise_what='median standard error of a smoothed value (nats)',
                    evidence='by increasing R: ' + '; '.join(ev)))

  per_size('dL_general_smooth', +1, 'The general-loss rise at T_max grows with R')
  per_size('dL_domain_smooth', -1, 'The domain loss at T_max falls with R')
  verdicts, noise, n_fall = [], [], 0
  for s in sizes:
    for f in final[s]:
      if f['ratio'] == 0:  # The R = 0 control sees no domain data: the trend is about R > 0.
        continue
      v = [f['dL_domain_smooth_half'], f['dL_domain_smooth']]
      se = [f['dL_domain_smooth_half_se'], f['dL_domain_smooth_se']]
      verdicts.append(monotone(v, se, -1))
      n_fall += verdicts[-1] == 'holds'
      noise += [x for x in se if x is not None]
  out.append(dict(trend='The domain loss falls with T (T_max / 2 to T_max) for every R > 0',
                  verdict=_combine(verdicts), judged_at='T_max / 2 and T_max',
                  noise=float(np.median(noise)) if noise else None, noise_unit='nats',
                  noise_what='median standard error of a smoothed value (nats)',
                  evidence=f'{n_fall}/{len(verdicts)} curves significantly lower at T_max'))
  verdicts, ev, noise, first = [], [], [], []
  for ser in fits['cmr_series']:
    t = np.asarray(ser['T'], float)
    j0 = int(np.argmin(np.abs(t - t[-1] / 2)))  # the budget nearest T_max / 2.
    first.append(t[j0] / t[-1])
    pts = []
    for j in (j0, len(t) - 1):
      c = dict(cmr=ser['cmr'][j], censored=ser['censored'][j],
               lo=ser['lo'][j] if ser.get('lo') else None,
               hi=ser['hi'][j] if ser.get('hi') else None)
      pts.append((c['cmr'], _interval_se(c)))
    verdicts.append(monotone([p[0] for p in pts], [p[1] for p in pts], +1))
    noise += [p[1] for p in pts if math.isfinite(p[1])]
    ev.append(f'{ser["size"]}: {_fmt(pts[0][0])} -> {_fmt(pts[1][0])} ({verdicts[-1]})')
  at = (f'{first[0]:.3g} T_max and T_max' if first and np.ptp(first) < 1e-9
        else 'the budget nearest T_max / 2 and T_max')
  out.append(dict(trend='The CMR grows with the CPT budget T (T_max / 2 to T_max, each budget '
                        'refitted from its own evals)',
                  verdict=_combine(verdicts), judged_at=at,
                  noise=float(np.median(noise)) if noise else None, noise_unit='CMR',
                  noise_what='median bootstrap standard error of a CMR',
                  evidence='; '.join(ev)))
  cmr = [next(c for c in fits['cmr'] if c['size'] == s) for s in sizes]
  for title, of in (('The CMR grows with model size', lambda c: c),
                    ('The model-free CMR (condition A, smoothed evals) grows with model size',
                     lambda c: c.get('model_free')),
                    ('The model-free Definition-2 CMR (window slopes) grows with model size',
                     lambda c: c.get('model_free_def2'))):
    rows = [of(c) for c in cmr]
    if any(r is None for r in rows):
      continue
    se = [_interval_se(r) for r in rows]
    out.append(dict(trend=title, verdict=monotone([r['cmr'] for r in rows], se, +1),
                    judged_at='T_max',
                    noise=float(np.median([x for x in se if math.isfinite(x)]))
                    if any(math.isfinite(x) for x in se) else None, noise_unit='CMR',
                    noise_what='median bootstrap standard error of a CMR',
                    evidence=', '.join(f'{c["size"]}: {_fmt(r["cmr"])}'
                                       + (f' ({r["censored"]})' if r['censored'] else '')
                                       for c, r in zip(cmr, rows))))
  return out


@dataclasses.dataclass
class Check:
  name: str
  value: str
  threshold: str
  passed: bool | None  # None: not measurable in this table.
  detail: str = ''


@dataclasses.dataclass
class Gates:
  """Design checks and the per-size numbers behind them."""
  checks: list
  per_size: list


def _base_gain(base):
  """L(0.9 x last step) - L(last step) on the base run's validation curve (nats)."""
  if base is None or base.steps.size < 2:
    return None
  ok = np.isfinite(base.gen)
  s, g = base.steps[ok], base.gen[ok]
  if s.size < 2:
    return None
  return float(np.interp(0.9 * s[-1], s, g) - g[-1])


def gates(sweep, fits, opts) -> Gates:
  """Per size: base loss, its gain over the last 10% of base training, base tokens per
  non-embedding parameter, the R = 0 control's and the largest R's smoothed dL_gen at T_max,
  eval noise sigma, seeds per ratio and evals per run; then each threshold of opts."""
  eps = opts.eps
  per = []
  for s, row in zip(sweep.sizes, fits['sizes']):
    fin = sorted((f for f in fits['final'] if f['size'] == s.name), key=lambda f: f['ratio'])
    ctrl = next((f for f in fin if f['ratio'] == 0.0), None)
    base_tok = float(s.base.tokens.max()) if s.base is not None and s.base.tokens.size else None
    per.append(dict(
        size=s.name, base_general_loss=s.base_gen, base_gain_last_10pct=_base_gain(s.base),
        base_tokens=base_tok,
        base_tokens_per_param=(base_tok / s.n_params_nonemb if base_tok and s.n_params_nonemb
                               else None),
        control_dL_general=ctrl['dL_general_smooth'] if ctrl else None,
        control_dL_general_se=ctrl['dL_general_smooth_se'] if ctrl else None,
        max_ratio=fin[-1]['ratio'], max_ratio_dL_general=fin[-1]['dL_general_smooth'],
        max_ratio_dL_general_se=fin[-1]['dL_general_smooth_se'],
        sigma_eval=row['sigma_general'], min_seeds=min(row['seeds_per_ratio']),
        evals_per_run=row['evals_per_run']))
  checks = []

  def add(name, vals, threshold, ok, detail=''):
    known = [v for v in vals if v is not None]
    shown = [f'{v:.4g}' if isinstance(v, float) else ('not run' if v is None else str(v))
             for v in vals]
    checks.append(Check(name, ', '.join(f'{p["size"]}: {v}' for p, v in zip(per, shown)),
                        threshold,
                        None if len(known) < len(vals) else bool(all(ok(v) for v in known)),
                        detail))

  add('R = 0 control: |dL_gen(T_max)|', [p['control_dL_general'] for p in per],
      f'<= {opts.gate_control_max:g} nats', lambda v: abs(v) <= opts.gate_control_max,
      'replay only: any rise is the rewarm or drift, not the domain data'
      + ('' if all(p['control_dL_general'] is not None for p in per) else
         '; no R = 0 run in this sweep'))
  add('largest R: dL_gen(T_max)', [p['max_ratio_dL_general'] for p in per],
      f'>= {opts.gate_rise_min_eps:g} eps = {opts.gate_rise_min_eps * eps:g} nats',
      lambda v: v >= opts.gate_rise_min_eps * eps,
      'the effect must be large against eps for condition A to separate ratios')
  add('eval noise sigma (second differences)', [p['sigma_eval'] for p in per],
      f'<= eps / {1 / opts.gate_sigma_max_eps:g} = {opts.gate_sigma_max_eps * eps:g} nats',
      lambda v: v <= opts.gate_sigma_max_eps * eps)
  add('CPT seeds per (size, R)', [p['min_seeds'] for p in per], f'>= {opts.gate_min_seeds}',
      lambda v: v >= opts.gate_min_seeds, 'seed-to-seed variation is only measured with >= 2')
  add('fitted evals per CPT run', [p['evals_per_run'] for p in per],
      f'>= {opts.gate_min_evals}', lambda v: v >= opts.gate_min_evals)
  base = [p['base_general_loss'] for p in per]
  checks.append(Check('base general loss falls with size',
                      ', '.join(f'{p["size"]}: {v:.4g}' for p, v in zip(per, base)),
                      'strictly decreasing', bool(len(base) < 2 or np.all(np.diff(base) < 0)),
                      'bigger base models must be better, or size trends mean nothing'))
  return Gates(checks, per)
