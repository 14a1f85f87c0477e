"""Stage `leave_future_out`: each earlier budget's fits (evals with T <= f T_max only, f in
lfo_fractions) predict the full T_max: per size the CMR, Definition 2 and condition A; per
(size, R) dL_gen and dL_dom; compared with the full data there (the full fit's CMRs, the
smoothed measured losses). Errors = predicted - measured.
"""

import dataclasses

import numpy as np

from mixlaw.laws import budgets as budgets_lib
from mixlaw.laws import cmr as cmr_lib
from mixlaw.laws import intervals
from mixlaw.laws.budgetfits import BudgetFits, cmr_stage
from mixlaw.laws.eq6 import WHICH
from mixlaw.laws.options import FitOptions

KINDS = (('', 'cmr_BxJ', 'censor_BxJ'), ('_condition_A', 'cmr_a_B', 'censor_a_B'))


@dataclasses.dataclass
class CMRPrediction:
  """Definition 2 (tag '') or condition A (tag '_condition_A') at T_max, predicted from T_b."""
  tag: str
  predicted: float
  measured: float
  predicted_censor: int
  measured_censor: int
  error: float  # predicted - measured
  predicted_lo: float | None = None  # None also: no bootstrap (then has_interval is False).
  predicted_hi: float | None = None
  has_interval: bool = False


@dataclasses.dataclass
class CurvePrediction:
  ratio: float
  dL: dict  # which -> (predicted, measured, measured se, error, error / eps) at T_max
  flags: list


@dataclasses.dataclass
class Prediction:
  size: str
  fraction: float
  t_fit_max: float
  t_max: float
  cmr: list  # CMRPrediction per KINDS
  curves: list  # CurvePrediction
  dL_general_max_abs_error: float | None


@dataclasses.dataclass
class LeaveFutureOut:
  rows: list  # Prediction, by fraction then size


def predict(fits: BudgetFits, opts: FitOptions) -> LeaveFutureOut:
  """Every lfo fraction's predictions of T_max (module doc)."""
  rows = []
  full = fits.full
  t_full = {s.name: s.t_max for s in full.sweep.sizes}
  for f in opts.lfo_fractions:
    a = fits.cuts.get(f)
    if a is None:
      continue
    pred = cmr_stage(a.data, a.boot, a.e, opts, budgets_of=lambda s: np.array([t_full[s.name]]))
    for j, s in enumerate(a.sweep.sizes):
      i = full.at_size(s.name)
      fs, fo, o = full.sweep.sizes[i], full.per_size[i].out, pred[j].out
      cmrs = [_cmr(o, fo, tag, k, z, a.boot.n_boot, opts) for tag, k, z in KINDS]
      meas = budgets_lib.measured_at(fs, fs.t_max, opts.smooth_k, float(full.eq6.rho_S[i]))
      curves = []
      for k, c in enumerate(s.curves):
        jc = a.data.of_size(j)[k]
        dl = {}
        for w in WHICH:
          pv = float(cmr_lib.eq6_at(w, a.eq6.params[w][jc], fs.t_max))
          mv, se = meas[w][k]
          dl[w] = (pv, mv, se, pv - mv, (pv - mv) / opts.eps)
        curves.append(CurvePrediction(c.ratio, dl, a.eq6.flags['general'][jc]
                                      + a.eq6.flags['domain'][jc]))
      errs = np.array([intervals.num(c.dL['general'][3]) for c in curves])
      errs = np.array([e for e in errs if e is not None])
      rows.append(Prediction(s.name, f, s.t_max, fs.t_max, cmrs, curves,
                             intervals.num(np.max(np.abs(errs))) if errs.size else None))
  return LeaveFutureOut(rows)


def _cmr(o, fo, tag, k, z, n_boot, opts):
  pv = float(np.ravel(o[k][0])[0])
  mv = float(np.ravel(fo[k][0])[0])
  p = CMRPrediction(tag, pv, mv, int(np.ravel(o[z][0])[0]), int(np.ravel(fo[z][0])[0]), pv - mv)
  if n_boot:
    p.predicted_lo, p.predicted_hi, _, _ = intervals.censored_interval(
        np.ravel(o[k][1:]) if o[k].ndim == 1 else o[k][1:, 0],
        np.ravel(o[z][1:]) if o[z].ndim == 1 else o[z][1:, 0], pv, p.predicted_censor,
        opts.ci_level)
    p.has_interval = True
  return p
