"""Pre-registered decisions, computed from the fits (never by hand): each a verdict holds /
fails / undecided at z = options.decision_z against the measured noise, with its numbers.

  (a) the CMR grows with T: CMR(T_max) - CMR(growth_fraction T_max), each from its own refit
      (evals up to that budget only), judged on the paired bootstrap replicates (the same seed
      draws at both budgets);
  (b) the CMR grows with size: at T_max, each size minus the next smaller, and largest minus
      smallest; paired replicates when the seeds are paired across sizes, else independent;
  For (a) and (b) the noise is read from percentiles, not standard deviations, of the replicate
  differences (the t-scaled seed draws have heavy tails, bootstrap.py): the verdict holds when
  the central interval at the level of +-z normal SE (95.4% at z = 2) lies above 0, fails when
  it lies below; `se` is that interval's half-width / z, `lo` / `hi` its ends.
  (c) predictable in T: leave-future-out at predict_fraction: |CMR error| <= tol_cmr at every
      size and |dL_gen error| <= tol_dgen at every (size, R);
  (d) predictable across sizes (needs a reference experiment): the largest size's CMR at T_max
      predicted by the joint surface fitted without that size's later evals;
  (e) domains differ (needs the other domain's fits): CMR difference per common size.
A CMR censored below the trained ratios counts as the smallest trained ratio, one censored
above as the largest (the row says so). Replicate CMRs of failed fits are dropped.
"""

import dataclasses
import math

import numpy as np

from mixlaw.laws import intervals
from mixlaw.laws.budgetfits import BudgetFits
from mixlaw.laws.intervals import bounded, interval_verdict, num, spread
from mixlaw.laws.lfo import LeaveFutureOut
from mixlaw.laws.options import FitOptions
from mixlaw.laws.series import Series
from mixlaw.laws.summary import Summary


@dataclasses.dataclass
class Decision:
  """A pre-registered claim's verdict; detail: its numbers (rows, reason, ...) in order."""
  id: str
  claim: str
  verdict: str
  detail: dict


@dataclasses.dataclass
class Decisions:
  items: list  # Decision: (a), (b), (c); (d) and (e) come from related.py


def decide(fits: BudgetFits, series: Series, lfo: LeaveFutureOut, summary: Summary,
           opts: FitOptions) -> Decisions:
  """(a), (b) and (c) (module doc)."""
  sizes = fits.full.sweep.sizes
  return Decisions([growth(sizes, series.families, series.fractions, opts),
                    size_trend(sizes, fits.full.per_size, fits.shared, opts),
                    predictable_in_t(lfo, summary, opts)])


def growth(sizes, families, fractions, opts) -> Decision:
  """(a) per size. families[i]: SizeCMR of the budget refits (B x J replicates, replicate 0
  the point estimate), fractions[i]: the budget fraction of each column."""
  rows = []
  for s, fam, fr in zip(sizes, families, fractions):
    row = dict(size=s.name, T_from=None, T_to=None, verdict='undecided')
    if opts.growth_fraction not in fr or 1.0 not in fr:
      rows.append(dict(row, reason=f'no refit at {opts.growth_fraction:g} T_max'))
      continue
    j0, j1 = fr.index(opts.growth_fraction), fr.index(1.0)
    c = bounded(fam.out['cmr_BxJ'], fam.out['censor_BxJ'], s.ratios[0], s.ratios[-1])
    c = np.where(fam.bad_B[:, None], np.nan, c)
    diff = float(c[0, j1] - c[0, j0])
    se, lo, hi = spread(c[1:, j1] - c[1:, j0], diff, opts.decision_z)
    rows.append(dict(size=s.name, T_from=float(fam.budgets[j0]), T_to=float(fam.budgets[j1]),
                     cmr_from=num(c[0, j0]), cmr_to=num(c[0, j1]), diff=num(diff),
                     se=num(se), lo=num(lo), hi=num(hi), n_boot=int(c.shape[0] - 1),
                     censored=[int(fam.out['censor_BxJ'][0, j0]),
                               int(fam.out['censor_BxJ'][0, j1])],
                     verdict=interval_verdict(lo, hi)))
  return Decision('a', 'The Definition-2 CMR grows with the CPT budget T (T_max against '
                  f'{opts.growth_fraction:g} T_max, each from evals up to its budget only)',
                  intervals.by_size([r['verdict'] for r in rows]), dict(rows=rows))


def size_trend(sizes, per_size, paired: bool, opts) -> Decision:
  """(b): consecutive sizes and largest - smallest, at T_max."""
  c = []
  for s, p in zip(sizes, per_size):
    v = bounded(p.out['cmr_BxJ'][:, -1], p.out['censor_BxJ'][:, -1], s.ratios[0],
                s.ratios[-1])
    c.append(np.where(p.bad_B, np.nan, v))
  b = min(len(v) for v in c)
  pairs = [(i, i + 1) for i in range(len(sizes) - 1)]
  if len(sizes) > 2:
    pairs.append((0, len(sizes) - 1))
  rows = []
  for i, j in pairs:
    diff = float(c[j][0] - c[i][0])
    z = opts.decision_z
    if paired:
      se, lo, hi = spread(c[j][1:b] - c[i][1:b], diff, z)
      verdict = interval_verdict(lo, hi)
    else:
      se = math.hypot(spread(c[i][1:], c[i][0], z)[0], spread(c[j][1:], c[j][0], z)[0])
      lo, hi = diff - z * se, diff + z * se
      verdict = intervals.z_verdict(diff, se, z)
    rows.append(dict(smaller=sizes[i].name, larger=sizes[j].name, cmr_smaller=num(c[i][0]),
                     cmr_larger=num(c[j][0]), diff=num(diff), se=num(se), lo=num(lo),
                     hi=num(hi), paired=paired, verdict=verdict))
  if not rows:
    return Decision('b', 'The Definition-2 CMR grows with model size', 'undecided',
                    dict(rows=[], reason='one size'))
  whole = rows[-1]['verdict']
  steps = [r['verdict'] for r in rows[:-1]] if len(sizes) > 2 else []
  verdict = ('fails' if whole == 'fails' or 'fails' in steps else whole)
  return Decision('b', 'The Definition-2 CMR grows with model size (at T_max)', verdict,
                  dict(rows=rows))


def predictable_in_t(lfo: LeaveFutureOut, summary: Summary, opts) -> Decision:
  """(c) from the leave-future-out predictions at predict_fraction."""
  z = opts.decision_z
  mine = [r for r in lfo.rows if abs(r.fraction - opts.predict_fraction) < 1e-12]
  if not mine:
    return Decision('c', 'Predictable in T', 'undecided', dict(
        rows=[], reason=f'no leave-future-out fit at {opts.predict_fraction:g} T_max'))
  se_of = {c.size.name: intervals.se_of_interval(c.lo, c.hi, intervals.z_of(opts.ci_level))
           for c in summary.cmr}
  rows, fails, ok = [], False, True
  for r in mine:
    p = r.cmr[0]  # Definition 2
    err, se = num(p.error), se_of.get(r.size)
    gen_err = [num(c.dL['general'][3]) for c in r.curves]
    gen_se = [num(c.dL['general'][2]) for c in r.curves]
    row = dict(size=r.size, cmr_predicted=num(p.predicted), cmr_measured=num(p.measured),
               cmr_error=err, cmr_measured_se=se, dL_general_errors=gen_err,
               dL_general_measured_se=gen_se, ratios=[c.ratio for c in r.curves])
    checks = [(err, se, opts.tol_cmr)] + [(e, s, opts.tol_dgen) for e, s in zip(gen_err, gen_se)]
    for e, s, tol in checks:
      if e is None:
        ok = False
        continue
      if abs(e) > tol:
        ok = False
        if s is not None and np.isfinite(s) and abs(e) - z * s > tol:
          fails = True
    row['within_tolerance'] = all(e is not None and abs(e) <= tol for e, _, tol in checks)
    rows.append(row)
  verdict = 'holds' if ok else ('fails' if fails else 'undecided')
  return Decision('c', (f'Predictable in T: fit on T <= {opts.predict_fraction:g} T_max, '
                        f'predict T_max: |CMR error| <= {opts.tol_cmr:g} and |dL_gen error| '
                        f'<= {opts.tol_dgen:g} nats'), verdict, dict(rows=rows))


def across_sizes(predicted, measured, measured_lo, measured_hi, size, opts, **info) -> Decision:
  """(d) the held-out size's CMR predicted by the surface, against its measured CMR."""
  se = intervals.se_of_interval(measured_lo, measured_hi, intervals.z_of(opts.ci_level))
  if predicted is None or measured is None:
    return Decision('d', 'Predictable across sizes', 'undecided', dict(
        size=size, cmr_predicted=predicted, cmr_measured=measured, reason='no prediction',
        **info))
  err = predicted - measured
  if abs(err) <= opts.tol_cmr:
    verdict = 'holds'
  elif se is not None and abs(err) - opts.decision_z * se > opts.tol_cmr:
    verdict = 'fails'
  else:
    verdict = 'undecided'
  return Decision('d', (f'Predictable across sizes: {size}\'s CMR at T_max from the joint '
                        f'surface fitted without its later evals (|error| <= '
                        f'{opts.tol_cmr:g})'), verdict,
                  dict(size=size, cmr_predicted=predicted, cmr_measured=measured, cmr_error=err,
                       cmr_measured_se=se, **info))


def domains(cmr_rows, other_rows, other_domain, this_domain, opts) -> Decision:
  """(e) per common size: this domain's CMR minus the other's, independent errors.
  cmr_rows, other_rows: [{size, cmr, lo, hi}] of each domain (fits.json 'cmr' rows)."""
  other = {c['size']: c for c in other_rows}
  z_ci = intervals.z_of(opts.ci_level)
  rows = []
  for c in cmr_rows:
    o = other.get(c['size'])
    if o is None:
      continue
    a, b = c['cmr'], o['cmr']
    sa = intervals.se_of_interval(c.get('lo'), c.get('hi'), z_ci)
    sb = intervals.se_of_interval(o.get('lo'), o.get('hi'), z_ci)
    diff = None if a is None or b is None else a - b
    se = math.hypot(sa, sb) if sa is not None and sb is not None else None
    v = intervals.z_verdict(abs(diff) if diff is not None else None, se, opts.decision_z)
    rows.append(dict(size=c['size'], cmr=a, cmr_other=b, diff=diff, se=se,
                     verdict='holds' if v == 'holds' else 'undecided'))
  verdict = 'holds' if rows and any(r['verdict'] == 'holds' for r in rows) else 'undecided'
  return Decision('e', f'The CMR differs between {this_domain} and {other_domain}', verdict,
                  dict(rows=rows, note='holds where |difference| > z SE at some size; '
                       'equality cannot be shown'))
