"""Critical mixture ratios: Eq. 6 fits, the Eq. 7 critical point, feasibility (Definition 2),
the CMR at every budget T and the CMR law (Eq. 8), after Gu et al. 2024 (arXiv 2407.17467).

Between trained ratios the Eq. 6 curves are interpolated in the ratio-law coordinate
u = R^e (e: exponent of the ratio law L(R) = a R^e + b fitted to the Eq. 6 values at T_max
across the size's ratios; e = 1 when that fit fails or e is outside (0, 4]):
  dL(R, T) = (1 - w) dL(R_k, T) + w dL(R_k+1, T),   w = (u(R) - u_k) / (u_k+1 - u_k).
The weights do not depend on T, so every interpolated curve is a mixture of Eq. 6 curves with
exact T-derivatives, and interpolation is exact when the losses follow the ratio law.
Feasible(R, T_b): the first critical point T0 (Eq. 7 root, where g turns <= 0) lies in
[t_lo, T_b] and dL_gen(R, T_b) <= eps (condition A). CMR(T_b) = the largest feasible R,
found on a 129-point R grid and refined by bisection to ~1e-8.
"""

import jax
import jax.numpy as jnp
import numpy as np

from mixlaw.laws import fit as fit_lib
from mixlaw.laws.forms import pow_

EPS = 0.05
LAM = 1000.0  # geometric middle of the paper's 100..7000 (sqrt(7e5) ~ 840), rounded.
LAM_RANGE = (100.0, 7000.0)
N_TGRID, N_TBISECT = 128, 50
N_RGRID, N_RBISECT = 129, 24
N_BUDGETS = 50
# Censoring of a CMR: 0 = inside the trained ratios, 1 = every trained ratio up to the largest
# is feasible (CMR >= max R; reported as max R), 2 = none is feasible (reported as null).
CENSOR = {0: None, 1: 'above', 2: 'below'}


def gen_value(p, t):
  a2, s2, a3, s3, b2 = (p[..., i] for i in range(5))
  return a2 * pow_(t, s2) + a3 * pow_(t, s3) + b2


def gen_slope(p, t):
  a2, s2, a3, s3 = (p[..., i] for i in range(4))
  return a2 * s2 * pow_(t, s2 - 1) + a3 * s3 * pow_(t, s3 - 1)


def dom_value(p, t):
  return p[..., 0] * pow_(t, p[..., 1]) + p[..., 2]


def dom_slope(p, t):
  return p[..., 0] * p[..., 1] * pow_(t, p[..., 1] - 1)


def eq7_g(t, dom_p3, gen_p5, lam):
  """dF/dT of F = dL_dom + lam (dL_gen - eps): a1 s1 T^(s1-1) + lam (a2 s2 T^(s2-1) + a3 s3 T^(s3-1))."""
  return dom_slope(dom_p3, t) + lam * gen_slope(gen_p5, t)


def first_crossing(g_fn, t_lo, t_hi):
  """First T in [t_lo, t_hi] where g turns <= 0: a 128-point log-T scan, then bisection.

  Returns (T0, kind): kind 0 = a root inside; 1 = g <= 0 already at t_lo (the critical point
  passed before the first evaluation; T0 = t_lo); 2 = g > 0 throughout (T0 = inf).
  """
  lt = jnp.linspace(jnp.log(t_lo), jnp.log(t_hi), N_TGRID)
  nonpos = jax.vmap(lambda l: g_fn(jnp.exp(l)))(lt) <= 0  # NaN counts as > 0.
  i = jnp.argmax(nonpos)
  found = jnp.any(nonpos)

  def bisect(_, ab):
    a, b = ab
    m = 0.5 * (a + b)
    pos = g_fn(jnp.exp(m)) > 0
    return jnp.where(pos, m, a), jnp.where(pos, b, m)

  a, b = jax.lax.fori_loop(0, N_TBISECT, bisect, (lt[jnp.maximum(i - 1, 0)], lt[i]))
  t0 = jnp.where(found, jnp.where(i == 0, t_lo, jnp.exp(0.5 * (a + b))), jnp.inf)
  kind = jnp.where(found, jnp.where(i == 0, 1, 0), 2)
  return t0, kind


def cmr_core(gen_fn, g_fn, r_lo, r_hi, t_lo, t_max, budgets_J, eps):
  """CMR at each budget for a family given by gen_fn(R, T) = dL_gen and g_fn(R, T) = dF/dT.

  Returns (cmr_J, censor_J); censored 'below' entries are NaN, 'above' ones are r_hi.
  """
  r_G = jnp.linspace(r_lo, r_hi, N_RGRID)
  t0_G = jax.vmap(lambda r: first_crossing(lambda t: g_fn(r, t), t_lo, t_max)[0])(r_G)
  gen_GxJ = jax.vmap(lambda r: jax.vmap(lambda t: gen_fn(r, t))(budgets_J))(r_G)
  feas_GxJ = (t0_G[:, None] <= budgets_J[None, :]) & (gen_GxJ <= eps)

  def feasible(r, tb):
    t0 = first_crossing(lambda t: g_fn(r, t), t_lo, t_max)[0]
    return (t0 <= tb) & (gen_fn(r, tb) <= eps)

  def one_budget(feas_G, tb):
    k = N_RGRID - 1 - jnp.argmax(feas_G[::-1])
    k1 = jnp.minimum(k + 1, N_RGRID - 1)

    def bisect(_, ab):
      a, b = ab
      m = 0.5 * (a + b)
      ok = feasible(m, tb)
      return jnp.where(ok, m, a), jnp.where(ok, b, m)

    a, _ = jax.lax.fori_loop(0, N_RBISECT, bisect, (r_G[k], r_G[k1]))
    above = feas_G[-1]
    cmr = jnp.where(above, r_hi, jnp.where(jnp.any(feas_G), a, jnp.nan))
    censor = jnp.where(above, 1, jnp.where(jnp.any(feas_G), 0, 2))
    return cmr, censor

  return jax.vmap(one_budget, in_axes=(1, 0))(feas_GxJ, budgets_J)


def _weights(ratios_K, e, r):
  k = ratios_K.shape[0]
  i = jnp.clip(jnp.searchsorted(ratios_K, r, side='right') - 1, 0, k - 2)
  u0, u1 = pow_(ratios_K[i], e), pow_(ratios_K[i + 1], e)
  return i, jnp.clip((pow_(r, e) - u0) / (u1 - u0), 0.0, 1.0)


def interp_family(fam, lam):
  """(gen_fn, g_fn) of the ratio-interpolated Eq. 6 curves of one size.

  fam: ratios_K (sorted), gen_KxP (Eq. 6 general), dom_KxP (Eq. 6 domain), e_gen, e_dom.
  """
  ratios, gen, dom = fam['ratios_K'], fam['gen_KxP'], fam['dom_KxP']

  def mix(p, e, fn, r, t):
    i, w = _weights(ratios, e, r)
    return (1 - w) * fn(p[i], t) + w * fn(p[i + 1], t)

  def gen_fn(r, t):
    return mix(gen, fam['e_gen'], gen_value, r, t)

  def g_fn(r, t):
    return mix(dom, fam['e_dom'], dom_slope, r, t) + lam * mix(gen, fam['e_gen'], gen_slope, r, t)

  return gen_fn, g_fn


def _family_cmr(fam, lam, eps, t_lo, t_max, budgets_J):
  gen_fn, g_fn = interp_family(fam, lam)
  r = fam['ratios_K']
  return cmr_core(gen_fn, g_fn, r[0], r[-1], t_lo, t_max, budgets_J, eps)


def _family_trained(fam, lam, t_lo, t_max):
  gen_fn, g_fn = interp_family(fam, lam)

  def one(r):
    t0, kind = first_crossing(lambda t: g_fn(r, t), t_lo, t_max)
    return t0, kind, gen_fn(r, t_max)

  return jax.vmap(one)(fam['ratios_K'])


@jax.jit
def _family_analysis(fam_B, lams_L, eps, t_lo, t_max, budgets_J):
  main = jax.vmap(lambda f: _family_cmr(f, lams_L[0], eps, t_lo, t_max, budgets_J))(fam_B)
  fam0 = jax.tree.map(lambda x: x[0], fam_B)
  sens = jax.vmap(lambda lam: _family_cmr(fam0, lam, eps, t_lo, t_max, budgets_J[-1:]))(lams_L)
  return main, sens, _family_trained(fam0, lams_L[0], t_lo, t_max)


def family_analysis(fam_B, lams, eps, t_lo, t_max, budgets_J) -> dict:
  """One size's family for B replicates (leading axis B on every leaf; replicate 0 is the
  point estimate). With lam = lams[0]: CMR at every budget for every replicate (cmr_BxJ,
  censor_BxJ) and, for replicate 0, T0, its kind and dL_gen(T_max) at the trained ratios;
  for replicate 0 and each lam in lams: the CMR at T_max (sens_cmr_L, sens_censor_L).
  """
  with jax.enable_x64(True):
    fam = {k: jnp.asarray(np.asarray(v, np.float64)) for k, v in fam_B.items()}
    (c, z), (sc, sz), (t0, kind, dg) = _family_analysis(
        fam, jnp.asarray(np.asarray(lams, np.float64)), float(eps), float(t_lo), float(t_max),
        jnp.asarray(np.asarray(budgets_J, np.float64)))
    out = dict(cmr_BxJ=c, censor_BxJ=z, sens_cmr_L=sc[:, 0], sens_censor_L=sz[:, 0], t0_K=t0,
               kind_K=kind, dgen_K=dg)
    return {k: np.array(v) for k, v in out.items()}


@jax.jit
def _eq7_root(dom_p, gen_p, lam, t_lo, t_hi):
  return first_crossing(lambda t: eq7_g(t, dom_p, gen_p, lam), t_lo, t_hi)


def eq7_root(dom_params, gen_params, lam=LAM, t_lo=1e-3, t_hi=100.0):
  """Critical point T0 of one ratio from its Eq. 6 fits (dicts a1, s1, b1 / a2, s2, a3, s3, b2).

  Returns (T0, kind) as in first_crossing.
  """
  with jax.enable_x64(True):
    d = jnp.asarray([dom_params[k] for k in ('a1', 's1', 'b1')], jnp.float64)
    g = jnp.asarray([gen_params[k] for k in ('a2', 's2', 'a3', 's3', 'b2')], jnp.float64)
    t0, kind = _eq7_root(d, g, float(lam), float(t_lo), float(t_hi))
    return float(t0), int(kind)


def budgets(t_lo, t_max, n=N_BUDGETS):
  """The T grid of the CMR series: n evenly spaced budgets up to T_max, none below t_lo."""
  return np.linspace(max(t_lo, t_max / n), t_max, n)


def ratio_exponents(ratios_SK, values_BxSxK, huber_delta):
  """Ratio-law exponent e per (replicate, size) for the interpolation coordinate u = R^e.

  ratios_SK: list of S arrays; values_BxSxK: list of S arrays B x K. Sizes with < 3 ratios, bad
  fits or e outside (0, 4] get e = 1 (linear in R).
  """
  b = values_BxSxK[0].shape[0]
  e_BxS = np.ones((b, len(ratios_SK)))
  rows = [s for s, r in enumerate(ratios_SK) if len(r) >= 3]
  if not rows:
    return e_BxS
  kmax = max(len(ratios_SK[s]) for s in rows)
  x = np.ones((b, len(rows), kmax))
  y = np.ones((b, len(rows), kmax))
  w = np.zeros((b, len(rows), kmax))
  for j, s in enumerate(rows):
    k = len(ratios_SK[s])
    x[:, j, :k], y[:, j, :k], w[:, j, :k] = ratios_SK[s], values_BxSxK[s], 1.0
  res = fit_lib.fit_curves('ratio_law', {'R': x.reshape(-1, kmax)}, y.reshape(-1, kmax),
                           w.reshape(-1, kmax), huber_delta=huber_delta, n_starts=16)
  p = res.params_CxP.reshape(b, len(rows), 3)
  ok = ((p[..., 1] > 0) & (p[..., 1] <= 4) & (res.r2_C.reshape(b, len(rows)) >= 0.9)
        & res.converged_C.reshape(b, len(rows)))
  e_BxS[:, rows] = np.where(ok, p[..., 1], 1.0)
  return e_BxS


_eq6_jit = {'general': jax.jit(gen_value), 'domain': jax.jit(dom_value)}


def eq6_at(which, params_xP, t):
  """Eq. 6 value (which: 'general' or 'domain') at T for params with any leading shape."""
  with jax.enable_x64(True):
    p = jnp.asarray(np.asarray(params_xP, np.float64))
    t = jnp.asarray(np.asarray(t, np.float64))
    return np.array(_eq6_jit[which](p, t))
