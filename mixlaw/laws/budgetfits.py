"""Stage `budget_fits`: everything fitted at each budget T_b = f T_max (budget_fractions), the
full data (f = 1) last, each from the evals with T <= T_b only (budgets.cut).

Per budget: Eq. 6 and its bootstrap (eq6.py) -> the ratio-law interpolation exponents ->
Definition 2 per size at T_b (cmr.py) -> the model-free CMRs at T_b (modelfree.py). Every budget
draws the same seeds (bootstrap.seed_draws), so replicate b is paired across budgets.
"""

import dataclasses
import logging
import time

import numpy as np

from mixlaw.laws import bootstrap
from mixlaw.laws import budgets as budgets_lib
from mixlaw.laws import cmr as cmr_lib
from mixlaw.laws import curves as curves_lib
from mixlaw.laws import eq6 as eq6_lib
from mixlaw.laws import fit as fit_lib
from mixlaw.laws import modelfree
from mixlaw.laws.eq6 import WHICH, Boot, Data, Eq6
from mixlaw.laws.options import FitOptions, LAM_RANGE

log = logging.getLogger(__name__)


@dataclasses.dataclass
class BudgetFit:
  """Every fit of one budget (the full sweep, or one cut at a budget)."""
  sweep: curves_lib.Sweep
  data: Data
  eq6: Eq6
  boot: Boot
  e: dict  # which -> (1 + n_boot) x S ratio-law interpolation exponents.
  per_size: list  # SizeCMR at the sweep's own T_max per size.
  free: list  # modelfree.at_budget per size at its T_max.

  def at_size(self, name: str):
    """The index of size `name` in this budget's sweep (None: dropped at this budget)."""
    for i, s in enumerate(self.sweep.sizes):
      if s.name == name:
        return i
    return None


@dataclasses.dataclass
class BudgetFits:
  """The full fit and one per earlier budget fraction (None: every size dropped there)."""
  full: BudgetFit
  cuts: dict  # fraction -> BudgetFit | None
  dropped: dict  # fraction -> {size: why it has no refit there}
  shared: bool  # data orders shared across (size, R): seed indices resampled jointly.
  n_cut: int  # bootstrap replicates of each earlier budget's refit.

  def at(self, f: float):
    return self.full if f >= 1.0 else self.cuts.get(f)


def fit(sweep: curves_lib.Sweep, opts: FitOptions) -> BudgetFits:
  """The full fit, then a refit at every budget fraction < 1 (see the module doc)."""
  clock = _Clock()
  shared = sweep.shared_orders(opts.data_orders)
  seeds = bootstrap.seed_draws(sweep.seed_labels(), opts.n_boot, opts.seed, shared,
                               opts.seed_resampling)
  seeds_of = {(c.size, c.ratio): d for (_, c), d in zip(sweep.curves(), seeds)}
  full = fit_budget(sweep, opts, opts.n_boot, seeds_of, shared)
  clock('full fit')
  cuts, dropped = {}, {}
  n_cut = opts.n_boot if opts.budget_boot is None else min(opts.budget_boot, opts.n_boot)
  for f in opts.budget_fractions:
    if f >= 1.0:
      continue
    sw, dropped[f] = budgets_lib.cut(sweep, f)
    cuts[f] = fit_budget(sw, opts, n_cut, seeds_of, shared) if sw.sizes else None
    clock(f'refit at {f:g} T_max')
  return BudgetFits(full, cuts, dropped, shared, n_cut)


def fit_budget(sweep, opts: FitOptions, n_boot: int, seeds_of: dict, shared: bool) -> BudgetFit:
  """Eq. 6, bootstrap, exponents, Definition 2 and the model-free CMRs at each size's T_max.
  seeds_of: (size, R) -> the bootstrap's stage-1 draw of that curve (bootstrap.seed_draws;
  shared by every cut, so replicate b draws the same seeds at every budget); shared: the data
  orders are shared across (size, R)."""
  data = eq6_lib.prepare(sweep)
  eq6 = eq6_lib.fit_eq6(data, opts)
  seeds = [tuple(a[:n_boot] for a in seeds_of[(c.size, c.ratio)]) for c in data.curves]
  boot = eq6_lib.replicate(data, eq6, opts, n_boot, seeds)
  e = interp_exponents(data, boot)
  per_size = cmr_stage(data, boot, e, opts, budgets_of=lambda s: np.array([s.t_max]))
  rng = np.random.default_rng([opts.seed, 11])
  free = [modelfree.at_budget(s, s.t_max, float(e['general'][0, i]), float(eq6.rho_S[i]),
                              opts, rng, shared) for i, s in enumerate(sweep.sizes)]
  return BudgetFit(sweep, data, eq6, boot, e, per_size, free)


class _Clock:
  """Logs the time of each step (logging level DEBUG)."""

  def __init__(self):
    self.t = time.perf_counter()

  def __call__(self, step):
    t = time.perf_counter()
    log.debug('budget_fits: %s took %.2f s', step, t - self.t)
    self.t = t


# ----------------------------------------------------------------------------- exponents

def ratio_law_fits(x_rows, y_rows, w_rows, init=None, polish_iter=fit_lib.POLISH_ITER):
  """Ratio-law fits of ragged rows, by plain least squares (forms.ratio_law: one point per
  ratio, too few to estimate a noise scale or call any point an outlier)."""
  k = max(len(x) for x in x_rows)
  x, y, w = np.ones((len(x_rows), k)), np.ones((len(x_rows), k)), np.zeros((len(x_rows), k))
  for i, (xr, yr, wr) in enumerate(zip(x_rows, y_rows, w_rows)):
    x[i, :len(xr)], y[i, :len(xr)], w[i, :len(xr)] = xr, yr, wr
  return fit_lib.fit_curves('ratio_law', {'R': x}, y, w, init_CxSxP=init, what='ratio-law fit',
                            polish_iter=polish_iter, huber_delta=None)


def interp_exponents(data: Data, boot: Boot) -> dict:
  """Ratio-law exponent e per (replicate, size) for each loss (cmr.interp_exponent; 1 with
  < 3 ratios). Replicates are warm-started from the point estimate's fit."""
  sizes, n_rep = data.sweep.sizes, 1 + boot.n_boot
  e = {k: np.ones((n_rep, len(sizes))) for k in WHICH}
  jobs = [(i, k) for i, s in enumerate(sizes) if len(s.curves) >= 3 for k in WHICH]
  if not jobs:
    return e
  vals = {(i, k): cmr_lib.eq6_at(k, boot.params[k][:, data.of_size(i)], sizes[i].t_max)
          for i, k in jobs}
  point = ratio_law_fits([sizes[i].ratios for i, _ in jobs], [vals[j][0] for j in jobs],
                         [np.ones(len(sizes[i].ratios)) for i, _ in jobs])
  for j, (i, k) in enumerate(jobs):
    e[k][0, i] = cmr_lib.interp_exponent(point.params_CxP[j, 1], point.r2_C[j])
  if not boot.n_boot:
    return e
  where = [(b, j) for b in range(1, n_rep) for j in range(len(jobs))
           if np.all(np.isfinite(vals[jobs[j]][b]))]
  if where:
    r = ratio_law_fits([sizes[jobs[j][0]].ratios for _, j in where],
                       [vals[jobs[j]][b] for b, j in where],
                       [np.ones(len(sizes[jobs[j][0]].ratios)) for _, j in where],
                       init=point.params_CxP[[j for _, j in where]][:, None],
                       polish_iter=fit_lib.POLISH_ITER_BOOT)
    ex = cmr_lib.interp_exponent(r.params_CxP[:, 1], r.r2_C)
    for (b, j), v in zip(where, ex):
      e[jobs[j][1]][b, jobs[j][0]] = v
  return e


# ----------------------------------------------------------------------------- Definition 2

@dataclasses.dataclass
class SizeCMR:
  """One size's CMR analysis (cmr.family_analysis) plus its budgets and failed replicates."""
  budgets: np.ndarray
  out: dict
  bad_B: np.ndarray


def cmr_stage(data: Data, boot: Boot, e: dict, opts: FitOptions,
              budgets_of=None) -> list[SizeCMR]:
  """Definition 2 per size and replicate at the budgets budgets_of(size) (default: a grid
  over [T_min, T_max])."""
  lams = [float(opts.lam)] + [x for x in LAM_RANGE if x != float(opts.lam)]
  per_size = []
  for i, s in enumerate(data.sweep.sizes):
    idx = data.of_size(i)
    n_rep = 1 + boot.n_boot
    fam = dict(ratios_K=np.broadcast_to(s.ratios, (n_rep, s.ratios.size)),
               gen_KxP=boot.params['general'][:, idx], dom_KxP=boot.params['domain'][:, idx],
               e_gen=e['general'][:, i], e_dom=e['domain'][:, i])
    bad = ~boot.ok_BxC[:, idx].all(axis=1)
    fam = {k: np.where(bad.reshape((-1,) + (1,) * (np.ndim(v) - 1)), np.asarray(v)[:1], v)
           for k, v in fam.items()}
    bud = cmr_lib.budgets(s.t_lo, s.t_max) if budgets_of is None else budgets_of(s)
    out = cmr_lib.family_analysis(fam, lams, opts.eps, s.t_lo, s.t_max, bud)
    out['lams'] = lams
    for k, z in (('cmr_BxJ', 'censor_BxJ'), ('cmr_a_B', 'censor_a_B')):
      out[k][bad], out[z][bad] = np.nan, -1  # failed replicates: NaN, dropped with a count.
    per_size.append(SizeCMR(bud, out, bad))
  return per_size

