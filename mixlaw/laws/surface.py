"""The joint ratio-size-steps surface: dL_gen, dL_dom as functions of (R, N, T) across sizes.

Forms `cmr_surface_gen` and `cmr_surface_dom` (forms.py) are fitted to every point of every
curve at once. Leave-one-size-out (LOSO), only with >= MIN_LOSO sizes (with fewer, the size
exponents of a fold rest on two or three points and its "prediction" is not a test): refit
without one size, predict its curves and its CMR (same feasibility rule as cmr.py, on the
surface's exact T-derivatives), compare with the size's own data and its per-curve CMR; errors
in nats, in units of eps and relative; folds that did not converge are marked. All folds are
fitted in one vmapped call.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mixlaw.laws import cmr as cmr_lib
from mixlaw.laws import fit as fit_lib
from mixlaw.laws import forms as forms_lib

GEN, DOM = 'cmr_surface_gen', 'cmr_surface_dom'


MAX_POINTS = 32  # per curve in the surface fit (log-spaced in T, last point kept).
MIN_LOSO = 4


def _thin(t_N, m):
  if t_N.size <= m:
    return np.arange(t_N.size)
  targets = np.geomspace(t_N[0], t_N[-1], m)
  return np.unique(np.clip(np.searchsorted(t_N, targets), 0, t_N.size - 1))


def points(sweep, max_points=None):
  """(R, N, T, dL_gen, dL_dom) points of the sweep (max_points per run) and size index."""
  r, n, t, g, d, s = [], [], [], [], [], []
  for i, c in sweep.curves():
    for run in c.runs:
      keep = _thin(run.t_N, max_points) if max_points else np.arange(run.t_N.size)
      r.append(np.full(keep.size, c.ratio))
      n.append(np.full(keep.size, sweep.sizes[i].n))
      t.append(run.t_N[keep])
      g.append(run.gen_N[keep])
      d.append(run.dom_N[keep])
      s.append(np.full(keep.size, i))
  return {k: np.concatenate(v) for k, v in zip(('R', 'N', 'T', 'gen', 'dom', 'size'),
                                                  (r, n, t, g, d, s))}


@functools.lru_cache(maxsize=None)
def _cmr_fn():
  gen_form, dom_form = forms_lib.get_form(GEN), forms_lib.get_form(DOM)

  def run(pg, pd, n, lam, eps, r_lo, r_hi, budgets_J):
    def value(form, p, r, t):
      return form.fn(dict(zip(form.params, p)), dict(R=r, N=n, T=t))

    gen_fn = lambda r, t: value(gen_form, pg, r, t)
    g_fn = lambda r, t: (jax.grad(lambda tt: value(dom_form, pd, r, tt))(t)
                         + lam * jax.grad(lambda tt: value(gen_form, pg, r, tt))(t))
    return cmr_lib.cmr_core(gen_fn, g_fn, r_lo, r_hi, budgets_J, eps)

  return jax.jit(run)


def surface_cmr(params_gen, params_dom, n, *, lam, eps, r_lo, r_hi, t_max):
  """(CMR, censor) at T_max of a size with N = n on the fitted surface."""
  with jax.enable_x64(True):
    c, z = _cmr_fn()(jnp.asarray(params_gen, jnp.float64), jnp.asarray(params_dom, jnp.float64),
                     float(n), float(lam), float(eps), float(r_lo), float(r_hi),
                     jnp.asarray([float(t_max)]))
    return float(c[0]), int(z[0])


def fit(sweep, *, huber_delta, lam, eps, observed_cmr, n_starts) -> dict:
  """Full fit and LOSO folds. observed_cmr: per-size CMR (NaN where censored 'below')."""
  n_sizes = len(sweep.sizes)
  if sweep.size_column is None:
    return dict(reason='model sizes unknown: the table has no n_params_nonemb / n_params')
  if n_sizes < 2:
    return dict(reason='the surface needs two or more model sizes')
  sub = points(sweep, MAX_POINTS)
  pts = points(sweep)
  folds = [-1] + (list(range(n_sizes)) if n_sizes >= MIN_LOSO else [])
  w_FxM = np.stack([(sub['size'] != f).astype(float) for f in folds])
  xs = {k: np.broadcast_to(sub[k], w_FxM.shape) for k in ('R', 'N', 'T')}
  t_scale = max(s.t_max for s in sweep.sizes) / 100.0  # the Ta grid assumes T_max ~ 100.
  fits = {}
  for which, form in (('general', GEN), ('domain', DOM)):
    y = np.broadcast_to(sub['gen' if which == 'general' else 'dom'], w_FxM.shape)
    f = forms_lib.get_form(form)
    starts = fit_lib.start_grid(f, n_starts)
    bounds = None
    if 'Ta' in f.params:
      starts[:, f.params.index('Ta')] *= t_scale
      bounds = {'Ta': tuple(v * t_scale for v in f.bounds['Ta'])}
    fits[which] = fit_lib.fit_curves(form, xs, y, w_FxM, huber_delta=huber_delta,
                                     init_CxSxP=np.broadcast_to(starts, (len(folds),) +
                                                                starts.shape), what='fold',
                                     pad=False, bounds=bounds)
  out = dict(size_variable=sweep.size_column, n_unit=forms_lib.N_UNIT, reason=None)
  for which, form in (('general', GEN), ('domain', DOM)):
    out[which] = dict(form=form, **_stats(fits[which].row(0)))
  out['cmr'] = []
  for i, s in enumerate(sweep.sizes):
    c, z = surface_cmr(fits['general'].params_CxP[0], fits['domain'].params_CxP[0], s.n,
                       lam=lam, eps=eps, r_lo=s.ratios.min(), r_hi=s.ratios.max(),
                       t_max=s.t_max)
    out['cmr'].append(dict(size=s.name, cmr_surface=_nan(c), censored=cmr_lib.CENSOR[z],
                           cmr_observed=_nan(observed_cmr[i])))
  out['loso'] = [_fold(sweep, fits, pts, f, held, lam, eps, observed_cmr)
                 for f, held in enumerate(folds) if held >= 0]
  if not out['loso']:
    out['loso_reason'] = (f'leave-one-size-out needs {MIN_LOSO} or more sizes (this sweep has '
                          f'{n_sizes}): with fewer, each fold fits the size exponents to '
                          f'{max(n_sizes - 1, 0)} sizes and its prediction tests nothing')
  return out


def _fold(sweep, fits, pts, f, held, lam, eps, observed_cmr):
  s = sweep.sizes[held]
  m = pts['size'] == held
  row = dict(heldout_size=s.name, N=s.n)
  for which, form in (('general', GEN), ('domain', DOM)):
    p = fits[which].params(f)
    pred = forms_lib.evaluate(form, p, R=pts['R'][m], N=pts['N'][m], T=pts['T'][m])
    y = pts['gen' if which == 'general' else 'dom'][m]
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
  row.update(cmr_predicted=_nan(c), censored=cmr_lib.CENSOR[z], cmr_observed=_nan(obs),
             cmr_abs_error=_nan(abs(c - obs)), cmr_error_points=_nan(100 * (c - obs)),
             converged=row['general']['converged'] and row['domain']['converged'])
  return row


def _stats(row):
  return dict(params=row['params'], mse=row['mse'], r2=row['r2'], objective=row['objective'],
              converged=row['converged'], at_bound=row['at_bound'], n_points=row['n_points'])


def _nan(x):
  x = float(x)
  return x if np.isfinite(x) else None
