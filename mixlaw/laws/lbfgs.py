"""L-BFGS for the fitter (fit.py): jittable, vmappable, float64 under the caller's
`jax.enable_x64`, with a backtracking Armijo line search whose failures are never kept, and
Gauss-Newton whitening of the coordinates (`preconditioned`)."""

import jax
import jax.numpy as jnp

GTOL = 1e-10  # max |gradient| of the normalised objective: converged.
FTOL = 1e-10  # or: a step changed it by <= FTOL relative (or none could decrease it) where
RTOL = 1e-3  # max |gradient| <= RTOL x the residual scale sqrt(2 value / (n - p)): in
#              Gauss-Newton-whitened coordinates, within 1e-3 standard errors of the optimum.
ARMIJO = 1e-4  # sufficient decrease: f(theta + t d) <= f + ARMIJO t g'd.
LS_STEPS = (8, 20)  # backtracking steps per line search (quadratic interpolation, x 0.1 .. 0.5)
#                    in phase 1 (a basin search from every start) and in phase 2; under vmap
#                    every lane pays for the longest search, so phase 1 keeps them short.
MAX_FAILS = 2  # line searches in a row without sufficient decrease end a run.
MEMORY = 10  # L-BFGS history.

# minimize status: 0 still running (iteration budget), 1 gradient criterion, 2 decrease criterion,
# 3 line search failed at a point whose gradient is not small, 4 non-finite.
RUNNING, CONV_GRAD, CONV_DECREASE, LS_FAILED, NONFINITE = range(5)


def direction(g_P, s_MxP, y_MxP, rho_M):
  """-H g by the L-BFGS two-loop recursion; slot 0 holds the newest pair, empty slots have
  rho 0. Initial scaling s'y / y'y of the newest pair; without pairs g / max(1, |g|)."""
  m = rho_M.shape[0]
  q, alphas = g_P, []
  for i in range(m):
    a = rho_M[i] * (s_MxP[i] @ q)
    q = q - a * y_MxP[i]
    alphas.append(a)
  yy = y_MxP[0] @ y_MxP[0]
  gamma = jnp.where((rho_M[0] > 0) & (yy > 0), 1.0 / (rho_M[0] * yy + 1e-300),
                    1.0 / jnp.maximum(1.0, jnp.linalg.norm(g_P)))
  r = gamma * q
  for i in reversed(range(m)):
    r = r + (alphas[i] - rho_M[i] * (y_MxP[i] @ r)) * s_MxP[i]
  return -r


def minimize(fun, theta0, max_iter, gtol=GTOL, ftol=FTOL, rtol=RTOL, ls_steps=LS_STEPS[1]):
  """Minimises fun from theta0 by L-BFGS with a backtracking Armijo line search.

  Returns (theta, value, status, iterations); status as RUNNING.. above. A step is taken only
  when the line search achieves sufficient decrease (value strictly lower); otherwise theta and
  the value stay, the memory is cleared (the next try is steepest descent) and MAX_FAILS
  failures in a row stop the run: converged (CONV_DECREASE) when the gradient is small
  relative to the objective (max |g| <= rtol sqrt(2 f); rtol may be traced), else LS_FAILED.
  Converged otherwise: max |g| <= gtol (CONV_GRAD), or a step that changed f by <= ftol
  relative at a point with max |g| <= rtol sqrt(2 f) (CONV_DECREASE). Curvature pairs with
  s'y <= 0 are not stored.
  Jittable and vmappable (finished runs skip their line search).
  """
  vg = jax.value_and_grad(fun)
  m, p = MEMORY, theta0.shape[0]

  def small(f, g):
    return jnp.max(jnp.abs(g)) <= rtol * jnp.sqrt(2.0 * jnp.maximum(f, 0.0))

  def status_at(f, g, dec):
    finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(g))
    return jnp.where(~finite, NONFINITE, jnp.where(
        jnp.max(jnp.abs(g)) <= gtol, CONV_GRAD,
        jnp.where((dec <= ftol) & small(f, g), CONV_DECREASE, RUNNING))).astype(jnp.int32)

  def cond(c):
    return (c[8] == RUNNING) & (c[6] < max_iter)

  def body(c):
    theta, f, g, s_M, y_M, rho_M, it, fails, status = c
    d = direction(g, s_M, y_M, rho_M)
    slope = g @ d
    descent = (slope < 0) & jnp.all(jnp.isfinite(d))
    d = jnp.where(descent, d, -g / jnp.maximum(1.0, jnp.linalg.norm(g)))
    rho_M = jnp.where(descent, rho_M, 0.0)
    slope = g @ d
    running = status == RUNNING
    t, ft = _line_search(fun, theta, f, d, slope, running, ls_steps)
    new = theta + t * d
    f_n, g_n = vg(new)
    ok = (_armijo(t, ft, f, slope) & jnp.isfinite(f_n) & jnp.all(jnp.isfinite(g_n))
          & jnp.all(jnp.isfinite(new)))
    s_M, y_M, rho_M = _remember(s_M, y_M, rho_M, new - theta, g_n - g, ok)
    fails = jnp.where(ok, 0, fails + 1)
    dec = (f - f_n) / jnp.maximum(jnp.abs(f_n), 1e-300)
    stop = jnp.where(fails >= MAX_FAILS, jnp.where(small(f, g), CONV_DECREASE, LS_FAILED),
                     RUNNING).astype(jnp.int32)
    status = jnp.where(running, jnp.where(ok, status_at(f_n, g_n, dec), stop), status)
    theta = jnp.where(ok, new, theta)
    f, g = jnp.where(ok, f_n, f), jnp.where(ok, g_n, g)
    return theta, f, g, s_M, y_M, rho_M, it + 1, fails, status

  f0, g0 = vg(theta0)
  zeros = jnp.zeros((m, p), theta0.dtype)
  c0 = (theta0, f0, g0, zeros, zeros, jnp.zeros(m, theta0.dtype), jnp.int32(0), jnp.int32(0),
        status_at(f0, g0, jnp.inf))
  out = jax.lax.while_loop(cond, body, c0)
  return out[0], out[1], out[8], out[6]


def _armijo(t, ft, f, slope):
  """Sufficient (and strict) decrease of a step of length t along a direction of this slope."""
  return (ft <= f + ARMIJO * t * slope) & (ft < f)


def _line_search(fun, theta, f, d, slope, running, ls_steps):
  """(t, fun(theta + t d)): backtracking from t = 1 by quadratic interpolation (clipped to
  0.1 t .. 0.5 t) until Armijo holds or ls_steps evaluations; a finished run does not search."""

  def ls_cond(l):
    t, ft, j = l
    return running & ~_armijo(t, ft, f, slope) & (j < ls_steps)

  def ls_body(l):
    t, ft, j = l
    den = 2.0 * (ft - f - slope * t)
    tq = jnp.where(jnp.isfinite(ft) & (den > 0), -slope * t * t / den, 0.1 * t)
    t = jnp.clip(tq, 0.1 * t, 0.5 * t)
    return t, fun(theta + t * d), j + 1

  one = jnp.ones((), theta.dtype)
  t, ft, _ = jax.lax.while_loop(ls_cond, ls_body, (one, fun(theta + d), jnp.int32(1)))
  return t, ft


def _remember(s_M, y_M, rho_M, s, y, ok):
  """The memory after a step s with gradient change y: the pair pushed when the step was
  taken (ok) with s'y > 0; cleared (rho 0, steepest descent next) when it was not."""
  sy = s @ y
  store = ok & (sy > 1e-12 * jnp.linalg.norm(s) * jnp.linalg.norm(y))
  push = lambda a_M, a: jnp.where(store, jnp.concatenate([a[None], a_M[:-1]]), a_M)
  s_M, y_M = push(s_M, s), push(y_M, y)
  rho_M = push(rho_M, 1.0 / jnp.where(store, sy, 1.0))
  return s_M, y_M, jnp.where(ok, rho_M, 0.0)


def preconditioned(fun, res_fn, theta0):
  """fun and the map z -> theta of a Gauss-Newton-whitened parameterisation around theta0."""
  j_NxP = jax.jacfwd(res_fn)(theta0)
  j_NxP = jnp.where(jnp.isfinite(j_NxP), j_NxP, 0.0)
  lam, v = jnp.linalg.eigh(j_NxP.T @ j_NxP)
  lam = jnp.maximum(lam, jnp.max(lam) * 1e-14 + 1e-300)
  m_PxP = v / jnp.sqrt(lam)[None, :]
  to_theta = lambda z: theta0 + m_PxP @ z
  return (lambda z: fun(to_theta(z))), to_theta
