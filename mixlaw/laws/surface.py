"""The joint ratio-size-steps surface: dL_gen, dL_dom as functions of (R, N, T) across sizes.

Forms `cmr_surface_gen` and `cmr_surface_dom` (forms.py) are fitted to every point of every
curve at once. The general part can turn (an R-independent drift, nonzero at R = 0, against a
rise whose T-shape depends on R), so its Definition-2 CMR is decided by a turn, not by a sign.
Leave-one-size-out (LOSO), only with >= MIN_LOSO sizes (with fewer, the size exponents of a fold
rest on two or three points and its "prediction" is not a test): refit without one size,
predict its curves and its CMR (same feasibility rule as cmr.py, on the surface's exact
T-derivatives), compare with the size's own data and its per-curve CMR; errors in nats, in
units of eps and relative. The point fit and the folds are one vmapped call per form.
Intervals: n_boot replicates (whole runs resampled, seed indices jointly when data orders are
shared, then each run's residuals from the surface redrawn as AR(1) noise; bootstrap.py), each
refitted warm-started at the point fit, all in one vmapped call per form; their parameters are
kept so that `predict` gives an interval at any (N, T).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mixlaw.laws import bootstrap
from mixlaw.laws import cmr as cmr_lib
from mixlaw.laws import fit as fit_lib
from mixlaw.laws import forms as forms_lib
from mixlaw.laws import intervals
from mixlaw.laws import noise
from mixlaw.laws.budgetfits import BudgetFits
from mixlaw.laws.intervals import num
from mixlaw.laws.options import FitOptions
from mixlaw.laws.summary import Summary

GEN, DOM = 'cmr_surface_gen', 'cmr_surface_dom'
WHICH = (('general', GEN, 'gen'), ('domain', DOM, 'dom'))

MAX_POINTS = 32  # per curve in the surface fit (log-spaced in T, last point kept).
MIN_LOSO = 4
N_BOOT = 50  # surface bootstrap replicates (predict's interval).
LEVEL = 0.95
B_PAD = 64  # replicate counts are padded to a multiple of this (shared compilations).
SMOOTH_K = 5  # evals per run averaged for the measured R = 0 change at T_max.


@dataclasses.dataclass
class Surface:
  """Stage `surface`: the joint surface, its CMRs, folds and replicates as fits.json stores them
  (`predict` reads them back from there)."""
  fit: dict


def run(sweep, fits: BudgetFits, summary: Summary, opts: FitOptions) -> Surface:
  """The surface of the whole sweep (opts.surface), compared with each size's own CMR."""
  if not opts.surface:
    return Surface(dict(reason='not requested (option surface = false)'))
  observed = np.array([np.nan if v is None else v for v in (num(c.cmr) for c in summary.cmr)])
  band = [[np.nan if v is None else v for v in (getattr(c, k) for c in summary.cmr)]
          for k in ('lo', 'hi')]
  return Surface(fit(sweep, huber_delta=float(np.nanmedian(fits.full.eq6.delta['general'])),
                     lam=opts.lam, eps=opts.eps, observed_cmr=observed, n_starts=opts.n_starts,
                     seed=opts.seed, data_orders='shared' if fits.shared else 'independent',
                     observed_lo=np.array(band[0]), observed_hi=np.array(band[1]),
                     level=opts.ci_level))


def _thin(t_N, m):
  if t_N.size <= m:
    return np.arange(t_N.size)
  targets = np.geomspace(t_N[0], t_N[-1], m)
  return np.unique(np.clip(np.searchsorted(t_N, targets), 0, t_N.size - 1))


def points(sweep, max_points=None):
  """(R, N, T, dL_gen, dL_dom) points of the sweep (max_points per run), their size, curve
  (index into sweep.curves()) and run (index within the curve); runs back to back, T order."""
  cols = {k: [] for k in ('R', 'N', 'T', 'gen', 'dom', 'size', 'curve', 'run')}
  for j, (i, c) in enumerate(sweep.curves()):
    for k, run in enumerate(c.runs):
      keep = _thin(run.t_N, max_points) if max_points else np.arange(run.t_N.size)
      for name, v in (('R', c.ratio), ('N', sweep.sizes[i].n), ('size', i), ('curve', j),
                      ('run', k)):
        cols[name].append(np.full(keep.size, v))
      cols['T'].append(run.t_N[keep])
      cols['gen'].append(run.gen_N[keep])
      cols['dom'].append(run.dom_N[keep])
  return {k: np.concatenate(v) for k, v in cols.items()}


# ----------------------------------------------------------------------------- the CMR

@functools.lru_cache(maxsize=None)
def _cmr_fn():
  gen_form, dom_form = forms_lib.get_form(GEN), forms_lib.get_form(DOM)

  def one(pg, pd, n, lam, eps, r_lo, r_hi, budgets_J):
    def value(form, p, r, t):
      return form.fn(dict(zip(form.params, p)), dict(R=r, N=n, T=t))

    gen_fn = lambda r, t: value(gen_form, pg, r, t)
    g_fn = lambda r, t: (jax.grad(lambda tt: value(dom_form, pd, r, tt))(t)
                         + lam * jax.grad(lambda tt: value(gen_form, pg, r, tt))(t))
    c, z = cmr_lib.cmr_core(gen_fn, g_fn, r_lo, r_hi, budgets_J, eps)
    ca, za = cmr_lib.cmr_core(gen_fn, g_fn, r_lo, r_hi, budgets_J, eps, use_cp=False)
    return c, z, ca, za

  return jax.jit(jax.vmap(one, in_axes=(0, 0) + (None,) * 6))


def surface_cmrs(params_gen_BxP, params_dom_BxP, n, *, lam, eps, r_lo, r_hi, t) -> dict:
  """Definition-2 and condition-A CMR (and censor codes, cmr.CENSOR) at size N = n and budget
  T = t for B parameter sets: dict of B-arrays cmr, censor, cmr_a, censor_a (NaN, 0 where a
  set is not finite)."""
  pg = np.atleast_2d(np.asarray(params_gen_BxP, np.float64))
  pd = np.atleast_2d(np.asarray(params_dom_BxP, np.float64))
  b = pg.shape[0]
  bb = -(-b // B_PAD) * B_PAD
  pad = lambda a: np.concatenate([a, np.repeat(a[:1], bb - b, axis=0)])
  with jax.enable_x64(True):
    out = _cmr_fn()(jnp.asarray(pad(pg)), jnp.asarray(pad(pd)), float(n), float(lam),
                    float(eps), float(r_lo), float(r_hi), jnp.asarray([float(t)]))
    c, z, ca, za = (np.array(o)[:b, 0] for o in out)
  ok = np.all(np.isfinite(pg), axis=1) & np.all(np.isfinite(pd), axis=1)
  return dict(cmr=np.where(ok, c, np.nan), censor=np.where(ok, z, 0),
              cmr_a=np.where(ok, ca, np.nan), censor_a=np.where(ok, za, 0))


def surface_cmr(params_gen, params_dom, n, *, lam, eps, r_lo, r_hi, t_max):
  """(CMR, censor) at T_max of a size with N = n on the fitted surface."""
  o = surface_cmrs(params_gen, params_dom, n, lam=lam, eps=eps, r_lo=r_lo, r_hi=r_hi, t=t_max)
  return float(o['cmr'][0]), int(o['censor'][0])


def _answer(o, level, n_boot):
  """Point (entry 0) and interval (entries 1..) of surface_cmrs' output."""
  out = {}
  for key, c, z, lo, hi in (('cmr', 'cmr', 'censor', 'lo', 'hi'),
                            ('cmr_condition_A', 'cmr_a', 'censor_a', 'condition_A_lo',
                             'condition_A_hi')):
    est, cen = float(o[c][0]), int(o[z][0])
    out[key] = num(est)
    out['censored' if key == 'cmr' else 'censored_condition_A'] = cmr_lib.CENSOR[cen]
    out[lo] = out[hi] = None
    if n_boot:
      out[lo], out[hi], n_ok, _ = intervals.censored_interval(o[c][1:], o[z][1:], est, cen,
                                                                  level)
      if key == 'cmr':
        out['n_ok'] = n_ok
  return out


# ----------------------------------------------------------------------------- bootstrap

def _replicates(sweep, sub, pred, n_boot, seed, seeds):
  """B x M targets per loss and B x M weights of the replicates (bootstrap.draw per curve)."""
  n_c = len(sweep.curves())
  idx = [np.flatnonzero(sub['curve'] == j) for j in range(n_c)]
  n = max(i.size for i in idx)
  run, w = -np.ones((n_c, n), int), np.zeros((n_c, n))
  y = {k: np.zeros((n_c, n)) for k in ('general', 'domain')}
  fit = {k: np.zeros((n_c, n)) for k in y}
  for j, i in enumerate(idx):
    run[j, :i.size], w[j, :i.size] = sub['run'][i], 1.0
    for k, col in (('general', 'gen'), ('domain', 'dom')):
      y[k][j, :i.size], fit[k][j, :i.size] = sub[col][i], pred[k][i]
  key = sub['curve'] * (sub['run'].max() + 1) + sub['run']  # one per run.
  rho_S = []
  for s in range(len(sweep.sizes)):
    mine = [np.flatnonzero(key == k) for k in np.unique(key[sub['size'] == s])]
    rho_S.append(max(noise.lag1([sub[c][m] - pred[k][m] for m in mine], 0)
                     for k, c in (('general', 'gen'), ('domain', 'dom'))))
  size_of = np.array([i for i, _ in sweep.curves()])
  reps = bootstrap.draw(run, w, fit, fit, y, n_boot, seed, rho_C=np.array(rho_S)[size_of],
                        n_params=dict(general=0, domain=0), seeds=seeds)
  m = sub['T'].size
  y_b = {k: np.zeros((n_boot, m)) for k in y}
  w_b = np.zeros((n_boot, m))
  for j, i in enumerate(idx):
    w_b[:, i] = reps.w_BxCxN[:, j, :i.size]
    for k in y:
      y_b[k][:, i] = reps.y_BxCxN[k][:, j, :i.size]
  return y_b, w_b, np.array(rho_S)


# ----------------------------------------------------------------------------- the fit

def _bounds_and_starts(form, n_starts, t_scale):
  """Start grid and bounds with Ta (a T) in the sweep's units (the grid assumes T_max ~ 100)."""
  starts = fit_lib.start_grid(form, n_starts)
  bounds = None
  if 'Ta' in form.params:
    starts[:, form.params.index('Ta')] *= t_scale
    bounds = {'Ta': tuple(v * t_scale for v in form.bounds['Ta'])}
  return starts, bounds


def fit(sweep, *, huber_delta, lam, eps, observed_cmr, n_starts, loso=True, n_boot=N_BOOT,
        seed=0, data_orders='auto', observed_lo=None, observed_hi=None,
        level=LEVEL) -> dict:
  """Point fit, LOSO folds (loso and >= MIN_LOSO sizes) and n_boot bootstrap refits.

  observed_cmr: per-size CMR (NaN where censored 'below'); observed_lo / observed_hi: its
  interval per size (None entries: open), to say whether the surface's CMR lies inside.
  data_orders: 'auto' | 'shared' | 'independent' (how runs are resampled: whole runs, seed
  labels jointly when shared; bootstrap.seed_draws 'runs', the per-size fits' draw with the
  same seed).
  """
  n_sizes = len(sweep.sizes)
  if sweep.size_column is None:
    return dict(reason='model sizes unknown: the table has no n_params_nonemb / n_params')
  if n_sizes < 2:
    return dict(reason='the surface needs two or more model sizes')
  sub = points(sweep, MAX_POINTS)
  folds = [-1] + (list(range(n_sizes)) if loso and n_sizes >= MIN_LOSO else [])
  fits, bounds = _fit_folds(sweep, sub, folds, huber_delta, n_starts)
  p0 = {which: fits[which].params_CxP[0] for which, _, _ in WHICH}
  out = _trained(sweep)
  for which, form, _ in WHICH:
    out[which] = dict(form=form, **_stats(fits[which].row(0)))
  out['converged'] = bool(out['general']['converged'] and out['domain']['converged'])
  boot = {which: np.zeros((0, len(forms_lib.get_form(form).params))) for which, form, _ in WHICH}
  if n_boot:
    boot, out['boot'] = _bootstrap(sweep, sub, fits, bounds, huber_delta, n_boot, seed,
                                   data_orders, level)
  else:
    out['boot'] = dict(n_boot=0, level=level)
  pg = np.concatenate([p0['general'][None], boot['general']])
  pd = np.concatenate([p0['domain'][None], boot['domain']])
  out['cmr'] = [_in_sample(sweep, i, pg, pd, lam, eps, level, n_boot, observed_cmr[i],
                           None if observed_lo is None else observed_lo[i],
                           None if observed_hi is None else observed_hi[i],
                           observed_lo is not None or observed_hi is not None)
                for i in range(n_sizes)]
  pts = points(sweep)
  out['loso'] = [_fold(sweep, fits, pts, f, held, lam, eps, observed_cmr)
                 for f, held in enumerate(folds) if held >= 0]
  if not out['loso']:
    out['loso_reason'] = ('not requested' if not loso else
                          f'leave-one-size-out needs {MIN_LOSO} or more sizes (this sweep has '
                          f'{n_sizes}): with fewer, each fold fits the size exponents to '
                          f'{max(n_sizes - 1, 0)} sizes and its prediction tests nothing')
  return out


def _fit_folds(sweep, sub, folds, huber_delta, n_starts):
  """The point fit (fold -1) and every LOSO fold of each form in one vmapped call:
  ({which: FitResult with a row per fold}, {which: bounds})."""
  w_FxM = np.stack([(sub['size'] != f).astype(float) for f in folds])
  xs = {k: np.broadcast_to(sub[k], w_FxM.shape) for k in ('R', 'N', 'T')}
  t_scale = max(s.t_max for s in sweep.sizes) / 100.0
  fits, setup = {}, {}
  for which, form, col in WHICH:
    f = forms_lib.get_form(form)
    starts, bounds = _bounds_and_starts(f, n_starts, t_scale)
    setup[which] = bounds
    fits[which] = fit_lib.fit_curves(
        form, xs, np.broadcast_to(sub[col], w_FxM.shape), w_FxM, huber_delta=huber_delta,
        init_CxSxP=np.broadcast_to(starts, (len(folds),) + starts.shape), what='fold',
        pad=False, bounds=bounds)
  return fits, setup


def _trained(sweep) -> dict:
  """The surface's units and the trained range of its variables."""
  t_lo = min(s.t_lo for s in sweep.sizes)
  t_hi = max(s.t_max for s in sweep.sizes)
  return dict(reason=None, size_variable=sweep.size_column, n_unit=forms_lib.N_UNIT,
              tokens_per_unit=float(sweep.tokens_per_unit),
              t_unit=f'T = CPT tokens / {sweep.tokens_per_unit:g}',
              trained=dict(sizes=[[s.name, float(s.n)] for s in sweep.sizes],
                           N=[float(min(s.n for s in sweep.sizes)),
                              float(max(s.n for s in sweep.sizes))],
                           T=[float(t_lo), float(t_hi)],
                           R=[float(min(s.ratios.min() for s in sweep.sizes)),
                              float(max(s.ratios.max() for s in sweep.sizes))]))


def _bootstrap(sweep, sub, fits, bounds, huber_delta, n_boot, seed, data_orders, level):
  """Replicates of every run, refitted from the point fit: ({which: B x P}, the 'boot' row)."""
  p0 = {which: fits[which].params_CxP[0] for which, _, _ in WHICH}
  pred = {which: forms_lib.evaluate(form, fits[which].params(0), R=sub['R'], N=sub['N'],
                                    T=sub['T']) for which, form, _ in WHICH}
  shared = sweep.shared_orders(data_orders)
  # Whole runs (the 'runs' draw): the surface has no per-run fits, so each run's deviation
  # from it is redrawn with its eval noise, and a wild draw of deviations has nothing to scale.
  m = bootstrap.seed_draws(sweep.seed_labels(), n_boot, seed, shared, 'runs')
  y_b, w_b, rho_S = _replicates(sweep, sub, pred, n_boot, seed, m)
  xb = {k: np.broadcast_to(sub[k], w_b.shape) for k in ('R', 'N', 'T')}
  conv = np.ones(n_boot, bool)
  boot = {}
  for which, form, _ in WHICH:
    r = fit_lib.fit_curves(form, xb, y_b[which], w_b, huber_delta=huber_delta,
                           init_CxSxP=np.broadcast_to(p0[which], (n_boot, 1, p0[which].size)),
                           polish_iter=fit_lib.POLISH_ITER_BOOT, what='replicate', pad=False,
                           bounds=bounds[which])
    boot[which] = r.params_CxP
    conv &= r.converged_C
  return boot, dict(
      n_boot=n_boot, seed=seed, level=level, n_converged=int(conv.sum()),
      data_orders='shared' if shared else 'independent',
      rho=[float(v) for v in rho_S],
      method=('whole runs resampled (seed indices jointly when data orders are shared), '
              'each run\'s residuals from the surface redrawn as AR(1) noise (bootstrap.py); '
              'refits warm-started at the point fit'),
      general_params=[[num(v) for v in row] for row in boot['general']],
      domain_params=[[num(v) for v in row] for row in boot['domain']])


def _in_sample(sweep, i, pg, pd, lam, eps, level, n_boot, obs, lo, hi, known) -> dict:
  """Size i's CMR on the surface (point and replicates pg / pd), against its own."""
  s = sweep.sizes[i]
  o = surface_cmrs(pg, pd, s.n, lam=lam, eps=eps, r_lo=s.ratios.min(), r_hi=s.ratios.max(),
                   t=s.t_max)
  row = dict(size=s.name, N=float(s.n), T_max=float(s.t_max),
             **_rename(_answer(o, level, n_boot)))
  row.update(cmr_observed=num(obs), observed_lo=num(lo), observed_hi=num(hi),
             inside_observed=_inside(row['cmr_surface'], row['censored'], lo, hi, known))
  row.update(_control(sweep, i, pg[0]))
  return row


def _rename(a):
  """_answer's keys as the in-sample rows name them (cmr_surface for the point)."""
  a = dict(a)
  a['cmr_surface'] = a.pop('cmr')
  return a


def _inside(c, censored, lo, hi, known):
  """Whether the surface's CMR lies in [lo, hi] (None: unknown). A None lo is open below (the
  interval reaches below the smallest trained R); censored 'below' lies below everything."""
  if not known:
    return None
  if censored == 'below':
    return lo is None or not np.isfinite(lo)
  lo_ok = lo is None or not np.isfinite(lo) or c >= lo - 1e-9
  hi_ok = hi is None or not np.isfinite(hi) or c <= hi + 1e-9
  return bool(lo_ok and hi_ok)


def _control(sweep, i, p_gen):
  """The R = 0 change at T_max: on the surface, and measured (mean over runs of the last
  SMOOTH_K evals) when R = 0 was trained."""
  s = sweep.sizes[i]
  surf = float(forms_lib.evaluate(GEN, dict(zip(forms_lib.get_form(GEN).params, p_gen)),
                                  R=0.0, N=s.n, T=s.t_max))
  zero = [c for c in s.curves if c.ratio == 0.0]
  meas = (float(np.mean([np.mean(r.gen_N[-SMOOTH_K:]) for r in zero[0].runs])) if zero
          else None)
  return dict(control_dL_general=surf, control_dL_general_measured=meas)


def _fold(sweep, fits, pts, f, held, lam, eps, observed_cmr):
  s = sweep.sizes[held]
  m = pts['size'] == held
  row = dict(heldout_size=s.name, N=s.n)
  for which, form, col in WHICH:
    p = fits[which].params(f)
    pred = forms_lib.evaluate(form, p, R=pts['R'][m], N=pts['N'][m], T=pts['T'][m])
    y = pts[col][m]
    err = pred - y
    rms_y = float(np.sqrt(np.mean(y ** 2)))
    rmse = float(np.sqrt(np.mean(err ** 2)))
    last = pts['T'][m] == pts['T'][m].max()
    mae = float(np.mean(np.abs(err[last])))
    row[which] = dict(params=p, converged=bool(fits[which].converged_C[f]),
                      at_bound=fits[which].bounded(f), rmse=rmse, rmse_eps=rmse / eps,
                      rel_rmse=rmse / rms_y if rms_y else None, final_mae=mae,
                      final_mae_eps=mae / eps)
  c, z = surface_cmr(fits['general'].params_CxP[f], fits['domain'].params_CxP[f], s.n,
                     lam=lam, eps=eps, r_lo=s.ratios.min(), r_hi=s.ratios.max(),
                     t_max=s.t_max)
  obs = observed_cmr[held]
  row.update(cmr_predicted=num(c), censored=cmr_lib.CENSOR[z], cmr_observed=num(obs),
             cmr_abs_error=num(abs(c - obs)), cmr_error_points=num(100 * (c - obs)),
             converged=row['general']['converged'] and row['domain']['converged'])
  return row


# ----------------------------------------------------------------------------- predict

def predict(surface_json: dict, n_params: float, t: float, *, lam: float, eps: float,
            r_lo: float, r_hi: float, level: float | None = None) -> dict:
  """Definition-2 and condition-A CMR at size N = n_params (the surface's size variable) and
  CPT budget T = t (the fits' units, surface_json['t_unit']) over R in [r_lo, r_hi], from the
  surface stored in fits.json; lo / hi from the stored bootstrap replicates (level: theirs by
  default). Flags extrapolated_size / extrapolated_budget outside the trained N / T range."""
  sf = surface_json or {}
  if sf.get('reason') or not sf.get('general'):
    return dict(cmr=None, reason=sf.get('reason') or 'no surface fitted')
  gen_f, dom_f = (forms_lib.get_form(sf[k]['form']) for k in ('general', 'domain'))
  if (gen_f.name, dom_f.name) != (GEN, DOM) or set(sf['general']['params']) != set(gen_f.params):
    return dict(cmr=None, reason='the stored surface is not this version\'s form (refit)')
  vec = lambda form, p: [np.nan if p.get(k) is None else p[k] for k in form.params]
  pg = [vec(gen_f, sf['general']['params'])]
  pd = [vec(dom_f, sf['domain']['params'])]
  boot = sf.get('boot') or {}
  n_boot = int(boot.get('n_boot') or 0)
  if n_boot:
    pg += [[np.nan if v is None else v for v in row] for row in boot['general_params']]
    pd += [[np.nan if v is None else v for v in row] for row in boot['domain_params']]
  level = boot.get('level', LEVEL) if level is None else level
  o = surface_cmrs(np.array(pg, np.float64), np.array(pd, np.float64), n_params, lam=lam,
                   eps=eps, r_lo=r_lo, r_hi=r_hi, t=t)
  out = dict(N=float(n_params), T=float(t), r_lo=float(r_lo), r_hi=float(r_hi), level=level,
             n_boot=n_boot, reason=None, **_answer(o, level, n_boot))
  tr = sf.get('trained') or {}
  n_lo, n_hi = tr.get('N', [np.nan, np.nan])
  t_lo, t_hi = tr.get('T', [np.nan, np.nan])
  tol = 1e-6
  out.update(extrapolated_size=bool(not n_lo * (1 - tol) <= n_params <= n_hi * (1 + tol)),
             extrapolated_budget=bool(not t_lo * (1 - tol) <= t <= t_hi * (1 + tol)),
             trained_N=[n_lo, n_hi], trained_T=[t_lo, t_hi], t_unit=sf.get('t_unit'),
             control_dL_general=float(forms_lib.evaluate(
                 gen_f, sf['general']['params'], R=0.0, N=n_params, T=t)))
  return out


def _stats(row):
  keep = ('params', 'mse', 'r2', 'objective', 'converged', 'at_bound', 'n_points', 'flags',
          'huber_delta')
  return {k: row[k] for k in keep if k in row}
