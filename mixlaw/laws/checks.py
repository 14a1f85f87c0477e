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

from mixlaw.laws import cmr as cmr_lib
from mixlaw.laws import intervals
from mixlaw.laws.intervals import num
from mixlaw.laws.options import FitOptions
from mixlaw.laws.series import Series
from mixlaw.laws.summary import Summary

Z = 2.0
Z95 = 1.959964


@dataclasses.dataclass
class Trend:
  trend: str
  verdict: str
  judged_at: str
  noise: float | None
  noise_unit: str
  noise_what: str
  evidence: str


@dataclasses.dataclass
class Checks:
  trends: list  # Trend
  gates: 'Gates'


def check(sweep, summary: Summary, series: Series, opts: FitOptions) -> Checks:
  """The paper's trends on this sweep and the design gates."""
  return Checks(trends(summary, series), gates(sweep, summary, opts))


def _cmr_se(cmr, censored, lo, hi):
  """A CMR's standard error from its interval (inf: censored, or no interval)."""
  if cmr is None or lo is None or hi is None or censored:
    return float('inf')
  return intervals.se_of_interval(lo, hi, Z95)


def _fmt(x, d=3):
  return '–' if x is None or not math.isfinite(x) else f'{x:.{d}f}'


def _median(noise):
  return float(np.median(noise)) if noise else None


def _smoothed(f, which, tag=''):
  """(mean, se) of a summary.Final's smoothed dL (JSON-safe)."""
  m, se = f.smooth[(which, tag)]
  return num(m), num(se)


def trends(summary: Summary, series: Series) -> list[Trend]:
  """The paper's qualitative trends on this sweep."""
  sizes = [i.size.name for i in summary.sizes]
  final = {s: sorted((f for f in summary.finals if f.curve.size == s),
                     key=lambda f: f.curve.ratio) for s in sizes}
  out = [_per_size(final, 'general', +1, 'The general-loss rise at T_max grows with R'),
         _per_size(final, 'domain', -1, 'The domain loss at T_max falls with R'),
         _domain_falls(final), _cmr_grows_with_t(series, summary.sizes)]
  return out + _cmr_grows_with_size(summary)


def _per_size(final, which, sign, title):
  verdicts, ev, noise = [], [], []
  for s, fins in final.items():
    v, se = zip(*[_smoothed(f, which) for f in fins])
    verdicts.append(intervals.monotone(v, se, sign, Z))
    noise += [x for x in se if x is not None]
    ev.append(f'{s}: ' + ', '.join(_fmt(x) for x in v) + f' ({verdicts[-1]})')
  return Trend(title, intervals.all_hold(verdicts), 'T_max', _median(noise), 'nats',
               'median standard error of a smoothed value (nats)',
               'by increasing R: ' + '; '.join(ev))


def _domain_falls(final):
  verdicts, noise, n_fall = [], [], 0
  for fins in final.values():
    for f in fins:
      if f.curve.ratio == 0:  # The R = 0 control sees no domain data: the trend is about R > 0.
        continue
      (m_half, se_half), (m, se) = _smoothed(f, 'domain', '_half'), _smoothed(f, 'domain')
      verdicts.append(intervals.monotone([m_half, m], [se_half, se], -1, Z))
      n_fall += verdicts[-1] == 'holds'
      noise += [x for x in (se_half, se) if x is not None]
  return Trend('The domain loss falls with T (T_max / 2 to T_max) for every R > 0',
               intervals.all_hold(verdicts), 'T_max / 2 and T_max', _median(noise), 'nats',
               'median standard error of a smoothed value (nats)',
               f'{n_fall}/{len(verdicts)} curves significantly lower at T_max')


def _cmr_grows_with_t(series: Series, series_sizes):
  verdicts, ev, noise, first = [], [], [], []
  for size, pts in zip((i.size.name for i in series_sizes), series.points):
    t = np.asarray([p.T for p in pts], float)
    j0 = int(np.argmin(np.abs(t - t[-1] / 2)))  # the budget nearest T_max / 2.
    first.append(t[j0] / t[-1])
    vals = []
    for j in (j0, len(t) - 1):
      p = pts[j]
      est = None if p.reason else num(p.cmr)
      cen = None if p.reason else cmr_lib.CENSOR[p.censor]
      vals.append((est, _cmr_se(est, cen, p.lo, p.hi)))
    verdicts.append(intervals.monotone([v[0] for v in vals], [v[1] for v in vals], +1, Z))
    noise += [v[1] for v in vals if math.isfinite(v[1])]
    ev.append(f'{size}: {_fmt(vals[0][0])} -> {_fmt(vals[1][0])} ({verdicts[-1]})')
  at = (f'{first[0]:.3g} T_max and T_max' if first and np.ptp(first) < 1e-9
        else 'the budget nearest T_max / 2 and T_max')
  return Trend('The CMR grows with the CPT budget T (T_max / 2 to T_max, each budget '
               'refitted from its own evals)', intervals.all_hold(verdicts), at,
               _median(noise), 'CMR', 'median bootstrap standard error of a CMR',
               '; '.join(ev))


def _cmr_grows_with_size(summary: Summary):
  out = []
  fitted = [(num(c.cmr), cmr_lib.CENSOR[c.censor], c.lo, c.hi) for c in summary.cmr]
  free = [[(num(d['cmr']), cmr_lib.CENSOR[d['censor']], num(d['lo']), num(d['hi']))
           for d in (c.free[key] for c in summary.cmr)] for key in ('condition_A', 'def2')]
  names = [c.size.name for c in summary.cmr]
  for title, rows in (('The CMR grows with model size', fitted),
                      ('The model-free CMR (condition A, smoothed evals) grows with model size',
                       free[0]),
                      ('The model-free Definition-2 CMR (window slopes) grows with model size',
                       free[1])):
    se = [_cmr_se(*r) for r in rows]
    finite = [x for x in se if math.isfinite(x)]
    out.append(Trend(title, intervals.monotone([r[0] for r in rows], se, +1, Z), 'T_max',
                     float(np.median(finite)) if finite else None, 'CMR',
                     'median bootstrap standard error of a CMR',
                     ', '.join(f'{n}: {_fmt(r[0])}' + (f' ({r[1]})' if r[1] else '')
                               for n, r in zip(names, rows))))
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


def gates(sweep, summary: Summary, opts) -> Gates:
  """Per size: base loss, its gain over the last 10% of base training, base tokens per
  non-embedding parameter, the R = 0 control's and the largest R's smoothed dL_gen at T_max,
  eval noise sigma, seeds per ratio and evals per run; then each threshold of opts."""
  eps = opts.eps
  per = []
  for s, info in zip(sweep.sizes, summary.sizes):
    fin = sorted((f for f in summary.finals if f.curve.size == s.name),
                 key=lambda f: f.curve.ratio)
    ctrl = next((_smoothed(f, 'general') for f in fin if f.curve.ratio == 0.0), (None, None))
    top = _smoothed(fin[-1], 'general')
    base_tok = float(s.base.tokens.max()) if s.base is not None and s.base.tokens.size else None
    per.append(dict(
        size=s.name, base_general_loss=s.base_gen, base_gain_last_10pct=_base_gain(s.base),
        base_tokens=base_tok,
        base_tokens_per_param=(base_tok / s.n_params_nonemb if base_tok and s.n_params_nonemb
                               else None),
        control_dL_general=ctrl[0], control_dL_general_se=ctrl[1],
        max_ratio=fin[-1].curve.ratio, max_ratio_dL_general=top[0],
        max_ratio_dL_general_se=top[1], sigma_eval=num(info.sigma_general),
        min_seeds=min(info.seeds_per_ratio), evals_per_run=info.evals_per_run))
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
