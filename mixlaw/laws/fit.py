"""Generic fitter: summed Huber loss, float64, vmapped multi-start L-BFGS, vmapped over curves.

One jitted call fits C curves (rows of C x N arrays; padding and bootstrap multiplicities are
weights), all under a scoped `jax.enable_x64`:
  phase 1, every start of a grid: L-BFGS on least squares (smooth, to find the basin); where the
    form has linear parameters they are projected out (variable projection: solved by weighted
    least squares given the others, gradient by the envelope theorem), so L-BFGS runs over the
    few non-linear ones;
  phase 2, the best start: L-BFGS on the summed Huber objective over every parameter, in
    coordinates whitened by the Gauss-Newton matrix at that start, to a tight tolerance.
Positive scales are optimised as logarithms. Residuals are divided by the curve's spread before
the Huber loss (delta alike), which leaves the minimiser unchanged and makes the tolerances
scale-free; the reported objective is in the data's units: sum_i w_i huber(residual_i, delta).
"""

import dataclasses
import functools
import math
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mixlaw.laws import forms as forms_lib

GTOL = 1e-10  # max |gradient| of the normalised objective.
FTOL = 1e-13  # relative decrease counted as a stall; 3 stalls in a row = converged.
MAX_ITER = 20  # per start, phase 1, forms with linear parameters (projected out).
MAX_ITER_FULL = 200  # per start, phase 1, forms without (all parameters).
MEMORY = 10  # L-BFGS history.
POLISH_ITER = 1000  # the best start, phase 2 (all parameters).


class FitError(ValueError):
  """Bad input to a fit: the message says what is wrong and what is needed."""


@dataclasses.dataclass
class FitResult:
  """Fits of C curves: params_CxP in value space (names in `names`), per-curve statistics."""
  form: str
  names: tuple[str, ...]
  params_CxP: np.ndarray
  objective_C: np.ndarray
  mse_C: np.ndarray
  r2_C: np.ndarray
  converged_C: np.ndarray
  n_points_C: np.ndarray
  iters_C: np.ndarray  # L-BFGS iterations of the final (polish) phase.

  def params(self, i: int = 0) -> dict[str, float]:
    return {k: float(v) for k, v in zip(self.names, self.params_CxP[i])}

  def row(self, i: int = 0) -> dict:
    return dict(params=self.params(i), objective=float(self.objective_C[i]),
                mse=float(self.mse_C[i]), r2=float(self.r2_C[i]),
                converged=bool(self.converged_C[i]), n_points=int(self.n_points_C[i]))


def start_grid(form: forms_lib.Form, n_starts: int = 64) -> np.ndarray:
  """S x P starting values over each non-linear parameter's range (geometric for 'log').

  k non-linear parameters: a Cartesian grid of cell centres with m = ceil(n^(1/k)) points each
  when m^k <= 2 n; otherwise n points of the R_k low-discrepancy sequence (Roberts 2018).
  Linear parameters start at 0 (they are then solved by least squares).
  """
  names = [k for k in form.params if form.kinds[k] != 'linear']
  k = len(names)
  starts = np.zeros((1, len(form.params)))
  if not k:
    return starts
  m = math.ceil(n_starts ** (1.0 / k) - 1e-9)
  if m ** k <= 2 * n_starts:
    c = (np.arange(m) + 0.5) / m
    u = np.stack(np.meshgrid(*[c] * k, indexing='ij'), -1).reshape(-1, k)
  else:
    phi = 2.0
    for _ in range(64):
      phi = (1 + phi) ** (1.0 / (k + 1))
    alpha = phi ** -np.arange(1, k + 1)
    u = (0.5 + np.arange(1, n_starts + 1)[:, None] * alpha[None]) % 1.0
  starts = np.zeros((u.shape[0], len(form.params)))
  for j, name in enumerate(names):
    lo, hi = form.ranges[name]
    starts[:, form.params.index(name)] = (
        np.exp(np.log(lo) + u[:, j] * (np.log(hi) - np.log(lo))) if form.kinds[name] == 'log'
        else lo + u[:, j] * (hi - lo))
  return starts


def huber(r, delta):
  a = jnp.abs(r)
  return jnp.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _is_log(form):
  return np.array([form.kinds[k] == 'log' for k in form.params])


def _to_values(form, theta_P):
  return jnp.where(_is_log(form), jnp.exp(theta_P), theta_P)


def _to_theta(form, values):
  values = np.asarray(values, np.float64)
  with np.errstate(divide='ignore', invalid='ignore'):
    return np.where(_is_log(form), np.log(np.where(_is_log(form), values, 1.0)), values)


def _predict(form, theta_P, xs):
  vals = _to_values(form, theta_P)
  return form.fn(dict(zip(form.params, vals)), xs)


def _residual(form, theta_P, xs, y_N):
  pred = _predict(form, theta_P, xs)
  return jnp.log(pred) - jnp.log(y_N) if form.space == 'log' else pred - y_N


def _lin_index(form):
  return np.array([i for i, k in enumerate(form.params) if form.kinds[k] == 'linear'], int)


def _chol_solve(g_LxL, b_L):
  """Solves a small SPD system given as nested lists of scalars (unrolled; vmaps cheaply)."""
  n = len(b_L)
  l = [[None] * n for _ in range(n)]
  for i in range(n):
    for j in range(i + 1):
      s = g_LxL[i][j] - sum(l[i][k] * l[j][k] for k in range(j))
      l[i][j] = jnp.sqrt(s) if i == j else s / l[j][j]
  z = [None] * n
  for i in range(n):
    z[i] = (b_L[i] - sum(l[i][k] * z[k] for k in range(i))) / l[i][i]
  x = [None] * n
  for i in reversed(range(n)):
    x[i] = (z[i] - sum(l[k][i] * x[k] for k in range(i + 1, n))) / l[i][i]
  return x


def _project(form, theta_P, xs, y_N, w_N):
  """Sets the linear parameters to their weighted least-squares values given the others
  (variable projection): column-scaled normal equations with a tiny ridge."""
  lin = _lin_index(form)
  if not lin.size:
    return theta_P

  def pred(c):
    return _predict(form, theta_P.at[lin].set(c), xs)

  # One batched evaluation at c = 0, e_1, ..., e_L: under vmap, everything that does not
  # depend on c (the costly powers) is computed once.
  basis = jnp.concatenate([jnp.zeros((1, lin.size)), jnp.eye(lin.size)]).astype(theta_P.dtype)
  f_LxN = jax.vmap(pred)(basis)
  f0 = f_LxN[0]
  cols = [f_LxN[k + 1] - f0 for k in range(lin.size)]
  ok = jnp.all(jnp.isfinite(f0) & jnp.all(jnp.isfinite(jnp.stack(cols)), axis=0) | (w_N == 0))
  sw = jnp.sqrt(w_N)
  cols = [jnp.where(w_N > 0, c * sw, 0.0) for c in cols]
  r = jnp.where(w_N > 0, (y_N - f0) * sw, 0.0)
  d = [jnp.sqrt(jnp.sum(c * c)) + 1e-300 for c in cols]
  cols = [c / di for c, di in zip(cols, d)]
  g = [[jnp.sum(ci * cj) + (1e-12 if i == j else 0.0) for j, cj in enumerate(cols)]
       for i, ci in enumerate(cols)]
  x = _chol_solve(g, [jnp.sum(ci * r) for ci in cols])
  c = jnp.stack([xi / di for xi, di in zip(x, d)])
  c = jnp.where(ok & jnp.all(jnp.isfinite(c)), c, jnp.nan)
  return theta_P.at[lin].set(c)


def _lbfgs(fun, theta0, max_iter):
  """Minimises fun from theta0 with optax L-BFGS (backtracking Armijo line search).

  Returns (theta, value, converged, iterations). Converged: the largest |gradient| is <= GTOL,
  or three iterations in a row change the value by <= FTOL relative. A non-finite step or
  five line searches in a row that fail to decrease the value stop the run unconverged.
  Finished runs get a zero gradient, so under vmap they pass their line search at once.
  """
  ls = optax.scale_by_backtracking_linesearch(max_backtracking_steps=12, decrease_factor=0.5)
  opt = optax.lbfgs(memory_size=MEMORY, linesearch=ls)
  vg = jax.value_and_grad(fun)

  def cond(c):
    return (~c[6]) & (c[3] < max_iter)

  def body(c):
    theta, st, _, it, stall, fails, _, _ = c
    f, g = vg(theta)
    finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(g))
    conv = finite & ((jnp.max(jnp.abs(g)) <= GTOL) | (stall >= 3))
    done = conv | ~finite | (fails >= 5)
    upd, st = opt.update(jnp.where(done, 0.0, g), st, theta, value=f, grad=g, value_fn=fun)
    new = optax.apply_updates(theta, upd)
    f2 = optax.tree.get(st, 'value')
    bad = ~jnp.isfinite(f2) | ~jnp.all(jnp.isfinite(new))
    new, f2 = jnp.where(done | bad, theta, new), jnp.where(done | bad, f, f2)
    tiny = jnp.abs(f - f2) <= FTOL * jnp.maximum(jnp.abs(f2), 1e-300)
    stall = jnp.where(tiny, stall + 1, 0)
    fails = jnp.where(~tiny & (f2 > f), fails + 1, 0)
    return new, st, f2, it + jnp.where(done, 0, 1), stall, fails, done | bad, conv

  c0 = (theta0, opt.init(theta0), jnp.asarray(jnp.inf, theta0.dtype), jnp.int32(0),
        jnp.int32(0), jnp.int32(0), jnp.bool_(False), jnp.bool_(False))
  out = jax.lax.while_loop(cond, body, c0)
  return out[0], out[2], out[7], out[3]


def _preconditioned(fun, res_fn, theta0):
  """fun and the map z -> theta of a Gauss-Newton-whitened parameterisation around theta0."""
  j_NxP = jax.jacfwd(res_fn)(theta0)
  j_NxP = jnp.where(jnp.isfinite(j_NxP), j_NxP, 0.0)
  lam, v = jnp.linalg.eigh(j_NxP.T @ j_NxP)
  lam = jnp.maximum(lam, jnp.max(lam) * 1e-14 + 1e-300)
  m_PxP = v / jnp.sqrt(lam)[None, :]
  to_theta = lambda z: theta0 + m_PxP @ z
  return (lambda z: fun(to_theta(z))), to_theta


@functools.lru_cache(maxsize=None)
def _solver(name: str):
  """Jitted (theta0_CxSxP, xs{C x N}, y_CxN, w_CxN, delta_C, iters_2) -> fitted C-arrays."""
  form = forms_lib.get_form(name)
  lin = _lin_index(form)
  nl = np.setdiff1d(np.arange(len(form.params)), lin)
  is_lin = np.isin(np.arange(len(form.params)), lin)

  def one_curve(theta0_SxP, xs, y, w, delta, iters):
    t = jnp.log(y) if form.space == 'log' else y
    sw = jnp.sum(w)
    mean = jnp.sum(w * t) / sw
    scale = jnp.sqrt(jnp.sum(w * (t - mean) ** 2) / sw)
    scale = jnp.where(scale > 0, scale, 1.0)
    dn = delta / scale

    def res(theta):
      return jnp.where(w > 0, _residual(form, theta, xs, y) / scale, 0.0)

    def fun(theta):  # the summed Huber objective (normalised units).
      v = jnp.sum(w * huber(res(theta), dn))
      return jnp.where(jnp.isfinite(v), v, jnp.inf)

    def lsq(theta):  # least squares: smooth, for the basin search.
      v = 0.5 * jnp.sum(w * res(theta) ** 2)
      return jnp.where(jnp.isfinite(v), v, jnp.inf)

    def full(th_nl):
      return _project(form, jnp.zeros(len(form.params), th_nl.dtype).at[nl].set(th_nl),
                      xs, y, w)

    def phi(th_nl):  # projected least squares; gradient by the envelope theorem.
      th = full(th_nl)
      th = jnp.where(is_lin, jax.lax.stop_gradient(th), th)
      v = 0.5 * jnp.sum(w * res(th) ** 2)
      return jnp.where(jnp.isfinite(v), v, jnp.inf)

    # Phase 1, every start: least squares by L-BFGS (non-linear parameters only where the
    # linear ones can be projected out).
    if lin.size and nl.size:
      th_SxQ = jax.vmap(lambda th: _lbfgs(phi, th, iters[0])[0])(theta0_SxP[:, nl])
      th_SxP = jax.vmap(full)(th_SxQ)
    elif lin.size:
      th_SxP = jax.vmap(full)(theta0_SxP)
    else:
      th_SxP = jax.vmap(lambda th: _lbfgs(lsq, th, iters[0])[0])(theta0_SxP)
    f_S = jax.vmap(fun)(th_SxP)
    f_S = jnp.where(jnp.isfinite(f_S), f_S, jnp.inf)
    best = th_SxP[jnp.argmin(f_S)]
    # Phase 2, the best start: every parameter, the exact summed-Huber objective, L-BFGS in
    # Gauss-Newton-whitened coordinates.
    fz, to_theta = _preconditioned(fun, res, jnp.where(jnp.isfinite(best), best, 0.0))
    z, f, conv, n_it = _lbfgs(fz, jnp.zeros_like(best), iters[1])
    theta = to_theta(z)
    # Statistics in loss space.
    pred = _predict(form, theta, xs)
    r = jnp.where(w > 0, pred - y, 0.0)
    ybar = jnp.sum(w * y) / sw
    sse = jnp.sum(w * r ** 2)
    sst = jnp.sum(w * (y - ybar) ** 2)
    r2 = jnp.where(sst > 0, 1.0 - sse / sst, jnp.where(sse == 0, 1.0, -jnp.inf))
    vals = _to_values(form, theta)
    ok = jnp.isfinite(f) & jnp.all(jnp.isfinite(vals))
    return vals, f * scale ** 2, sse / sw, r2, conv & ok, n_it

  return jax.jit(jax.vmap(one_curve, in_axes=(0, 0, 0, 0, 0, None)))


def _bucket(c: int, n: int) -> tuple[int, int]:
  """Padded (C, N): N to a multiple of 16 (at least 64); C to a power of two, at least 64 for
  short curves (cheap, so small fits share one compilation) and 8 otherwise; past 1024 to a
  multiple of 1024."""
  nb = max(64, -(-n // 16) * 16)
  cb = max(64 if nb == 64 else 8, 1 << (max(c, 1) - 1).bit_length())
  return (cb if c <= 1024 else -(-c // 1024) * 1024), nb


def _canonical(form, params_CxP):
  """Orders interchangeable terms (e.g. Eq. 6's two general-loss powers) by exponent, desc."""
  if not form.swap:
    return params_CxP
  (a1, s1), (a2, s2) = [(form.params.index(a), form.params.index(s)) for a, s in form.swap]
  out = params_CxP.copy()
  flip = params_CxP[:, s1] < params_CxP[:, s2]
  out[flip, a1], out[flip, a2] = params_CxP[flip, a2], params_CxP[flip, a1]
  out[flip, s1], out[flip, s2] = params_CxP[flip, s2], params_CxP[flip, s1]
  return out


def fit_curves(form, variables: Mapping[str, np.ndarray], y_CxN, w_CxN=None, *,
               huber_delta: float = 1e-3, n_starts: int = 64, init_CxSxP=None,
               max_iter: int | None = None, polish_iter: int = POLISH_ITER,
               what: str = 'curve', pad: bool = True) -> FitResult:
  """Fits `form` to C curves at once.

  variables: name -> C x N array (every variable of the form). y_CxN: targets. w_CxN: point
  weights (0 = padding; integers = bootstrap multiplicities); default all ones.
  init_CxSxP: optional starting values (value space) replacing the grid, e.g. one warm start
    per curve (S = 1) for bootstrap refits.
  max_iter: phase-1 L-BFGS iterations per start (default MAX_ITER, or MAX_ITER_FULL for forms
  without linear parameters); polish_iter: phase-2 iterations of the best start.
  `what` names the curves in error messages. pad: round C and N up to shared sizes so that
  calls of similar size reuse one compilation.
  """
  form = forms_lib.get_form(form) if isinstance(form, str) else form
  y = np.asarray(y_CxN, np.float64)
  if y.ndim != 2:
    raise FitError(f'{form.name}: targets must be C x N, got shape {y.shape}')
  if y.size == 0:
    raise FitError(f'{form.name}: no data points; need at least {len(form.params)} per {what}')
  w = np.ones_like(y) if w_CxN is None else np.asarray(w_CxN, np.float64)
  missing = [k for k in form.variables if k not in variables]
  if missing:
    raise FitError(f'{form.name}: missing variables {missing}; the form needs {form.variables}')
  xs = {k: np.broadcast_to(np.asarray(variables[k], np.float64), y.shape).copy()
        for k in form.variables}
  if w.shape != y.shape or np.any(~np.isfinite(w)) or np.any(w < 0):
    raise FitError(f'{form.name}: weights must be finite, >= 0 and shaped like the targets')
  used = w > 0
  for k, a in list(xs.items()) + [('loss', y)]:
    bad = used & ~np.isfinite(a)
    if bad.any():
      c = int(np.argwhere(bad)[0][0])
      raise FitError(f'{form.name}: {int(bad.sum())} non-finite value(s) of {k!r} '
                     f'(first in {what} {c}); remove NaN/inf rows before fitting')
  if form.space == 'log' and np.any(used & (y <= 0)):
    raise FitError(f'{form.name}: fits log-loss, so every loss must be > 0')
  n_C = used.sum(axis=1)
  few = np.flatnonzero(n_C < len(form.params))
  if few.size:
    raise FitError(f'{form.name}: {what} {int(few[0])} has {int(n_C[few[0]])} point(s) but the '
                   f'form has {len(form.params)} parameters {form.params}; need at least '
                   f'{len(form.params)}')
  if init_CxSxP is None:
    st = start_grid(form, n_starts)
    theta0 = np.broadcast_to(_to_theta(form, st), (y.shape[0],) + st.shape)
  else:
    init = np.asarray(init_CxSxP, np.float64)
    theta0 = _to_theta(form, init.reshape((y.shape[0], -1, len(form.params))))
  # Pad to bucketed shapes (fewer compilations); padding gets harmless values and weight 0.
  c, n = y.shape
  cb, nb = _bucket(c, n) if pad else (c, n)
  pad = lambda a, v: np.pad(np.where(used, a, v), ((0, cb - c), (0, nb - n)), constant_values=v)
  kern = forms_lib.get_form(form.kernel) if form.kernel else form
  xs = {kv: pad(xs[fv], 1.0) for kv, fv in zip(kern.variables, form.variables)}
  y_p, w_p = pad(y, 1.0), pad(w, 0.0)
  w_p[c:, 0] = 1.0  # padded curves: one dummy point keeps their statistics finite.
  theta0 = np.concatenate([theta0, np.repeat(theta0[:1], cb - c, axis=0)])
  solve = _solver(kern.name)
  if max_iter is None:
    max_iter = MAX_ITER if _lin_index(form).size else MAX_ITER_FULL
  with jax.enable_x64(True):
    out = solve(jnp.asarray(theta0), {k: jnp.asarray(v) for k, v in xs.items()},
                jnp.asarray(y_p), jnp.asarray(w_p), jnp.full(cb, float(huber_delta), jnp.float64),
                jnp.asarray([max_iter, polish_iter], jnp.int32))
    vals, obj, mse, r2, conv, n_it = (np.array(o)[:c] for o in out)
  return FitResult(form.name, form.params, _canonical(form, vals.astype(np.float64)),
                   obj, mse, r2, conv.astype(bool), n_C.astype(int), n_it.astype(int))


def fit_one(form, variables: Mapping[str, np.ndarray], y_N, w_N=None, **kw) -> FitResult:
  """Fits one curve (1-D arrays); same options as fit_curves."""
  y = np.asarray(y_N, np.float64).reshape(-1)
  v = {k: np.asarray(a, np.float64).reshape(-1)[None] for k, a in variables.items()}
  w = None if w_N is None else np.asarray(w_N, np.float64).reshape(1, -1)
  return fit_curves(form, v, y[None], w, **kw)
