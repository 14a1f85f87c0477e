"""Generic fitter: summed Huber (or least-squares) loss, float64, bounded, vmapped multi-start
L-BFGS, vmapped over curves.

One jitted call fits C curves (rows of C x N arrays; padding and bootstrap multiplicities are
weights), all under a scoped `jax.enable_x64`:
  phase 1, every start (a grid, or the caller's warm starts, plus safe starts below): L-BFGS on
    least squares (smooth, to find the basin); where the form has linear parameters they are
    projected out (variable projection: solved by weighted, box-constrained least squares given
    the others, exactly, by enumerating which bounds are active; gradient by Danskin's theorem),
    so L-BFGS runs over the few non-linear ones. One more start always comes from a scan: the
    projected least-squares objective on SCAN_POINTS points spread over the whole box of the
    non-linear parameters (for a x^s + b: the exact linear least-squares solution on a grid of
    64 exponents in [-3, 3]); forms without linear parameters get the grid's centre as a safe
    start beside warm starts;
  the loss: the least-squares best start gives the residual scale; with huber_delta 'noise' the
    Huber delta is huber_c x 1.4826 MAD of its residuals (least squares when fewer than
    NOISE_MIN_DOF residual degrees of freedom remain);
  phase 2, the best start by that loss: L-BFGS on it over every parameter, in coordinates
    whitened by the Gauss-Newton matrix where it stands (every POLISH_CHUNK iterations).
L-BFGS (lbfgs.py) keeps a step only when its backtracking line search found sufficient (Armijo)
decrease; otherwise theta and the value stay, the memory is cleared, and a second failure in a
row stops the run. Converged: max |gradient| <= GTOL, or the value changed by <= FTOL
(relative) in the last step (or could not be decreased at all) at a point where max |gradient|
<= RTOL x the residual scale sqrt(2 objective / (n - p)); in the whitened coordinates the
gradient is about the distance to the optimum in standard errors (less where the curvature
exceeds Gauss-Newton's), so this says: within RTOL standard errors of the optimum, and no
decrease left to find.
A fit is also not converged, and says why in `flags_C`, when its in-sample predictions leave the
data's range by more than OFF_RANGE_K sigma (sigma: the least-squares best start's residual
scale, between SIGMA_FLOOR and 1 times the data's standard deviation) or its objective ends
above the least-squares start's.
Bounds (forms.py) are a reparametrisation, so the optimiser itself is unconstrained: a bounded
parameter is lo + (hi - lo) * sigmoid(z) (of its logarithm for positive scales), a linear one
is amp * tanh(u) / m, where m is the largest magnitude of its term on the data and amp =
amp_bound * max |y|. A parameter within 1e-3 of its box (relative to the box) is `at_bound`.
Residuals are divided by the curve's spread before the loss (delta alike), which leaves the
minimiser unchanged and makes the tolerances scale-free; the reported objective is in the
data's units: sum_i w_i huber(residual_i, delta_i) (0.5 sum_i w_i residual_i^2 for least
squares).
"""

import dataclasses
import functools
import itertools
import math
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mixlaw.laws import forms as forms_lib
from mixlaw.laws import lbfgs
from mixlaw.laws.lbfgs import (CONV_DECREASE, CONV_GRAD, LS_FAILED, LS_STEPS, NONFINITE, RTOL,
                               RUNNING)
from mixlaw.laws.options import FitError, N_STARTS

MAX_ITER = 20  # per start, phase 1, forms with linear parameters (projected out).
MAX_ITER_FULL = 200  # per start, phase 1, forms without (all parameters).
POLISH_ITER = 1000  # the best start, phase 2 (all parameters).
POLISH_ITER_BOOT = 200  # bootstrap refits: warm-started at the point fit, they need fewer.
POLISH_CHUNK = 50  # phase 2 re-whitens where it stands every this many iterations.
SEARCH_TOL = (1e-7, 1e-10, 1e-4)  # phase 1 (gtol, ftol, rtol x sqrt(2 value)): basin search.
HUBER_C = 1.345  # 'noise' delta = HUBER_C x the robust noise scale (95% efficiency, Gaussian).
NOISE_MIN_DOF = 5  # fewer residual degrees of freedom: no noise scale, least squares.
SCAN_POINTS = 64  # the projected least-squares scan over the box of the non-linear parameters.
OFF_RANGE_K = 5.0  # in-sample predictions beyond the data's range by more sigmas: flagged.
SIGMA_FLOOR = 1e-3  # sigma of the range check: at least this fraction of the data's standard
#                     deviation, and at most all of it (a garbage start cannot widen the range).
AT_BOUND = 1e-3  # a parameter this close to its box (fraction of the box) is at the bound.
START_CLIP = 1e-6  # warm starts on a bound begin this far inside it (so they can leave).


@dataclasses.dataclass
class FitResult:
  """Fits of C curves: params_CxP in value space (names in `names`), per-curve statistics.

  lo_CxP, hi_CxP: the box each parameter was held to (for linear ones: the amplitude bound on
  that curve); at_bound_CxP: the fit sits on it. converged_C: the L-BFGS criteria held and the
  fit is in range and no worse than its least-squares start; flags_C: why not (empty when
  converged). delta_C: the Huber delta used (inf: least squares); sigma_C: the residual scale
  of the range check; off_range_C: in-sample predictions beyond the data's range by more than
  OFF_RANGE_K sigma_C.
  """
  form: str
  names: tuple[str, ...]
  params_CxP: np.ndarray
  objective_C: np.ndarray
  mse_C: np.ndarray
  r2_C: np.ndarray
  converged_C: np.ndarray
  n_points_C: np.ndarray
  iters_C: np.ndarray  # L-BFGS iterations of the final (polish) phase.
  at_bound_CxP: np.ndarray
  lo_CxP: np.ndarray
  hi_CxP: np.ndarray
  delta_C: np.ndarray | None = None
  sigma_C: np.ndarray | None = None
  off_range_C: np.ndarray | None = None
  flags_C: tuple | None = None  # per curve: a tuple of reasons (str).

  def params(self, i: int = 0) -> dict[str, float]:
    return {k: float(v) for k, v in zip(self.names, self.params_CxP[i])}

  def bounded(self, i: int = 0) -> list[str]:
    """Names of the parameters of curve i that sit on a bound."""
    return [k for k, b in zip(self.names, self.at_bound_CxP[i]) if b]

  def flags(self, i: int = 0) -> list[str]:
    """Why curve i is not converged (empty when it is)."""
    if self.flags_C is None:
      return [] if self.converged_C[i] else ['not converged']
    return list(self.flags_C[i])

  def row(self, i: int = 0) -> dict:
    d = None if self.delta_C is None else float(self.delta_C[i])
    return dict(params=self.params(i), objective=float(self.objective_C[i]),
                mse=float(self.mse_C[i]), r2=float(self.r2_C[i]),
                converged=bool(self.converged_C[i]), n_points=int(self.n_points_C[i]),
                at_bound=self.bounded(i), flags=self.flags(i),
                huber_delta=d if d is not None and np.isfinite(d) else None)


def _unit_grid(k: int, n: int) -> np.ndarray:
  """~n points in (0, 1)^k: a Cartesian grid of cell centres with m = ceil(n^(1/k)) points each
  when m^k <= 2 n; otherwise n points of the R_k low-discrepancy sequence (Roberts 2018)."""
  m = math.ceil(n ** (1.0 / k) - 1e-9)
  if m ** k <= 2 * n:
    c = (np.arange(m) + 0.5) / m
    return np.stack(np.meshgrid(*[c] * k, indexing='ij'), -1).reshape(-1, k)
  phi = 2.0
  for _ in range(64):
    phi = (1 + phi) ** (1.0 / (k + 1))
  alpha = phi ** -np.arange(1, k + 1)
  return (0.5 + np.arange(1, n + 1)[:, None] * alpha[None]) % 1.0


def start_grid(form: forms_lib.Form, n_starts: int = N_STARTS) -> np.ndarray:
  """S x P starting values over each non-linear parameter's range (geometric for 'log'):
  `_unit_grid` mapped onto the ranges. Linear parameters start at 0 (they are then solved by
  least squares)."""
  names = [k for k in form.params if form.kinds[k] != 'linear']
  if not names:
    return np.zeros((1, len(form.params)))
  u = _unit_grid(len(names), n_starts)
  starts = np.zeros((u.shape[0], len(form.params)))
  for j, name in enumerate(names):
    lo, hi = form.ranges[name]
    starts[:, form.params.index(name)] = (
        np.exp(np.log(lo) + u[:, j] * (np.log(hi) - np.log(lo))) if form.kinds[name] == 'log'
        else lo + u[:, j] * (hi - lo))
  return starts


def _scan_points(form) -> np.ndarray:
  """K x Q optimiser coordinates of the non-linear parameters spread over their whole box."""
  k = sum(form.kinds[p] != 'linear' for p in form.params)
  u = _unit_grid(k, SCAN_POINTS) if k else np.zeros((1, 0))
  return np.log(u) - np.log1p(-u)


def huber(r, delta):
  """Huber loss; delta = inf is least squares (0.5 r^2) with finite gradients."""
  a = jnp.abs(r)
  m = jnp.minimum(a, delta)
  return m * (a - 0.5 * m)


def _wmedian(a_N, w_N):
  """Weighted (multiplicity) median of a_N over the points with w_N > 0 (the lower one)."""
  order = jnp.argsort(jnp.where(w_N > 0, a_N, jnp.inf))
  cw = jnp.cumsum(w_N[order])
  return a_N[order][jnp.argmax(cw >= 0.5 * cw[-1])]


def _is_log(form):
  return np.array([form.kinds[k] == 'log' for k in form.params])


def _lin_index(form):
  return np.array([i for i, k in enumerate(form.params) if form.kinds[k] == 'linear'], int)


def _box(form, bounds=None):
  """(lo_P, hi_P) of the non-linear parameters in optimiser space (logs for 'log' kinds);
  linear entries are placeholders."""
  bounds = {**form.bounds, **(bounds or {})}
  lo, hi = np.zeros(len(form.params)), np.ones(len(form.params))
  for i, k in enumerate(form.params):
    if k in bounds:
      a, b = (float(v) for v in bounds[k])
      lo[i], hi[i] = (np.log(a), np.log(b)) if form.kinds[k] == 'log' else (a, b)
  return lo, hi


def _to_z(form, values, lo_P, hi_P, clip=1e-12):
  """Value space -> optimiser space (logit of the position in the box; linear entries 0)."""
  v = np.asarray(values, np.float64)
  with np.errstate(divide='ignore', invalid='ignore'):
    t = np.where(_is_log(form), np.log(np.where(_is_log(form), v, 1.0)), v)
  f = np.clip((t - lo_P) / (hi_P - lo_P), clip, 1 - clip)
  z = np.log(f) - np.log1p(-f)
  return np.where(np.isin(np.arange(len(form.params)), _lin_index(form)), 0.0,
                  np.where(np.isfinite(z), z, 0.0))


def _nl_values(form, z_P, lo_P, hi_P):
  """Optimiser space -> values of the non-linear parameters (linear entries: 0)."""
  t = lo_P + (hi_P - lo_P) * jax.nn.sigmoid(z_P)
  v = jnp.where(_is_log(form), jnp.exp(t), t)
  return v.at[_lin_index(form)].set(0.0) if _lin_index(form).size else v


def _parts(form, vals_P, xs):
  """f0_N (the prediction with every linear parameter 0) and cols_LxN (the change per unit of
  each linear parameter). One batched evaluation: under vmap, everything that does not depend
  on the linear parameters (the costly powers) is computed once."""
  lin = _lin_index(form)
  basis = jnp.concatenate([jnp.zeros((1, lin.size)), jnp.eye(lin.size)]).astype(vals_P.dtype)
  f = jax.vmap(lambda c: form.fn(dict(zip(form.params, vals_P.at[lin].set(c))), xs))(basis)
  return f[0], f[1:] - f[0]


def _chol_solve(g_LxL, b_L):
  """Solves a small SPD system given as nested lists of equally shaped arrays (unrolled, so it
  batches elementwise over whatever shape the entries have)."""
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


@functools.lru_cache(maxsize=None)
def _patterns(n):
  """3^n active sets: 0 free, 1 at -bound, 2 at +bound (all free first)."""
  return np.array(list(itertools.product((0, 1, 2), repeat=n)), int)


def _box_lsq(g_LxL, b_L, ub_L):
  """argmin 0.5 x'Gx - b'x subject to |x| <= ub, exactly: the best feasible solution over every
  active set (the optimum is one of them; each is a linear solve on the free coordinates)."""
  n = len(b_L)
  pat = _patterns(n)
  free = [jnp.asarray(pat[:, k] == 0) for k in range(n)]
  xf = [jnp.where(pat[:, k] == 1, -ub_L[k], jnp.where(pat[:, k] == 2, ub_L[k], 0.0))
        for k in range(n)]
  g = [[jnp.where(free[i] & free[j], g_LxL[i][j], 1.0 * (i == j)) for j in range(n)]
       for i in range(n)]
  rhs = [jnp.where(free[i], b_L[i] - sum(g_LxL[i][j] * xf[j] for j in range(n)), xf[i])
         for i in range(n)]
  x = _chol_solve(g, rhs)  # each entry: one value per active set.
  ok = jnp.all(jnp.stack([jnp.abs(x[k]) <= ub_L[k] * (1 + 1e-9) for k in range(n)]), axis=0)
  obj = sum(0.5 * x[i] * g_LxL[i][j] * x[j] for i in range(n) for j in range(n))
  obj = obj - sum(b_L[i] * x[i] for i in range(n))
  best = jnp.argmin(jnp.where(ok & jnp.isfinite(obj), obj, jnp.inf))
  return jnp.stack([xi[best] for xi in x])


def _project(f0, cols_LxN, m_L, amp, y_N, w_N):
  """Weighted least-squares linear parameters given the others, |c_k| m_k <= amp (box)."""
  n = cols_LxN.shape[0]
  sw = jnp.sqrt(w_N)
  cols = [jnp.where(w_N > 0, cols_LxN[k] * sw, 0.0) for k in range(n)]
  r = jnp.where(w_N > 0, (y_N - f0) * sw, 0.0)
  d = [jnp.sqrt(jnp.sum(c * c)) + 1e-300 for c in cols]
  cols = [c / di for c, di in zip(cols, d)]  # column-scaled normal equations, tiny ridge.
  g = [[jnp.sum(ci * cj) + (1e-12 if i == j else 0.0) for j, cj in enumerate(cols)]
       for i, ci in enumerate(cols)]
  x = _box_lsq(g, [jnp.sum(ci * r) for ci in cols], [amp * d[k] / m_L[k] for k in range(n)])
  c = x / jnp.stack(d)
  ok = jnp.all(jnp.isfinite(f0) | (w_N == 0)) & jnp.all(jnp.isfinite(c))
  return jnp.where(ok, c, jnp.nan)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Solved:
  """What the jitted solver returns per curve (a leading C axis after vmap)."""
  vals: jax.Array  # P parameter values.
  objective: jax.Array  # in the data's units.
  mse: jax.Array
  r2: jax.Array
  status: jax.Array  # lbfgs status of the polish.
  ok: jax.Array  # finite objective and parameters.
  n_it: jax.Array  # polish iterations.
  at_bound: jax.Array  # P
  lo: jax.Array  # P: the box each parameter was held to.
  hi: jax.Array
  delta: jax.Array  # the Huber delta used, data units (inf: least squares).
  sigma: jax.Array  # the range check's residual scale, data units.
  off: jax.Array  # in-sample predictions off the data's range.
  worse: jax.Array  # objective above the least-squares start's.
  ranges: jax.Array  # 4: data lo, hi; fit lo, hi (residual space).


class _Curve:
  """One curve's prediction, residuals and objectives in optimiser coordinates q (z of the
  non-linear parameters, u of the linear ones), residuals divided by the curve's spread;
  built from traced arrays inside the jitted solver."""

  def __init__(self, form, xs, y, w, lo_P, hi_P, amp_bound):
    self.form, self.xs, self.y, self.w, self.lo_P, self.hi_P = form, xs, y, w, lo_P, hi_P
    self.lin = _lin_index(form)
    self.nl = np.setdiff1d(np.arange(len(form.params)), self.lin)
    self.t = jnp.log(y) if form.space == 'log' else y
    self.sw = jnp.sum(w)
    mean = jnp.sum(w * self.t) / self.sw
    scale = jnp.sqrt(jnp.sum(w * (self.t - mean) ** 2) / self.sw)
    self.scale = jnp.where(scale > 0, scale, 1.0)
    ymax = jnp.max(jnp.where(w > 0, jnp.abs(y), 0.0))
    self.amp = amp_bound * jnp.where(ymax > 0, ymax, 1.0)

  def linear(self, vals):
    """f0, columns and term magnitudes m_L at these non-linear values."""
    f0, cols = _parts(self.form, vals, self.xs)
    m = jnp.max(jnp.where(self.w > 0, jnp.abs(cols), 0.0), axis=1)
    return f0, cols, jnp.where(m > 0, m, 1.0)

  def pred_q(self, q):
    """(prediction, parameter values) from optimiser coordinates."""
    vals = _nl_values(self.form, q, self.lo_P, self.hi_P)
    if not self.lin.size:
      return self.form.fn(dict(zip(self.form.params, vals)), self.xs), vals
    f0, cols, m = self.linear(vals)
    c = self.amp * jnp.tanh(q[self.lin]) / m
    return f0 + c @ cols, vals.at[self.lin].set(c)

  def res_of(self, pred):
    r = jnp.log(pred) - jnp.log(self.y) if self.form.space == 'log' else pred - self.y
    return jnp.where(self.w > 0, r / self.scale, 0.0)

  def objective(self, q, dn):
    """The summed Huber objective (normalised units)."""
    v = jnp.sum(self.w * huber(self.res_of(self.pred_q(q)[0]), dn))
    return jnp.where(jnp.isfinite(v), v, jnp.inf)

  def lsq(self, q):
    """Least squares: smooth, for the basin search."""
    v = 0.5 * jnp.sum(self.w * self.res_of(self.pred_q(q)[0]) ** 2)
    return jnp.where(jnp.isfinite(v), v, jnp.inf)

  def solve_lin(self, q_nl):
    """Box-constrained least squares: full q with u of the linear parameters."""
    q = jnp.zeros(len(self.form.params), q_nl.dtype).at[self.nl].set(q_nl)
    f0, cols, m = self.linear(_nl_values(self.form, q, self.lo_P, self.hi_P))
    c = _project(f0, cols, m, self.amp, self.y, self.w)
    frac = jnp.clip(c * m / self.amp, -1 + 1e-15, 1 - 1e-15)
    return q.at[self.lin].set(jnp.arctanh(frac)), c, f0, cols, m

  def phi(self, q_nl):
    """Projected least squares; gradient by Danskin (amplitudes held)."""
    _, c, f0, cols, m = self.solve_lin(q_nl)
    a = jax.lax.stop_gradient(c * m)
    v = 0.5 * jnp.sum(self.w * self.res_of(f0 + (a / m) @ cols) ** 2)
    return jnp.where(jnp.isfinite(v), v, jnp.inf)


def _search(cv: _Curve, q0_SxP, iters, scan_KxQ, use_scan):
  """Phase 1, every start: least squares by L-BFGS (non-linear parameters only where the
  linear ones can be projected out), plus the best point of the projected scan; S x P."""
  lin, nl = cv.lin, cv.nl
  if lin.size and nl.size:
    phi_K = jax.vmap(cv.phi)(scan_KxQ)
    scan = scan_KxQ[jnp.argmin(jnp.where(jnp.isfinite(phi_K), phi_K, jnp.inf))]
    starts = jnp.concatenate([q0_SxP[:, nl], jnp.where(use_scan, scan, q0_SxP[0, nl])[None]])
    th_SxQ = jax.vmap(
        lambda q: lbfgs.minimize(cv.phi, q, iters[0], *SEARCH_TOL, LS_STEPS[0])[0])(starts)
    return jax.vmap(lambda q: cv.solve_lin(q)[0])(th_SxQ)
  if lin.size:
    return jax.vmap(lambda q: cv.solve_lin(q[nl])[0])(q0_SxP[:1])
  return jax.vmap(
      lambda q: lbfgs.minimize(cv.lsq, q, iters[0], *SEARCH_TOL, LS_STEPS[0])[0])(q0_SxP)


def _scales(cv: _Curve, q_SxP, delta, noise_c):
  """From the least-squares best start: the Huber delta dn (normalised units; noise_c > 0:
  noise_c x its robust noise scale) and the range check's sigma; with its value f_ls."""
  ls_S = jax.vmap(cv.lsq)(q_SxP)
  ls_S = jnp.where(jnp.isfinite(ls_S), ls_S, jnp.inf)
  i_ls = jnp.argmin(ls_S)
  dof = cv.sw - len(cv.form.params)
  r_ls = cv.res_of(cv.pred_q(q_SxP[i_ls])[0])
  sig_mad = 1.4826 * _wmedian(jnp.abs(r_ls), cv.w) * jnp.sqrt(cv.sw / jnp.maximum(dof, 1.0))
  robust = (dof >= NOISE_MIN_DOF) & (sig_mad > 1e-9) & jnp.isfinite(sig_mad)
  dn = jnp.where(noise_c > 0, jnp.where(robust, noise_c * sig_mad, jnp.inf), delta / cv.scale)
  sig_ls = jnp.sqrt(2.0 * ls_S[i_ls] / jnp.maximum(dof, 1.0))
  sigma = jnp.clip(jnp.where(jnp.isfinite(sig_ls), sig_ls, 1.0), SIGMA_FLOOR, 1.0)
  return dn, sigma, i_ls, dof


def _polish(cv: _Curve, best, dn, iters, dof):
  """Phase 2, the best start: every parameter, the exact objective, L-BFGS in
  Gauss-Newton-whitened coordinates, re-whitened where it stands every POLISH_CHUNK
  iterations, and once more after a failed line search. Returns (q, f, status, n_it)."""
  fun = lambda q: cv.objective(q, dn)
  best = jnp.where(jnp.isfinite(best), best, 0.0)
  rtol = RTOL / jnp.sqrt(jnp.maximum(dof, 1.0))

  def round_cond(c):
    return (((c[2] == RUNNING) | ((c[2] == LS_FAILED) & (c[4] < 2)))
            & (c[3] < iters[1]))

  def round_body(c):
    q, _, _, n, fails = c
    fz, to_q = lbfgs.preconditioned(fun, lambda q: cv.res_of(cv.pred_q(q)[0]), q)
    z, f, st, m = lbfgs.minimize(fz, jnp.zeros_like(q), jnp.minimum(POLISH_CHUNK, iters[1] - n),
                                 rtol=rtol)
    return to_q(z), f, st, n + m, jnp.where(st == LS_FAILED, fails + 1, 0)

  c0 = (best, fun(best), jnp.int32(RUNNING), jnp.int32(0), jnp.int32(0))
  q, f, status, n_it, _ = jax.lax.while_loop(round_cond, round_body, c0)
  return q, f, status, n_it


def _solved(cv: _Curve, q, f, status, n_it, dn, sigma, f_ls) -> Solved:
  """The statistics of the final q in loss space, its bounds and its range check."""
  form, w, y, sw = cv.form, cv.w, cv.y, cv.sw
  pred, vals = cv.pred_q(q)
  # Where each parameter stands in its box; the amplitude box is per curve.
  frac = jax.nn.sigmoid(q)
  at = (frac <= AT_BOUND) | (frac >= 1 - AT_BOUND)
  lo = jnp.where(_is_log(form), jnp.exp(cv.lo_P), cv.lo_P)
  hi = jnp.where(_is_log(form), jnp.exp(cv.hi_P), cv.hi_P)
  if cv.lin.size:
    m = cv.linear(vals)[2]
    at = at.at[cv.lin].set(jnp.abs(jnp.tanh(q[cv.lin])) >= 1 - 2 * AT_BOUND)  # box: 2 amp / m
    lo, hi = lo.at[cv.lin].set(-cv.amp / m), hi.at[cv.lin].set(cv.amp / m)
  r = jnp.where(w > 0, pred - y, 0.0)
  ybar = jnp.sum(w * y) / sw
  sse = jnp.sum(w * r ** 2)
  sst = jnp.sum(w * (y - ybar) ** 2)
  r2 = jnp.where(sst > 0, 1.0 - sse / sst, jnp.where(sse == 0, 1.0, -jnp.inf))
  ok = jnp.isfinite(f) & jnp.all(jnp.isfinite(vals))
  # Range check in residual space: in-sample predictions against the data's range.
  used = w > 0
  tp = jnp.log(jnp.where(pred > 0, pred, jnp.nan)) if form.space == 'log' else pred
  ranges = jnp.stack([jnp.min(jnp.where(used, cv.t, jnp.inf)),
                      jnp.max(jnp.where(used, cv.t, -jnp.inf)),
                      jnp.min(jnp.where(used, tp, jnp.inf)),
                      jnp.max(jnp.where(used, tp, -jnp.inf))])  # data lo, hi; fit lo, hi.
  margin = OFF_RANGE_K * sigma * cv.scale
  off = ~((ranges[2] >= ranges[0] - margin) & (ranges[3] <= ranges[1] + margin))
  worse = f > f_ls * (1 + 1e-6)
  return Solved(vals, f * cv.scale ** 2, sse / sw, r2, status, ok, n_it, at, lo, hi,
                dn * cv.scale, sigma * cv.scale, off, worse, ranges)


@functools.lru_cache(maxsize=None)
def _solver(name: str):
  """Jitted (q0_CxSxP, xs{C x N}, y_CxN, w_CxN, delta_C, noise_c_C, iters_2, lo_P, hi_P,
  amp_bound, scan_KxQ, use_scan) -> Solved (C-leading). q: optimiser coordinates (z of the
  non-linear parameters, u of the linear). delta: a fixed Huber delta (inf: least squares),
  used where noise_c is 0; noise_c > 0: delta = noise_c x the robust noise scale of the
  least-squares best start's residuals."""
  form = forms_lib.get_form(name)

  def one_curve(q0_SxP, xs, y, w, delta, noise_c, iters, lo_P, hi_P, amp_bound, scan_KxQ,
                use_scan):
    cv = _Curve(form, xs, y, w, lo_P, hi_P, amp_bound)
    q_SxP = _search(cv, q0_SxP, iters, scan_KxQ, use_scan)
    dn, sigma, i_ls, dof = _scales(cv, q_SxP, delta, noise_c)
    f_S = jax.vmap(lambda q: cv.objective(q, dn))(q_SxP)
    f_S = jnp.where(jnp.isfinite(f_S), f_S, jnp.inf)
    q, f, status, n_it = _polish(cv, q_SxP[jnp.argmin(f_S)], dn, iters, dof)
    return _solved(cv, q, f, status, n_it, dn, sigma, f_S[i_ls])

  return jax.jit(jax.vmap(one_curve, in_axes=(0, 0, 0, 0, 0, 0) + (None,) * 6))


def _bucket(c: int, n: int) -> tuple[int, int]:
  """Padded (C, N): N to a multiple of 16 (at least 64); C to a power of two, at least 64 for
  short curves (cheap, so small fits share one compilation) and 8 otherwise; past 1024 to a
  multiple of 1024."""
  nb = max(64, -(-n // 16) * 16)
  cb = max(64 if nb == 64 else 8, 1 << (max(c, 1) - 1).bit_length())
  return (cb if c <= 1024 else -(-c // 1024) * 1024), nb


def _canonical(form, *arrays_CxP):
  """Orders interchangeable terms (e.g. Eq. 6's two general-loss powers) by exponent, desc.

  The first array holds the parameters; the others (per-parameter flags, bounds) follow it."""
  if not form.swap:
    return arrays_CxP
  (a1, s1), (a2, s2) = [(form.params.index(a), form.params.index(s)) for a, s in form.swap]
  flip = arrays_CxP[0][:, s1] < arrays_CxP[0][:, s2]
  out = []
  for a in arrays_CxP:
    a = a.copy()
    for i, j in ((a1, a2), (s1, s2)):
      a[flip, i], a[flip, j] = a[flip, j].copy(), a[flip, i].copy()
    out.append(a)
  return tuple(out)


def _resolve_delta(form, huber_delta, huber_c, c):
  """(delta_C, noise_c_C): a fixed delta (inf: least squares) or the 'noise' multiple."""
  hd = form.huber_delta if isinstance(huber_delta, str) and huber_delta == 'auto' else huber_delta
  if hd is None or (isinstance(hd, str) and hd == 'lsq'):
    return np.full(c, np.inf), np.zeros(c)
  if isinstance(hd, str):
    if hd != 'noise':
      raise FitError(f"{form.name}: huber_delta must be a positive number (or one per curve), "
                     f"None / 'lsq' (least squares), 'noise' or 'auto'; got {hd!r}")
    if not (np.isfinite(huber_c) and huber_c > 0):
      raise FitError(f'{form.name}: huber_c must be positive, got {huber_c}')
    return np.full(c, np.inf), np.full(c, float(huber_c))
  try:
    delta_C = np.broadcast_to(np.asarray(hd, np.float64), (c,)).copy()
  except ValueError:
    raise FitError(f'{form.name}: huber_delta must be a number or one per curve ({c}), '
                   f'got shape {np.shape(hd)}') from None
  if not np.all(~np.isnan(delta_C) & (delta_C > 0)):
    raise FitError(f'{form.name}: huber_delta must be positive, got {huber_delta}')
  return delta_C, np.zeros(c)


def _reasons(status, ok, off, worse, ranges, sigma, n_it, log_space):
  """Why a fit is not converged, one string each (empty when it is)."""
  out = []
  if not ok:
    out.append('non-finite objective or parameters')
  elif status == RUNNING:
    out.append(f'not converged: iteration budget ({int(n_it)} polish iterations) ran out '
               'before the criteria held')
  elif status == LS_FAILED:
    out.append('not converged: no sufficient decrease along the steepest-descent direction '
               '(line search failed twice in a row) where the gradient is not small')
  elif status == NONFINITE:
    out.append('not converged: non-finite objective or gradient')
  if off:
    what = 'log-loss' if log_space else 'loss'
    out.append(f'off range: in-sample predictions {ranges[2]:.4g} .. {ranges[3]:.4g} leave the '
               f'data range [{ranges[0]:.4g}, {ranges[1]:.4g}] ({what}) by more than '
               f'{OFF_RANGE_K:g} sigma (sigma {sigma:.3g}: the least-squares residual scale)')
  if worse:
    out.append('objective above its least-squares start (polishing made it worse)')
  return tuple(out)


def fit_curves(form, variables: Mapping[str, np.ndarray], y_CxN, w_CxN=None, *,
               huber_delta='auto', huber_c: float = HUBER_C, n_starts: int = N_STARTS,
               init_CxSxP=None, max_iter: int | None = None, polish_iter: int = POLISH_ITER,
               what: str = 'curve', pad: bool = True, bounds=None,
               safe_starts: bool = True) -> FitResult:
  """Fits `form` to C curves at once.

  variables: name -> C x N array (every variable of the form). y_CxN: targets. w_CxN: point
  weights (0 = padding; integers = bootstrap multiplicities); default all ones.
  huber_delta: the loss. 'auto' (default): the form's own (forms.Form.huber_delta: 'noise' for
  every form but ratio_law and cmr_law, least squares, and chinchilla, the published 1e-3 on
  log residuals); None or 'lsq': plain least squares; 'noise': Huber with delta = huber_c x
  1.4826 MAD of the least-squares best start's residuals (x sqrt(n / (n - p))), least squares
  when n - p < NOISE_MIN_DOF; a number, or one per curve (C,): that delta (inf: least squares).
  init_CxSxP: optional starting values (value space), e.g. one warm start per curve (S = 1) for
  bootstrap refits: they replace the grid, but not the safe starts (the projected scan's best
  point for forms with linear parameters, else the grid's centre) unless safe_starts is False.
  max_iter: phase-1 L-BFGS iterations per start (default MAX_ITER, or MAX_ITER_FULL for forms
  without linear parameters); polish_iter: phase-2 iterations of the best start.
  `what` names the curves in error messages. pad: round C and N up to shared sizes so that
  calls of similar size reuse one compilation. bounds: {name: (lo, hi)} replacing the form's
  box of those parameters (e.g. when a variable's unit is rescaled).
  """
  form = forms_lib.get_form(form) if isinstance(form, str) else form
  y, w, xs, n_C = _checked(form, variables, y_CxN, w_CxN, what)
  delta_C, noise_c_C = _resolve_delta(form, huber_delta, huber_c, y.shape[0])
  lo_P, hi_P = _box(form, bounds)
  q0 = _starts(form, init_CxSxP, n_starts, lo_P, hi_P, y.shape[0], safe_starts)
  if max_iter is None:
    max_iter = MAX_ITER if _lin_index(form).size else MAX_ITER_FULL
  o = _solve(form, q0, xs, y, w, delta_C, noise_c_C, (max_iter, polish_iter), lo_P, hi_P,
             safe_starts, pad)
  vals, at, lo, hi = _canonical(form, o.vals.astype(np.float64), o.at_bound.astype(bool), o.lo,
                                o.hi)
  conv = np.isin(o.status, (CONV_GRAD, CONV_DECREASE)) & o.ok & ~o.off & ~o.worse
  flags = tuple(_reasons(*a, form.space == 'log')
                for a in zip(o.status, o.ok, o.off, o.worse, o.ranges, o.sigma, o.n_it))
  return FitResult(form.name, form.params, vals, o.objective, o.mse, o.r2, conv,
                   n_C.astype(int), o.n_it.astype(int), at, lo, hi, o.delta, o.sigma,
                   o.off.astype(bool), flags)


def _checked(form, variables, y_CxN, w_CxN, what):
  """(y_CxN, w_CxN, xs{variable: C x N}, points per curve) as float64, or FitError."""
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
  return y, w, xs, n_C


def _starts(form, init_CxSxP, n_starts, lo_P, hi_P, c, safe_starts):
  """C x S x P starts in optimiser space: the grid, or the caller's (plus the grid's centre
  where the form has no linear parameters and safe_starts)."""
  if init_CxSxP is None:
    st = start_grid(form, n_starts)
    return np.broadcast_to(_to_z(form, st, lo_P, hi_P), (c,) + st.shape)
  init = np.asarray(init_CxSxP, np.float64)
  q0 = _to_z(form, init.reshape((c, -1, len(form.params))), lo_P, hi_P, START_CLIP)
  if safe_starts and not _lin_index(form).size:  # (with linear parameters: the scan.)
    centre = _to_z(form, start_grid(form, 1), lo_P, hi_P)
    q0 = np.concatenate([q0, np.broadcast_to(centre, (c,) + centre.shape)], 1)
  return q0


def _solve(form, q0, xs, y, w, delta_C, noise_c_C, iters, lo_P, hi_P, safe_starts,
           pad) -> Solved:
  """The jitted solver on bucketed shapes (pad: fewer compilations; padding gets harmless
  values and weight 0); numpy arrays of the C curves."""
  used = w > 0
  c, n = y.shape
  cb, nb = _bucket(c, n) if pad else (c, n)
  pad = lambda a, v: np.pad(np.where(used, a, v), ((0, cb - c), (0, nb - n)), constant_values=v)
  kern = forms_lib.get_form(form.kernel) if form.kernel else form
  xs = {kv: pad(xs[fv], 1.0) for kv, fv in zip(kern.variables, form.variables)}
  y_p, w_p = pad(y, 1.0), pad(w, 0.0)
  w_p[c:, 0] = 1.0  # padded curves: one dummy point keeps their statistics finite.
  q0 = np.concatenate([q0, np.repeat(q0[:1], cb - c, axis=0)])
  delta_p = np.concatenate([delta_C, np.full(cb - c, delta_C[0])])
  noise_p = np.concatenate([noise_c_C, np.full(cb - c, noise_c_C[0])])
  with jax.enable_x64(True):
    out = _solver(kern.name)(
        jnp.asarray(q0), {k: jnp.asarray(v) for k, v in xs.items()}, jnp.asarray(y_p),
        jnp.asarray(w_p), jnp.asarray(delta_p), jnp.asarray(noise_p),
        jnp.asarray(iters, jnp.int32), jnp.asarray(lo_P), jnp.asarray(hi_P),
        float(form.amp_bound), jnp.asarray(_scan_points(form)), bool(safe_starts))
    return Solved(**{f.name: np.array(getattr(out, f.name))[:c]
                     for f in dataclasses.fields(Solved)})


def fit_one(form, variables: Mapping[str, np.ndarray], y_N, w_N=None, **kw) -> FitResult:
  """Fits one curve (1-D arrays); same options as fit_curves."""
  y = np.asarray(y_N, np.float64).reshape(-1)
  v = {k: np.asarray(a, np.float64).reshape(-1)[None] for k, a in variables.items()}
  w = None if w_N is None else np.asarray(w_N, np.float64).reshape(1, -1)
  return fit_curves(form, v, y[None], w, **kw)
