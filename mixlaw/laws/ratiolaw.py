"""Stage `ratio_law`: the ratio law (a R^e + b, paper Table 2) on all of a size's ratios at T_max,
and leave-one-ratio-out predictions with four or more ratios.
"""

import dataclasses

import numpy as np

from mixlaw.laws import cmr as cmr_lib
from mixlaw.laws import fit as fit_lib
from mixlaw.laws import forms as forms_lib
from mixlaw.laws.budgetfits import BudgetFit, ratio_law_fits
from mixlaw.laws.eq6 import N_GRID, WHICH
from mixlaw.laws.options import FitOptions


@dataclasses.dataclass
class RatioLaw:
  size: str
  which: str
  t_max: float
  ratios: np.ndarray
  measured: np.ndarray  # absolute validation loss at T_max per ratio.
  result: fit_lib.FitResult
  index: int  # this law's row in `result`.
  r_grid: np.ndarray
  l_fit: np.ndarray


@dataclasses.dataclass
class HeldOut:
  """One ratio left out and predicted (predicted NaN: the fit did not converge)."""
  size: str
  which: str
  ratio: float
  measured: float
  predicted: float
  rel_error: float
  abs_error: float
  error_eps: float
  extrapolated: bool
  result: fit_lib.FitResult
  index: int


@dataclasses.dataclass
class RatioLaws:
  laws: list  # RatioLaw
  heldout: list  # HeldOut


def fit(full: BudgetFit, opts: FitOptions) -> RatioLaws:
  """Ratio law on all ratios at T_max, and leave-one-ratio-out predictions (paper Table 2)."""
  data, eq6 = full.data, full.eq6
  sweep, laws, held = data.sweep, [], []
  jobs_all, jobs_out = [], []
  for i, s in enumerate(sweep.sizes):
    js = data.of_size(i)
    for k in WHICH:
      y = []
      for j in js:
        c = data.curves[j]
        if abs(c.final_t - s.t_max) <= 1e-9 * s.t_max:
          y.append(c.final_gen_loss if k == 'general' else c.final_dom_loss)
        else:  # the run went past the common budget: its Eq. 6 value at T_max.
          base = s.base_gen if k == 'general' else s.base_dom
          y.append(base + float(cmr_lib.eq6_at(k, eq6.params[k][j], s.t_max)))
      y = np.array(y)
      if js.size >= 3:
        jobs_all.append((s, k, y))
      if js.size >= 4:
        jobs_out += [(s, k, y, h) for h in range(js.size)]
  xs = [j[0].ratios for j in jobs_all] + [j[0].ratios for j in jobs_out]
  if not xs:
    return RatioLaws(laws, held)
  ys = [j[2] for j in jobs_all] + [j[2] for j in jobs_out]
  ws = [np.ones(len(r)) for r in xs]
  for n, (_, _, _, h) in enumerate(jobs_out):
    ws[len(jobs_all) + n][h] = 0.0
  r = ratio_law_fits(xs, ys, ws)
  form = forms_lib.get_form('ratio_law')
  for m, (s, k, y) in enumerate(jobs_all):
    grid = np.linspace(s.ratios.min(), s.ratios.max(), N_GRID)
    laws.append(RatioLaw(s.name, k, s.t_max, s.ratios, y, r, m, grid,
                         forms_lib.evaluate(form, r.params(m), R=grid)))
  for n, (s, k, y, h) in enumerate(jobs_out):
    m = len(jobs_all) + n
    # A fit that is not converged (criteria unmet, off the data's range, worse than least
    # squares) predicts nothing: predicted = None, and flags say why.
    pred = (float(forms_lib.evaluate('ratio_law', r.params(m), R=s.ratios[h]))
            if r.converged_C[m] else np.nan)
    held.append(HeldOut(s.name, k, float(s.ratios[h]), float(y[h]), pred,
                        (pred - y[h]) / y[h], pred - y[h], (pred - y[h]) / opts.eps,
                        bool(h in (0, s.ratios.size - 1)), r, m))
  return RatioLaws(laws, held)
