"""Condition B that knows its noise, and the Definition-2 CMR as a bracket.

Condition B at a budget T_b (the critical point has passed: g = dF/dT <= 0 at T_b, F = dL_dom
+ lam (dL_gen - eps)) is a sign test. A window slope of g has a standard error of the order of
|g| itself once the general loss has flattened, so "g <= 0" flips with the noise. Here, per
ratio, B
  passes        when g lies below 0 by z standard errors (g + z se <= 0),
  fails         when g lies above 0 by z standard errors (g - z se > 0),
  is undetermined otherwise.
The Definition-2 CMR is then a bracket: lo = the largest R where condition A holds and B passes,
hi = the largest R where A holds and B does not fail; the point value (g <= 0) lies between.
Values at trained ratios are interpolated piecewise-linearly in u = R^e, as modelfree.cmrs
does, but solved exactly per segment instead of on its 2001-point grid (they agree to the grid
step); censoring codes as there: 0 inside the trained ratios, 1 every ratio feasible up to the
largest (reported as it), 2 none (reported as NaN). Every function takes D rows at once
(Monte-Carlo draws, seeds).
"""

import numpy as np

PASS, UNDETERMINED, FAIL = 'passes', 'undetermined', 'fails'


def largest(ratios, e: float, conds) -> tuple[np.ndarray, np.ndarray]:
  """(CMR_D, censor_D): the largest R where every condition c(R) <= 0 holds, each given at the
  trained ratios (D x K) and linear in u = R^e between them (so exact, not on a grid)."""
  r = np.asarray(ratios, np.float64)
  u = r ** e
  lo = np.zeros(np.shape(conds[0])[:-1] + (r.size - 1,))
  hi = np.ones_like(lo)
  for c in conds:
    c = np.nan_to_num(np.asarray(c, np.float64), nan=np.inf)
    a, b = c[..., :-1], c[..., 1:]
    with np.errstate(divide='ignore', invalid='ignore'):
      w = np.where(a != b, a / (a - b), 0.0)  # where a + (b - a) w = 0
    lo = np.where((a > 0) & (b <= 0), np.maximum(lo, w), lo)
    hi = np.where((a <= 0) & (b > 0), np.minimum(hi, w), hi)
    dead = (a > 0) & (b > 0)
    lo, hi = np.where(dead, 1.0, lo), np.where(dead, -1.0, hi)
  ok = lo <= hi
  k = ok.shape[-1] - 1 - np.argmax(ok[..., ::-1], axis=-1)
  w = np.take_along_axis(hi, k[..., None], -1)[..., 0]
  u_at = u[k] + w * (u[k + 1] - u[k])
  cmr = np.where(ok.any(axis=-1), u_at ** (1.0 / e), np.nan)
  top = ok[..., -1] & (hi[..., -1] >= 1.0)
  censor = np.where(top, 1, np.where(ok.any(axis=-1), 0, 2))
  return np.where(top, r[-1], cmr), censor


def status(g_K, se_K, z: float) -> list:
  """Condition B per ratio: PASS, FAIL or UNDETERMINED (module docstring)."""
  g, se = np.asarray(g_K, np.float64), np.nan_to_num(np.asarray(se_K, np.float64), nan=np.inf)
  return [PASS if gg + z * s <= 0 else (FAIL if gg - z * s > 0 else UNDETERMINED)
          for gg, s in zip(g, se)]


def cmrs(ratios, m_DxK, g_DxK, e: float, eps: float, se_DxK=None, z: float = 2.0) -> dict:
  """Per row: the condition-A CMR (m <= eps), the Definition-2 CMR (and g <= 0), and with
  standard errors of g the bracket: 'lo' (B passes), 'hi' (B does not fail). Each value is
  a pair (CMR_D, censor_D). g +- z se is interpolated as one value (se interpolates with g)."""
  m = np.atleast_2d(np.asarray(m_DxK, np.float64)) - eps
  g = np.atleast_2d(np.asarray(g_DxK, np.float64))
  out = dict(condition_A=largest(ratios, e, [m]), def2=largest(ratios, e, [m, g]))
  if se_DxK is not None:
    se = np.nan_to_num(np.atleast_2d(np.asarray(se_DxK, np.float64)), nan=1e30)
    out['lo'] = largest(ratios, e, [m, g + z * se])
    out['hi'] = largest(ratios, e, [m, g - z * se])
  return out
