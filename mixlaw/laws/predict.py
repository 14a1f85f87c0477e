"""`mixlaw predict`: the CMR at a model size N and a CPT budget from a workdir's fits.json.

Two fitted laws answer, each with its interval and where it extrapolates:
  - the CMR law (Eq. 8, fitted to the CMR at each budget from that budget's evals only) of a
    trained size within 1% of N: Definition 2 across budgets;
  - the joint ratio-size-steps surface: Definition 2 and condition A at any (N, T).
"""

import numpy as np

from mixlaw.laws import bootstrap
from mixlaw.laws import forms as forms_lib
from mixlaw.laws import surface as surface_lib
from mixlaw.laws.options import FitError

SAME_SIZE = 0.01  # relative distance at which N is a trained size.


def predict(fits: dict, n_params: float, tokens: float) -> dict:
  """The CMR at size n_params (the fits' size variable, options.size_column) and CPT budget
  `tokens` (CPT tokens)."""
  if not (np.isfinite(n_params) and n_params > 0 and np.isfinite(tokens) and tokens > 0):
    raise FitError(f'--params and --tokens must be positive, got {n_params:g}, {tokens:g}')
  o = fits['options']
  unit = float(o['tokens_per_unit'])
  t = tokens / unit
  sizes = fits['sizes']
  n_lo, n_hi = min(s['N'] for s in sizes), max(s['N'] for s in sizes)
  t_lo = min(min(ser['T']) for ser in fits['cmr_series'] if ser['T'])
  t_hi = max(s['T_max'] for s in sizes)
  out = dict(n_params=n_params, tokens=tokens, T=t, t_unit=o.get('t_unit'),
             size_column=o.get('size_column'), level=o['ci_level'],
             extrapolated_size=bool(n_params < n_lo * (1 - SAME_SIZE)
                                    or n_params > n_hi * (1 + SAME_SIZE)),
             extrapolated_budget=bool(t < t_lo * (1 - 1e-9) or t > t_hi * (1 + 1e-9)),
             trained_sizes=[[s['size'], s['N']] for s in sizes], trained_T=[t_lo, t_hi])
  near = [s for s in sizes if abs(s['N'] - n_params) <= SAME_SIZE * s['N']]
  law = None
  if near:
    law = [r for r in fits['cmr_law'] if r['size'] == near[0]['size']][0]
  if law is not None and law.get('params'):
    form = forms_lib.get_form('cmr_law')
    est = float(forms_lib.evaluate(form, law['params'], T=t))
    lo = hi = None
    if law.get('boot_params'):
      reps = [float(forms_lib.evaluate(form, dict(zip(form.params, p)), T=t))
              for p in law['boot_params']]
      lo, hi, _, _ = bootstrap.interval(reps, est, o['ci_level'])
    out['cmr_law'] = dict(size=near[0]['size'], cmr=est, lo=lo, hi=hi)
  elif near:
    out['cmr_law'] = dict(size=near[0]['size'], cmr=None, reason=law.get('reason') if law
                          else 'no CMR law')
  surf = fits.get('surface') or {}
  if surf.get('general') and not surf.get('reason'):
    ratios = [r for s in sizes for r in s['ratios']]
    out['surface'] = surface_lib.predict(surf, n_params, t, lam=o['lam'], eps=o['eps'],
                                         r_lo=min(ratios), r_hi=max(ratios))
  else:
    out['surface'] = dict(cmr=None, reason=surf.get('reason', 'no surface in fits.json'))
  return out


def format_prediction(p: dict) -> str:
  pct = lambda v: '-' if v is None or not np.isfinite(v) else f'{100 * v:.1f}%'
  lines = [f'N = {p["n_params"]:.4g} ({p["size_column"]}), CPT tokens = {p["tokens"]:.4g} '
           f'(T = {p["T"]:.4g}; {p["t_unit"]})']
  if p['extrapolated_size'] or p['extrapolated_budget']:
    what = [w for w, f in (('size', p['extrapolated_size']),
                           ('budget', p['extrapolated_budget'])) if f]
    lines.append(f'EXTRAPOLATES beyond the trained {" and ".join(what)}: sizes '
                 + ', '.join(f'{n} ({v:.3g})' for n, v in p['trained_sizes'])
                 + f'; T {p["trained_T"][0]:.3g} .. {p["trained_T"][1]:.3g}')
  lv = f'{100 * p["level"]:.0f}%'
  if 'cmr_law' in p:
    c = p['cmr_law']
    if c.get('cmr') is None:
      lines.append(f'CMR law of {c["size"]}: none ({c.get("reason")})')
    else:
      lines.append(f'CMR law of {c["size"]} (Definition 2): {pct(c["cmr"])} '
                   f'[{pct(c.get("lo"))}, {pct(c.get("hi"))}] ({lv})')
  s = p['surface']
  if s.get('cmr') is None and s.get('reason'):
    lines.append(f'surface: none ({s["reason"]})')
  else:
    lines.append(f'surface (Definition 2): {pct(s.get("cmr"))} [{pct(s.get("lo"))}, '
                 f'{pct(s.get("hi"))}] ({lv}); condition A only: '
                 f'{pct(s.get("cmr_condition_A"))} [{pct(s.get("condition_A_lo"))}, '
                 f'{pct(s.get("condition_A_hi"))}]')
  return '\n'.join(lines)
