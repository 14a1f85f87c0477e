"""Budgets without future data: the CMR at T_b from the evals with T <= T_b only.

`cut(sweep, f)` keeps, per size, the evals with T <= T_b = f T_max, and makes T_b that size's
budget. fit_table refits everything (Eq. 6, bootstrap, CMR) on every cut of
options.budget_fractions: the CMR series, the CMR law (Eq. 8) and the CMR-vs-T trend use those
refits, so no budget ever sees a later eval. The same refits, evaluated at the full T_max,
are the leave-future-out predictions (`lfo_rows`), compared with what the full data say there.
"""

import dataclasses

import numpy as np

from mixlaw.laws import noise
from mixlaw.laws import curves as curves_lib


def cut(sweep: curves_lib.Sweep, frac: float):
  """(the sweep's evals with T <= frac T_max per size, {size: reason} of the sizes dropped:
  a run left with fewer evals than an Eq. 6 fit needs)."""
  if frac >= 1.0:
    return sweep, {}
  sizes, dropped = [], {}
  for s in sweep.sizes:
    t_b = frac * s.t_max
    curves, short = [], None
    for c in s.curves:
      runs = []
      for r in c.runs:
        k = r.t_N <= t_b * (1 + 1e-9)
        runs.append(dataclasses.replace(r, t_N=r.t_N[k], gen_N=r.gen_N[k], dom_N=r.dom_N[k]))
      n = min(r.t_N.size for r in runs)
      if n < curves_lib.MIN_POINTS:
        short = (f'R={c.ratio:g}: {n} eval(s) with T <= {t_b:.4g}; Eq. 6 needs '
                 f'{curves_lib.MIN_POINTS}')
        break
      last_g = np.mean([r.gen_N[-1] for r in runs])
      last_d = np.mean([r.dom_N[-1] for r in runs])
      curves.append(curves_lib.Curve(c.size, c.ratio, runs, min(float(r.t_N[-1]) for r in runs),
                                    s.base_gen + float(last_g), s.base_dom + float(last_d)))
    if short:
      dropped[s.name] = short
      continue
    sizes.append(dataclasses.replace(s, t_max=t_b, curves=curves,
                                     t_lo=min(float(r.t_N[0]) for c in curves for r in c.runs)))
  return curves_lib.Sweep(sizes, sweep.tokens_per_unit, sweep.domain, sweep.size_column), dropped


def measured_at(size, t_b: float, k: int, rho: float) -> dict:
  """Per curve of `size`: the smoothed measured dL_gen, dL_dom at t_b with standard errors."""
  out = {'general': [], 'domain': []}
  for c in size.curves:
    ts = [r.t_N for r in c.runs]
    for which, attr in (('general', 'gen_N'), ('domain', 'dom_N')):
      m, se, _ = noise.smoothed(ts, [getattr(r, attr) for r in c.runs], t_b, k, rho)
      out[which].append((m, se))
  return out
