"""Generic fitter: summed Huber loss, float64, bounded, vmapped multi-start L-BFGS, vmapped over
curves.

One jitted call fits C curves (rows of C x N arrays; padding and bootstrap multiplicities are
weights), all under a scoped `jax.enable_x64`:
  phase 1, every start of a grid: L-BFGS on least squares (smooth, to find the basin); where the
    form has linear parameters they are projected out (variable projection: solved by weighted,
    box-constrained least squares given the others, exactly, by enumerating which bounds are
    active; gradient by Danskin's theorem), so L-BFGS runs over the few non-linear ones;
  phase 2, the best start: L-BFGS on the summed Huber objective over every parameter, in
    coordinates whitened by the Gauss-Newton matrix at that start, to a tight tolerance.
Bounds (forms.py) are a reparametrisation, so the optimiser itself is unconstrained: a bounded
parameter is lo + (hi - lo) * sigmoid(z) (of its logarithm for positive scales), a linear one
is amp * tanh(u) / m, where m is the largest magnitude of its term on the data and amp =
amp_bound * max |y|. A parameter within 1e-3 of its box (relative to the box) is `at_bound`.
Residuals are divided by the curve's spread before the Huber loss (delta alike), which leaves
the minimiser unchanged and makes the tolerances scale-free; the reported objective is in the
data's units: sum_i w_i huber(residual_i, delta_i).
"""

import dataclasses
import functools
import itertools
import math
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mixlaw.laws import forms as forms_lib
from mixlaw.laws.options import FitError, N_STARTS

GTOL = 1e-10  # max |gradient| of the normalised objective.
FTOL = 1e-13  # relative decrease counted as a stall; 3 stalls in a row = converged.
MAX_ITER = 20  # per start, phase 1, forms with linear parameters (projected out).
MAX_ITER_FULL = 200  # per start, phase 1, forms without (all parameters).
MEMORY = 10  # L-BFGS history.
POLISH_ITER = 1000  # the best start, phase 2 (all parameters).
POLISH_ITER_BOOT = 200  # bootstrap refits: warm-started at the point fit, they need fewer.
SEARCH_TOL = (1e-7, 1e-10)  # phase 1 (gtol, ftol): a basin search, polished in phase 2.
HUBER_DELTA = 1e-3  # the default delta of a bare fit (fit_curves, fit-form); the CMR machinery
#                     scales its own to each curve's noise (options.huber_c).
AT_BOUND = 1e-3  # a parameter this close to its box (fraction of the box) is at the bound.
START_CLIP = 1e-6  # warm starts on a bound begin this far inside it (so they can leave).


@dataclasses.dataclass
class FitResult:
  """Fits of C curves: params_CxP in value space (names in `names`), per-curve statistics.

  lo_CxP, hi_CxP: the box each parameter was held to (for linear ones: the amplitude bound on
  that curve); at_bound_CxP: the fit sits on it.
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

  def params(self, i: int = 0) -> dict[str, float]:
    return {k: float(v) for k, v in zip(self.names, self.params_CxP[i])}

  def bounded(self, i: int = 0) -> list[str]:
    """Names of the parameters of curve i that sit on a bound."""
    return [k for k, b in zip(self.names, self.at_bound_CxP[i]) if b]

  def row(self, i: int = 0) -> dict:
    return dict(params=self.params(i), objective=float(self.objective_C[i]),
                mse=float(self.mse_C[i]), r2=float(self.r2_C[i]),
                converged=bool(self.converged_C[i]), n_points=int(self.n_points_C[i]),
                at_bound=self.bounded(i))


def start_grid(form: forms_lib.Form, n_starts: int = N_STARTS) -> np.ndarray:
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


def _lbfgs(fun, theta0, max_iter, gtol=None, ftol=None):
  """Minimises fun from theta0 with optax L-BFGS (backtracking Armijo line search).

  Returns (theta, value, converged, iterations). Converged: the largest |gradient| is <= gtol
  (GTOL), or three iterations in a row change the value by <= ftol (FTOL) relative. A
  non-finite step or five line searches in a row that fail to decrease the value stop the run
  unconverged. Finished runs get a zero gradient, so under vmap they pass their line search at
  once.
  """
  gtol, ftol = GTOL if gtol is None else gtol, FTOL if ftol is None else ftol
  ls = optax.scale_by_backtracking_linesearch(max_backtracking_steps=6, decrease_factor=0.25)
  opt = optax.lbfgs(memory_size=MEMORY, linesearch=ls)
  vg = jax.value_and_grad(fun)

  def cond(c):
    return (~c[6]) & (c[3] < max_iter)

  def body(c):
    theta, st, _, it, stall, fails, _, _ = c
    f, g = vg(theta)
    finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(g))
    conv = finite & ((jnp.max(jnp.abs(g)) <= gtol) | (stall >= 3))
    done = conv | ~finite | (fails >= 5)
    upd, st = opt.update(jnp.where(done, 0.0, g), st, theta, value=f, grad=g, value_fn=fun)
    new = optax.apply_updates(theta, upd)
    f2 = optax.tree.get(st, 'value')
    bad = ~jnp.isfinite(f2) | ~jnp.all(jnp.isfinite(new))
    new, f2 = jnp.where(done | bad, theta, new), jnp.where(done | bad, f, f2)
    tiny = jnp.abs(f - f2) <= ftol * jnp.maximum(jnp.abs(f2), 1e-300)
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
  """Jitted (q0_CxSxP, xs{C x N}, y_CxN, w_CxN, delta_C, iters_2, lo_P, hi_P, amp_bound) ->
  fitted C-arrays. q: optimiser coordinates (z of the non-linear parameters, u of the linear)."""
  form = forms_lib.get_form(name)
  lin = _lin_index(form)
  nl = np.setdiff1d(np.arange(len(form.params)), lin)

  def one_curve(q0_SxP, xs, y, w, delta, iters, lo_P, hi_P, amp_bound):
    t = jnp.log(y) if form.space == 'log' else y
    sw = jnp.sum(w)
    mean = jnp.sum(w * t) / sw
    scale = jnp.sqrt(jnp.sum(w * (t - mean) ** 2) / sw)
    scale = jnp.where(scale > 0, scale, 1.0)
    dn = delta / scale
    ymax = jnp.max(jnp.where(w > 0, jnp.abs(y), 0.0))
    amp = amp_bound * jnp.where(ymax > 0, ymax, 1.0)

    def linear(vals):  # f0, columns and term magnitudes m_L at these non-linear values.
      f0, cols = _parts(form, vals, xs)
      m = jnp.max(jnp.where(w > 0, jnp.abs(cols), 0.0), axis=1)
      return f0, cols, jnp.where(m > 0, m, 1.0)

    def pred_q(q):  # prediction from optimiser coordinates.
      vals = _nl_values(form, q, lo_P, hi_P)
      if not lin.size:
        return form.fn(dict(zip(form.params, vals)), xs), vals
      f0, cols, m = linear(vals)
      c = amp * jnp.tanh(q[lin]) / m
      return f0 + c @ cols, vals.at[lin].set(c)

    def res_of(pred):
      r = jnp.log(pred) - jnp.log(y) if form.space == 'log' else pred - y
      return jnp.where(w > 0, r / scale, 0.0)

    def fun(q):  # the summed Huber objective (normalised units).
      v = jnp.sum(w * huber(res_of(pred_q(q)[0]), dn))
      return jnp.where(jnp.isfinite(v), v, jnp.inf)

    def lsq(q):  # least squares: smooth, for the basin search.
      v = 0.5 * jnp.sum(w * res_of(pred_q(q)[0]) ** 2)
      return jnp.where(jnp.isfinite(v), v, jnp.inf)

    def solve_lin(q_nl):  # box-constrained least squares: full q with u of the linear params.
      q = jnp.zeros(len(form.params), q_nl.dtype).at[nl].set(q_nl)
      f0, cols, m = linear(_nl_values(form, q, lo_P, hi_P))
      c = _project(f0, cols, m, amp, y, w)
      frac = jnp.clip(c * m / amp, -1 + 1e-15, 1 - 1e-15)
      return q.at[lin].set(jnp.arctanh(frac)), c, f0, cols, m

    def phi(q_nl):  # projected least squares; gradient by Danskin (amplitudes held).
      _, c, f0, cols, m = solve_lin(q_nl)
      a = jax.lax.stop_gradient(c * m)
      v = 0.5 * jnp.sum(w * res_of(f0 + (a / m) @ cols) ** 2)
      return jnp.where(jnp.isfinite(v), v, jnp.inf)

    # Phase 1, every start: least squares by L-BFGS (non-linear parameters only where the
    # linear ones can be projected out).
    if lin.size and nl.size:
      th_SxQ = jax.vmap(lambda q: _lbfgs(phi, q, iters[0], *SEARCH_TOL)[0])(q0_SxP[:, nl])
      q_SxP = jax.vmap(lambda q: solve_lin(q)[0])(th_SxQ)
    elif lin.size:
      q_SxP = jax.vmap(lambda q: solve_lin(q[nl])[0])(q0_SxP)
    else:
      q_SxP = jax.vmap(lambda q: _lbfgs(lsq, q, iters[0], *SEARCH_TOL)[0])(q0_SxP)
    f_S = jax.vmap(fun)(q_SxP)
    f_S = jnp.where(jnp.isfinite(f_S), f_S, jnp.inf)
    best = q_SxP[jnp.argmin(f_S)]
    # Phase 2, the best start: every parameter, the exact summed-Huber objective, L-BFGS in
    # Gauss-Newton-whitened coordinates.
    best = jnp.where(jnp.isfinite(best), best, 0.0)
    fz, to_q = _preconditioned(fun, lambda q: res_of(pred_q(q)[0]), best)
    z, f, conv, n_it = _lbfgs(fz, jnp.zeros_like(best), iters[1])
    q = to_q(z)
    pred, vals = pred_q(q)
    # Where each parameter stands in its box; the amplitude box is per curve.
    frac = jax.nn.sigmoid(q)
    at_nl = (frac <= AT_BOUND) | (frac >= 1 - AT_BOUND)
    lo = jnp.where(_is_log(form), jnp.exp(lo_P), lo_P)
    hi = jnp.where(_is_log(form), jnp.exp(hi_P), hi_P)
    at = at_nl
    if lin.size:
      m = linear(vals)[2]
      at = at.at[lin].set(jnp.abs(jnp.tanh(q[lin])) >= 1 - 2 * AT_BOUND)  # box: 2 amp / m
      lo, hi = lo.at[lin].set(-amp / m), hi.at[lin].set(amp / m)
    # Statistics in loss space.
    r = jnp.where(w > 0, pred - y, 0.0)
    ybar = jnp.sum(w * y) / sw
    sse = jnp.sum(w * r ** 2)
    sst = jnp.sum(w * (y - ybar) ** 2)
    r2 = jnp.where(sst > 0, 1.0 - sse / sst, jnp.where(sse == 0, 1.0, -jnp.inf))
    ok = jnp.isfinite(f) & jnp.all(jnp.isfinite(vals))
    return vals, f * scale ** 2, sse / sw, r2, conv & ok, n_it, at, lo, hi

  return jax.jit(jax.vmap(one_curve, in_axes=(0, 0, 0, 0, 0, None, None, None, None)))


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


def fit_curves(form, variables: Mapping[str, np.ndarray], y_CxN, w_CxN=None, *,
               huber_delta=HUBER_DELTA, n_starts: int = N_STARTS, init_CxSxP=None,
               max_iter: int | None = None, polish_iter: int = POLISH_ITER,
               what: str = 'curve', pad: bool = True, bounds=None) -> FitResult:
  """Fits `form` to C curves at once.

  variables: name -> C x N array (every variable of the form). y_CxN: targets. w_CxN: point
  weights (0 = padding; integers = bootstrap multiplicities); default all ones.
  huber_delta: a number, or one per curve (C,). init_CxSxP: optional starting values (value
  space) replacing the grid, e.g. one warm start per curve (S = 1) for bootstrap refits.
  max_iter: phase-1 L-BFGS iterations per start (default MAX_ITER, or MAX_ITER_FULL for forms
  without linear parameters); polish_iter: phase-2 iterations of the best start.
  `what` names the curves in error messages. pad: round C and N up to shared sizes so that
  calls of similar size reuse one compilation. bounds: {name: (lo, hi)} replacing the form's
  box of those parameters (e.g. when a variable's unit is rescaled).
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
  delta_C = np.broadcast_to(np.asarray(huber_delta, np.float64), (y.shape[0],))
  if not np.all(np.isfinite(delta_C) & (delta_C > 0)):
    raise FitError(f'{form.name}: huber_delta must be positive, got {huber_delta}')
  lo_P, hi_P = _box(form, bounds)
  if init_CxSxP is None:
    st = start_grid(form, n_starts)
    q0 = np.broadcast_to(_to_z(form, st, lo_P, hi_P), (y.shape[0],) + st.shape)
  else:
    init = np.asarray(init_CxSxP, np.float64)
    q0 = _to_z(form, init.reshape((y.shape[0], -1, len(form.params))), lo_P, hi_P, START_CLIP)
  # Pad to bucketed shapes (fewer compilations); padding gets harmless values and weight 0.
  c, n = y.shape
  cb, nb = _bucket(c, n) if pad else (c, n)
  pad = lambda a, v: np.pad(np.where(used, a, v), ((0, cb - c), (0, nb - n)), constant_values=v)
  kern = forms_lib.get_form(form.kernel) if form.kernel else form
  xs = {kv: pad(xs[fv], 1.0) for kv, fv in zip(kern.variables, form.variables)}
  y_p, w_p = pad(y, 1.0), pad(w, 0.0)
  w_p[c:, 0] = 1.0  # padded curves: one dummy point keeps their statistics finite.
  q0 = np.concatenate([q0, np.repeat(q0[:1], cb - c, axis=0)])
  delta_p = np.concatenate([delta_C, np.full(cb - c, delta_C[0])])
  solve = _solver(kern.name)
  if max_iter is None:
    max_iter = MAX_ITER if _lin_index(form).size else MAX_ITER_FULL
  with jax.enable_x64(True):
    out = solve(jnp.asarray(q0), {k: jnp.asarray(v) for k, v in xs.items()},
                jnp.asarray(y_p), jnp.asarray(w_p), jnp.asarray(delta_p),
                jnp.asarray([max_iter, polish_iter], jnp.int32), jnp.asarray(lo_P),
                jnp.asarray(hi_P), float(form.amp_bound))
    vals, obj, mse, r2, conv, n_it, at, lo, hi = (np.array(o)[:c] for o in out)
  vals, at, lo, hi = _canonical(form, vals.astype(np.float64), at.astype(bool), lo, hi)
  return FitResult(form.name, form.params, vals, obj, mse, r2, conv.astype(bool),
                   n_C.astype(int), n_it.astype(int), at, lo, hi)


def fit_one(form, variables: Mapping[str, np.ndarray], y_N, w_N=None, **kw) -> FitResult:
  """Fits one curve (1-D arrays); same options as fit_curves."""
  y = np.asarray(y_N, np.float64).reshape(-1)
  v = {k: np.asarray(a, np.float64).reshape(-1)[None] for k, a in variables.items()}
  w = None if w_N is None else np.asarray(w_N, np.float64).reshape(1, -1)
  return fit_curves(form, v, y[None], w, **kw)
