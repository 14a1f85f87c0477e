"""When a fitted law may answer: the CMR law's identification, and extrapolation labels.

The CMR law (Eq. 8, a T^s + b fitted to the CMR of each budget's refit) has three parameters
and is fitted to 4-7 points. It is `identified` only when no parameter sits at its bound (a
parameter at a bound is set by the box, not the data: cmr_long's cpu_m had s = -3 with
a = -4844), its R^2 is at least MIN_R2, at least MIN_BUDGETS uncensored budgets remain, and
the fit converged; otherwise `reason` says which fails, and `mixlaw predict` gives no number
from it. A CMR outside [0, 1] is not a mixture ratio: predictions report none there.
"""

import numpy as np

MIN_R2 = 0.5
MIN_BUDGETS = 4


def cmr_law(row: dict) -> tuple[bool, str | None]:
  """(identified, reason) of a fits.json cmr_law row."""
  if row.get('params') is None:
    return False, row.get('reason') or 'not fitted'
  why = []
  if row.get('at_bound'):
    why.append('parameter(s) at a bound: ' + ', '.join(row['at_bound']))
  r2 = row.get('r2')
  if r2 is None or not np.isfinite(r2) or r2 < MIN_R2:
    why.append(f'R^2 {"undefined" if r2 is None else f"{r2:.2f}"} < {MIN_R2:g}')
  n = row.get('n_points') or 0
  if n < MIN_BUDGETS:
    why.append(f'{n} uncensored budget(s) < {MIN_BUDGETS}')
  if row.get('converged') is False:
    why.append('not converged')
  return not why, '; '.join(why) or None


def ratio_range(ratio: float, ratios) -> str | None:
  """'below' / 'above' the fitted ratios (an extrapolation), None inside their range."""
  r = np.asarray(ratios, np.float64)
  if ratio < r.min() - 1e-12:
    return 'below'
  if ratio > r.max() + 1e-12:
    return 'above'
  return None


def as_ratio(cmr):
  """A CMR value, or None when it is not a mixture ratio (outside [0, 1] or not finite)."""
  if cmr is None or not np.isfinite(cmr) or cmr < 0.0 or cmr > 1.0:
    return None
  return float(cmr)
