"""Stage `series`: per size the CMR at every budget from that budget's refit (evals with
T <= T_b only), with intervals, the model-free pair and the R = 0 control; and the CMR law
(Eq. 8) fitted to each size's series, point estimate and replicates.
"""

import dataclasses

import numpy as np

from mixlaw.laws import bootstrap
from mixlaw.laws import fit as fit_lib
from mixlaw.laws import forms as forms_lib
from mixlaw.laws import intervals
from mixlaw.laws.budgetfits import BudgetFits, SizeCMR
from mixlaw.laws.eq6 import N_GRID
from mixlaw.laws.options import FitOptions


@dataclasses.dataclass
class SeriesPoint:
  """A size's CMR at budget T = fraction T_max from that budget's refit (reason: none)."""
  fraction: float
  T: float
  reason: str | None = None  # why there is no refit at this budget.
  cmr: float = float('nan')
  censor: int = 0
  cmr_a: float = float('nan')
  censor_a: int = 0
  n_boot: int = 0
  lo: float | None = None
  hi: float | None = None
  a_lo: float | None = None
  a_hi: float | None = None
  free: dict | None = None  # modelfree.at_budget
  control: tuple | None = None  # (dL_gen, se) of the R = 0 control, smoothed, if trained.


@dataclasses.dataclass
class CMRLaw:
  """One size's CMR law: None params where the series has < 4 uncensored points."""
  size: str
  n_series_ok: int
  result: fit_lib.FitResult | None = None
  index: int = 0  # the size's row in `result`.
  params_P: np.ndarray | None = None
  at_max: float = float('nan')
  t_grid: np.ndarray | None = None
  r_fit: np.ndarray | None = None
  params_lo_P: np.ndarray | None = None
  params_hi_P: np.ndarray | None = None
  boot_BxP: np.ndarray | None = None  # the replicates' finite parameter sets.
  at_max_lo: float = float('nan')
  at_max_hi: float = float('nan')
  n_ok: int = 0


@dataclasses.dataclass
class Series:
  points: list  # per size: [SeriesPoint] in budget order
  families: list  # per size: SizeCMR of the budgets refitted (B x J, one B for all sizes).
  fractions: list  # per size: the budget fraction of each family column.
  laws: list  # per size: CMRLaw
  n_boot: int  # replicates of the laws.


def fit(fits: BudgetFits, opts: FitOptions) -> Series:
  """The CMR series of every size and its CMR law (module doc)."""
  points, families = [], []
  for s in fits.full.sweep.sizes:
    pts, fam = _size_series(fits, s, opts)
    points.append(pts)
    families.append(fam)
  b_law = min((f.out['cmr_BxJ'].shape[0] for f in families), default=1)
  b_law = b_law or 1
  for fam in families:  # one replicate count for every size's law.
    fam.out = {k: v[:b_law] for k, v in fam.out.items()}
    fam.bad_B = fam.bad_B[:b_law]
  fractions = [[p.fraction for p in pts if p.reason is None] for pts in points]
  n_boot = min(opts.n_boot, fits.n_cut)
  laws = _laws(fits.full.sweep.sizes, families, n_boot, opts)
  return Series(points, families, fractions, laws, n_boot)


def _size_series(fits, s, opts):
  """([SeriesPoint] of size s, its SizeCMR family across the budgets refitted)."""
  pts, outs = [], []
  for f in sorted(opts.budget_fractions):
    a = fits.at(f)
    j = None if a is None else a.at_size(s.name)
    if j is None:
      pts.append(SeriesPoint(f, f * s.t_max, fits.dropped.get(f, {}).get(s.name, 'no refit')))
      continue
    o, sz = a.per_size[j].out, a.sweep.sizes[j]
    p = SeriesPoint(f, sz.t_max, None, float(o['cmr_BxJ'][0, 0]), int(o['censor_BxJ'][0, 0]),
                    float(o['cmr_a_B'][0]), int(o['censor_a_B'][0]), a.boot.n_boot,
                    free=a.free[j])
    if a.boot.n_boot:
      p.lo, p.hi, _, _ = intervals.censored_interval(o['cmr_BxJ'][1:, 0], o['censor_BxJ'][1:, 0],
                                                     p.cmr, p.censor, opts.ci_level)
      p.a_lo, p.a_hi, _, _ = intervals.censored_interval(o['cmr_a_B'][1:], o['censor_a_B'][1:],
                                                         p.cmr_a, p.censor_a, opts.ci_level)
    c0 = [k for k, c in enumerate(sz.curves) if c.ratio == 0.0]
    if c0:
      p.control = (a.free[j]['dL_general'][c0[0]], a.free[j]['dL_general_se'][c0[0]])
    pts.append(p)
    outs.append((o, a.per_size[j].bad_B))
  b = min(o['cmr_BxJ'].shape[0] for o, _ in outs) if outs else 1
  if outs:
    fam = SizeCMR(np.array([p.T for p in pts if p.reason is None]),
                  dict(cmr_BxJ=np.stack([o['cmr_BxJ'][:b, 0] for o, _ in outs], 1),
                       censor_BxJ=np.stack([o['censor_BxJ'][:b, 0] for o, _ in outs], 1)),
                  np.any(np.stack([bad[:b] for _, bad in outs], 1), axis=1))
  else:
    fam = SizeCMR(np.zeros(0), dict(cmr_BxJ=np.zeros((b, 0)), censor_BxJ=np.zeros((b, 0), int)),
                  np.zeros(b, bool))
  return pts, fam


# ----------------------------------------------------------------------------- the CMR law

def _cmr_law(series_T, series_y, series_ok, init=None):
  """CMR-law fits of rows with >= 4 uncensored points; returns (FitResult | None, row mask).
  Plain least squares (forms.cmr_law): the series is derived from fits, its scatter is not
  eval noise."""
  rows = np.flatnonzero(series_ok.sum(axis=1) >= 4)
  if not rows.size:
    return None, rows
  y = np.where(series_ok[rows], series_y[rows], 0.0)
  res = fit_lib.fit_curves('cmr_law', {'T': series_T[rows]}, y, series_ok[rows].astype(float),
                           what='CMR-law fit', huber_delta=None,
                           init_CxSxP=None if init is None else init[rows][:, None],
                           polish_iter=fit_lib.POLISH_ITER if init is None
                           else fit_lib.POLISH_ITER_BOOT)
  return res, rows


def _law_fits(per_size: list[SizeCMR], n_boot: int):
  """CMR law per size (point estimate, then replicates warm-started from it):
  (FitResult | None, its rows, S x P point parameters, B x S x P replicates, S x J ok)."""
  ser_T = np.stack([p.budgets for p in per_size])
  ser_y = np.stack([p.out['cmr_BxJ'][0] for p in per_size])
  ser_ok = np.stack([p.out['censor_BxJ'][0] == 0 for p in per_size])
  law, rows = _cmr_law(ser_T, ser_y, ser_ok)
  law_p = np.full((len(per_size), 3), np.nan)
  if law is not None:
    law_p[rows] = law.params_CxP
  boot = np.full((n_boot, len(per_size), 3), np.nan)
  if n_boot and law is not None:
    b_T = np.broadcast_to(ser_T, (n_boot,) + ser_T.shape).reshape(-1, ser_T.shape[1])
    b_y = np.stack([p.out['cmr_BxJ'][1:] for p in per_size], 1).reshape(-1, ser_T.shape[1])
    b_ok = np.stack([(p.out['censor_BxJ'][1:] == 0) & ~p.bad_B[1:, None] for p in per_size],
                    1).reshape(-1, ser_T.shape[1])
    init = np.broadcast_to(law_p, (n_boot,) + law_p.shape).reshape(-1, 3)
    b_ok &= np.isfinite(init).all(axis=1)[:, None]
    rb, rws = _cmr_law(b_T, b_y, b_ok, init=np.where(np.isfinite(init), init, 0))
    if rb is not None:
      flat = boot.reshape(-1, 3)
      flat[rws] = rb.params_CxP
      boot = flat.reshape(boot.shape)
  return law, rows, law_p, boot, ser_ok


def _laws(sizes, families, n_boot, opts) -> list[CMRLaw]:
  law, rows, law_p, boot, ser_ok = _law_fits(families, n_boot)
  form = forms_lib.get_form('cmr_law')
  out = []
  for i, s in enumerate(sizes):
    if law is None or i not in rows:
      out.append(CMRLaw(s.name, int(ser_ok[i].sum())))
      continue
    j = int(np.flatnonzero(rows == i)[0])
    p = law.params(j)
    grid = np.linspace(s.t_lo, s.t_max, N_GRID)
    c = CMRLaw(s.name, int(ser_ok[i].sum()), law, j, law_p[i],
               float(forms_lib.evaluate(form, p, T=s.t_max)), grid,
               forms_lib.evaluate(form, p, T=grid))
    if opts.n_boot:  # (the full fit's count decides, as in fits.json's cmr_law rows)
      pb = boot[:, i]
      ok = np.isfinite(pb).all(axis=1)
      c.params_lo_P, c.params_hi_P = bootstrap.interval_axis(pb[ok], law_p[i], opts.ci_level)
      vals = [float(forms_lib.evaluate(form, dict(zip(form.params, q)), T=s.t_max))
              for q in pb[ok]]
      c.at_max_lo, c.at_max_hi, c.n_ok, _ = bootstrap.interval(vals, c.at_max, opts.ci_level)
      c.boot_BxP = pb[ok]
    out.append(c)
  return out
