"""Numbers, intervals and verdicts: the one owner of each rule every stage shares.

JSON-safe floats (NaN / inf -> None); percentile intervals of CMR replicates censored below the
trained ratios; a standard error read from an interval; the verdicts 'holds' / 'fails' /
'undecided' of a trend or a difference against its noise, and how per-size verdicts combine.
"""

import math
from statistics import NormalDist

import numpy as np

from mixlaw.laws import bootstrap


def num(x):
  """JSON-safe float: NaN/inf -> None."""
  if x is None:
    return None
  x = float(x)
  return x if math.isfinite(x) else None


def nums(a):
  return [num(v) for v in np.asarray(a, np.float64).ravel()]


def pdict(names, values):
  """{parameter name: JSON-safe value}."""
  return {k: num(v) for k, v in zip(names, values)}


# ----------------------------------------------------------------------------- intervals

def ranked(cmr, censor):
  """CMR replicates for percentiles: censored below -> -inf, failed -> NaN."""
  return np.where(censor == 2, bootstrap.BELOW, cmr)


def censored_interval(rep_B, censor_B, est, censor, level):
  """(lo, hi, n_ok, widened) of CMR replicates rep_B (censor codes censor_B, cmr.CENSOR) around
  the estimate est (censor code censor), lo / hi JSON-safe (None: open, below the ratios)."""
  lo, hi, n_ok, widened = bootstrap.interval(ranked(rep_B, censor_B),
                                             bootstrap.BELOW if censor == 2 else est, level)
  return num(lo), num(hi), int(n_ok), bool(widened)


def z_of(level):
  """The normal quantile of a central interval at `level` (1.96 at 0.95)."""
  return NormalDist().inv_cdf(0.5 + level / 2)


def level_of(z):
  """The level of the central interval +-z normal standard errors (0.954 at z = 2)."""
  return 2 * NormalDist().cdf(z) - 1


def se_of_interval(lo, hi, z):
  """The standard error an interval [lo, hi] of +-z standard errors implies (None if open)."""
  if lo is None or hi is None:
    return None
  return float((hi - lo) / (2 * z))


def spread(x_B, est, z):
  """(se, lo, hi): the central interval of replicates x_B at the level of +-z normal SE
  (widened to contain est), and its half-width / z; NaNs with < 3 finite replicates."""
  x = np.asarray(x_B, float)
  x = x[np.isfinite(x)]
  if x.size < 3:
    return float('nan'), float('nan'), float('nan')
  q = 50 * (1 - level_of(z))
  lo, hi = np.percentile(x, [q, 100 - q])
  if np.isfinite(est):
    lo, hi = min(lo, est), max(hi, est)
  return float((hi - lo) / (2 * z)), float(lo), float(hi)


def bounded(cmr_B, censor_B, r_lo, r_hi):
  """Replicate CMRs with censoring replaced by the trained range's ends."""
  return np.where(censor_B == 2, r_lo, np.where(censor_B == 1, r_hi, cmr_B))


# ----------------------------------------------------------------------------- verdicts

def z_verdict(diff, se, z):
  """'holds' (diff > z se) | 'fails' (diff < -z se) | 'undecided'."""
  if diff is None or se is None or not np.isfinite(diff) or not np.isfinite(se):
    return 'undecided'
  if se == 0:
    return 'holds' if diff > 0 else ('fails' if diff < 0 else 'undecided')
  return 'holds' if diff > z * se else ('fails' if diff < -z * se else 'undecided')


def interval_verdict(lo, hi):
  """'holds' when [lo, hi] lies above 0, 'fails' below, else 'undecided'."""
  if not (np.isfinite(lo) and np.isfinite(hi)):
    return 'undecided'
  return 'holds' if lo > 0 else ('fails' if hi < 0 else 'undecided')


def _se(x):
  return float('inf') if x is None or not math.isfinite(x) else float(x)


def monotone(vals, ses, sign: int, z: float) -> str:
  """'holds' | 'fails' | 'undecided' for "vals move in direction sign": fails when a step goes
  the other way by more than z standard errors of the difference or the first-to-last change
  does, holds when the first-to-last change exceeds z of its standard error."""
  v = np.asarray([np.nan if x is None else x for x in vals], np.float64)
  s = np.asarray([_se(x) for x in ses], np.float64)
  if v.size < 2 or not np.all(np.isfinite(v)):
    return 'undecided'
  d = sign * np.diff(v)
  sd = np.hypot(s[1:], s[:-1])
  if np.any(d < -z * sd) or sign * (v[-1] - v[0]) < -z * math.hypot(s[0], s[-1]):
    return 'fails'
  return 'holds' if sign * (v[-1] - v[0]) > z * math.hypot(s[0], s[-1]) else 'undecided'


def all_hold(verdicts) -> str:
  """One verdict for a claim that must hold everywhere: fails if any fails, holds if all hold."""
  if 'fails' in verdicts:
    return 'fails'
  return 'holds' if verdicts and all(v == 'holds' for v in verdicts) else 'undecided'


def by_size(verdicts) -> str:
  """One verdict of per-size verdicts, saying how they split when they do not agree."""
  n, h, f = len(verdicts), verdicts.count('holds'), verdicts.count('fails')
  if not n or (not h and not f):
    return 'undecided'
  if h == n or f == n:
    return verdicts[0]
  return f'mixed: holds at {h}, fails at {f}, undecided at {n - h - f} of {n} sizes'
