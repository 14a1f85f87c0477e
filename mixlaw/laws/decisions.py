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

import math

import numpy as np

def _verdict(diff, se, z):
  if diff is None or se is None or not np.isfinite(diff) or not np.isfinite(se):
    return 'undecided'
  if se == 0:
    return 'holds' if diff > 0 else ('fails' if diff < 0 else 'undecided')
  return 'holds' if diff > z * se else ('fails' if diff < -z * se else 'undecided')


def _num(x):
  return float(x) if x is not None and np.isfinite(x) else None


def _bounded(cmr_B, censor_B, r_lo, r_hi):
  """Replicate CMRs with censoring replaced by the trained range's ends."""
  return np.where(censor_B == 2, r_lo, np.where(censor_B == 1, r_hi, cmr_B))


def _level(z):
  from statistics import NormalDist  # pylint: disable=g-import-not-at-top
  return 2 * NormalDist().cdf(z) - 1


def _spread(x_B, est, z):
  """(se, lo, hi): the central interval of replicates x_B at the level of +-z normal SE
  (widened to contain est), and its half-width / z; NaNs with < 3 finite replicates."""
  x = np.asarray(x_B, float)
  x = x[np.isfinite(x)]
  if x.size < 3:
    return float('nan'), float('nan'), float('nan')
  q = 50 * (1 - _level(z))
  lo, hi = np.percentile(x, [q, 100 - q])
  if np.isfinite(est):
    lo, hi = min(lo, est), max(hi, est)
  return float((hi - lo) / (2 * z)), float(lo), float(hi)


def _interval_verdict(lo, hi):
  if not (np.isfinite(lo) and np.isfinite(hi)):
    return 'undecided'
  return 'holds' if lo > 0 else ('fails' if hi < 0 else 'undecided')


def growth(sizes, families, fractions, opts) -> dict:
  """(a) per size. families[i]: SizeCMR of the budget refits (B x J replicates, replicate 0
  the point estimate), fractions[i]: the budget fraction of each column."""
  rows = []
  for s, fam, fr in zip(sizes, families, fractions):
    row = dict(size=s.name, T_from=None, T_to=None, verdict='undecided')
    if opts.growth_fraction not in fr or 1.0 not in fr:
      rows.append(dict(row, reason=f'no refit at {opts.growth_fraction:g} T_max'))
      continue
    j0, j1 = fr.index(opts.growth_fraction), fr.index(1.0)
    c = _bounded(fam.out['cmr_BxJ'], fam.out['censor_BxJ'], s.ratios[0], s.ratios[-1])
    c = np.where(fam.bad_B[:, None], np.nan, c)
    diff = float(c[0, j1] - c[0, j0])
    se, lo, hi = _spread(c[1:, j1] - c[1:, j0], diff, opts.decision_z)
    rows.append(dict(size=s.name, T_from=float(fam.budgets[j0]), T_to=float(fam.budgets[j1]),
                     cmr_from=_num(c[0, j0]), cmr_to=_num(c[0, j1]), diff=_num(diff),
                     se=_num(se), lo=_num(lo), hi=_num(hi), n_boot=int(c.shape[0] - 1),
                     censored=[int(fam.out['censor_BxJ'][0, j0]),
                               int(fam.out['censor_BxJ'][0, j1])],
                     verdict=_interval_verdict(lo, hi)))
  return dict(id='a', claim='The Definition-2 CMR grows with the CPT budget T (T_max against '
              f'{opts.growth_fraction:g} T_max, each from evals up to its budget only)',
              verdict=_combine([r['verdict'] for r in rows]), rows=rows)


def size_trend(sizes, per_size, paired: bool, opts) -> dict:
  """(b): consecutive sizes and largest - smallest, at T_max."""
  c = []
  for s, p in zip(sizes, per_size):
    v = _bounded(p.out['cmr_BxJ'][:, -1], p.out['censor_BxJ'][:, -1], s.ratios[0],
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
      se, lo, hi = _spread(c[j][1:b] - c[i][1:b], diff, z)
      verdict = _interval_verdict(lo, hi)
    else:
      se = math.hypot(_spread(c[i][1:], c[i][0], z)[0], _spread(c[j][1:], c[j][0], z)[0])
      lo, hi = diff - z * se, diff + z * se
      verdict = _verdict(diff, se, z)
    rows.append(dict(smaller=sizes[i].name, larger=sizes[j].name, cmr_smaller=_num(c[i][0]),
                     cmr_larger=_num(c[j][0]), diff=_num(diff), se=_num(se), lo=_num(lo),
                     hi=_num(hi), paired=paired, verdict=verdict))
  if not rows:
    return dict(id='b', claim='The Definition-2 CMR grows with model size', verdict='undecided',
                rows=[], reason='one size')
  whole = rows[-1]['verdict']
  steps = [r['verdict'] for r in rows[:-1]] if len(sizes) > 2 else []
  verdict = ('fails' if whole == 'fails' or 'fails' in steps else whole)
  return dict(id='b', claim='The Definition-2 CMR grows with model size (at T_max)',
              verdict=verdict, rows=rows)


def predictable_in_t(lfo_rows, cmr_rows, opts) -> dict:
  """(c) from the leave-future-out rows at predict_fraction."""
  z = opts.decision_z
  mine = [r for r in lfo_rows if abs(r['fraction'] - opts.predict_fraction) < 1e-12]
  if not mine:
    return dict(id='c', claim='Predictable in T', verdict='undecided', rows=[],
                reason=f'no leave-future-out fit at {opts.predict_fraction:g} T_max')
  se_of = {c['size']: _se_interval(c.get('lo'), c.get('hi'), opts.ci_level) for c in cmr_rows}
  rows, fails, ok = [], False, True
  for r in mine:
    err, se = r['cmr_error'], se_of.get(r['size'])
    row = dict(size=r['size'], cmr_predicted=r['cmr_predicted'],
               cmr_measured=r['cmr_measured'], cmr_error=err, cmr_measured_se=se,
               dL_general_errors=[c['dL_general_error'] for c in r['curves']],
               dL_general_measured_se=[c['dL_general_measured_se'] for c in r['curves']],
               ratios=[c['ratio'] for c in r['curves']])
    checks = [(err, se, opts.tol_cmr)] + [
        (c['dL_general_error'], c['dL_general_measured_se'], opts.tol_dgen) for c in r['curves']]
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
  return dict(id='c', claim=(f'Predictable in T: fit on T <= {opts.predict_fraction:g} T_max, '
                             f'predict T_max: |CMR error| <= {opts.tol_cmr:g} and |dL_gen error| '
                             f'<= {opts.tol_dgen:g} nats'), verdict=verdict, rows=rows)


def _se_interval(lo, hi, level):
  if lo is None or hi is None:
    return None
  q = _z_of(level)
  return float((hi - lo) / (2 * q))


def _z_of(level):
  from statistics import NormalDist
  return NormalDist().inv_cdf(0.5 + level / 2)


def across_sizes(predicted, measured, measured_lo, measured_hi, size, opts, **info) -> dict:
  """(d) the held-out size's CMR predicted by the surface, against its measured CMR."""
  se = _se_interval(measured_lo, measured_hi, opts.ci_level)
  if predicted is None or measured is None:
    return dict(id='d', claim='Predictable across sizes', verdict='undecided', size=size,
                cmr_predicted=predicted, cmr_measured=measured, reason='no prediction', **info)
  err = predicted - measured
  if abs(err) <= opts.tol_cmr:
    verdict = 'holds'
  elif se is not None and abs(err) - opts.decision_z * se > opts.tol_cmr:
    verdict = 'fails'
  else:
    verdict = 'undecided'
  return dict(id='d', claim=(f'Predictable across sizes: {size}\'s CMR at T_max from the joint '
                             f'surface fitted without its later evals (|error| <= '
                             f'{opts.tol_cmr:g})'), verdict=verdict, size=size,
              cmr_predicted=predicted, cmr_measured=measured, cmr_error=err,
              cmr_measured_se=se, **info)


def domains(cmr_rows, other_rows, other_domain, this_domain, opts) -> dict:
  """(e) per common size: this domain's CMR minus the other's, independent errors."""
  other = {c['size']: c for c in other_rows}
  rows = []
  for c in cmr_rows:
    o = other.get(c['size'])
    if o is None:
      continue
    a, b = c['cmr'], o['cmr']
    sa = _se_interval(c.get('lo'), c.get('hi'), opts.ci_level)
    sb = _se_interval(o.get('lo'), o.get('hi'), opts.ci_level)
    diff = None if a is None or b is None else a - b
    se = math.hypot(sa, sb) if sa is not None and sb is not None else None
    v = _verdict(abs(diff) if diff is not None else None, se, opts.decision_z)
    rows.append(dict(size=c['size'], cmr=a, cmr_other=b, diff=diff, se=se,
                     verdict='holds' if v == 'holds' else 'undecided'))
  verdict = 'holds' if rows and any(r['verdict'] == 'holds' for r in rows) else 'undecided'
  return dict(id='e', claim=f'The CMR differs between {this_domain} and {other_domain}',
              verdict=verdict, rows=rows,
              note='holds where |difference| > z SE at some size; equality cannot be shown')


def _combine(verdicts):
  n, h, f = len(verdicts), verdicts.count('holds'), verdicts.count('fails')
  if not n or (not h and not f):
    return 'undecided'
  if h == n or f == n:
    return verdicts[0]
  return f'mixed: holds at {h}, fails at {f}, undecided at {n - h - f} of {n} sizes'
