"""Critical mixture ratios: the Eq. 7 critical point, feasibility (Definition 2), the CMR at
every budget and its sensitivity, after Gu et al. 2024 (arXiv 2407.17467).

Eq. 6 itself lives in forms.py (`eq6_gen`, `eq6_dom`); slopes are its exact T-derivatives.
With F(T) = dL_dom + lam (dL_gen - eps) and g = dF/dT (Eq. 7), R is feasible at budget T_b
when the critical point has passed by T_b, i.e. T0 exists with g <= 0 on [T0, T_b]
(equivalently g(T_b) <= 0), and condition A holds, dL_gen(T_b) <= eps. T0 is the last +->-
sign change of g before T_b (a dip of a fit at T_min followed by a rise is not a critical point).
Between trained ratios the Eq. 6 curves are interpolated in u = R^e (e: the exponent of the
ratio law a R^e + b fitted to the Eq. 6 values at T_max across the size's ratios; e = 1 when
that fit is poor or e is outside (0, 4]):
  dL(R, T) = (1 - w) dL(R_k, T) + w dL(R_k+1, T),   w = (u(R) - u_k) / (u_k+1 - u_k).
The weights do not depend on T, so every interpolated curve keeps exact T-derivatives.
CMR(T_b) = the largest feasible R: a 129-point R grid, refined by bisection to ~1e-8.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mixlaw.laws import fit as fit_lib
from mixlaw.laws import forms as forms_lib
from mixlaw.laws.forms import pow_
from mixlaw.laws.options import LAM_RANGE  # noqa: F401  (the paper's lambdas)

N_TGRID, N_TBISECT = 128, 50
N_RGRID, N_RBISECT = 129, 24
N_BUDGETS = 50
# Censoring of a CMR: 0 = inside the trained ratios, 1 = every trained ratio up to the largest
# is feasible (CMR >= max R; reported as max R), 2 = none is feasible (reported as null).
CENSOR = {0: None, 1: 'above', 2: 'below'}
KIND = {0: 'root', 1: 'before_first_eval', 2: 'none'}
EQ6 = {'general': 'eq6_gen', 'domain': 'eq6_dom'}


def eq6_value(which, p_P, t):
  """Eq. 6 (forms.py) at scalar or array T, parameters as a vector in the form's order."""
  form = forms_lib.get_form(EQ6[which])
  return form.fn({k: p_P[..., i] for i, k in enumerate(form.params)}, {'T': t})


def eq6_slope(which, p_P, t):
  """d Eq. 6 / dT at scalar T (exact, by autodiff)."""
  return jax.grad(lambda tt: eq6_value(which, p_P, tt))(t)


def eq7_g(t, dom_p3, gen_p5, lam):
  """dF/dT of F = dL_dom + lam (dL_gen - eps)."""
  return eq6_slope('domain', dom_p3, t) + lam * eq6_slope('general', gen_p5, t)


def last_crossing(g_fn, t_lo, t_b):
  """T0: the last T in [t_lo, t_b] where g turns from > 0 to <= 0, with g <= 0 up to t_b.

  A 128-point log-T scan, then bisection. Returns (T0, kind): kind 0 = a root inside; 1 = g <= 0
  on all of [t_lo, t_b] (the critical point passed before the first fitted eval; T0 = t_lo);
  2 = g(t_b) > 0 (no critical point yet; T0 = inf). NaN counts as > 0.
  """
  lt = jnp.linspace(jnp.log(t_lo), jnp.log(t_b), N_TGRID)
  pos = ~(jax.vmap(lambda l: g_fn(jnp.exp(l)))(lt) <= 0)
  last_pos = N_TGRID - 1 - jnp.argmax(pos[::-1])  # valid when any(pos)

  def bisect(_, ab):
    a, b = ab
    m = 0.5 * (a + b)
    p = ~(g_fn(jnp.exp(m)) <= 0)
    return jnp.where(p, m, a), jnp.where(p, b, m)

  i = jnp.minimum(last_pos, N_TGRID - 2)
  a, b = jax.lax.fori_loop(0, N_TBISECT, bisect, (lt[i], lt[i + 1]))
  kind = jnp.where(pos[-1], 2, jnp.where(jnp.any(pos), 0, 1))
  t0 = jnp.where(kind == 2, jnp.inf, jnp.where(kind == 1, t_lo, jnp.exp(0.5 * (a + b))))
  return t0, kind


def cmr_core(gen_fn, g_fn, r_lo, r_hi, budgets_J, eps, use_cp=True):
  """CMR at each budget for a family given by gen_fn(R, T) = dL_gen and g_fn(R, T) = dF/dT.

  use_cp=False: condition A alone. Returns (cmr_J, censor_J); censored 'below' entries are NaN,
  'above' ones are r_hi.
  """
  r_G = jnp.linspace(r_lo, r_hi, N_RGRID)

  def feasible(r, tb):
    ok_a = gen_fn(r, tb) <= eps
    return ok_a & ((g_fn(r, tb) <= 0) | (not use_cp))

  feas_GxJ = jax.vmap(lambda r: jax.vmap(lambda tb: feasible(r, tb))(budgets_J))(r_G)

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
    return mix(gen, fam['e_gen'], lambda p, tt: eq6_value('general', p, tt), r, t)

  def g_fn(r, t):
    return (mix(dom, fam['e_dom'], lambda p, tt: eq6_slope('domain', p, tt), r, t)
            + lam * mix(gen, fam['e_gen'], lambda p, tt: eq6_slope('general', p, tt), r, t))

  return gen_fn, g_fn


def _family_cmr(fam, lam, eps, budgets_J, use_cp=True):
  gen_fn, g_fn = interp_family(fam, lam)
  r = fam['ratios_K']
  return cmr_core(gen_fn, g_fn, r[0], r[-1], budgets_J, eps, use_cp)


def _family_trained(fam, lam, t_lo, t_max):
  gen_fn, g_fn = interp_family(fam, lam)

  def one(r):
    t0, kind = last_crossing(lambda t: g_fn(r, t), t_lo, t_max)
    return t0, kind, gen_fn(r, t_max), g_fn(r, t_max)

  return jax.vmap(one)(fam['ratios_K'])


@jax.jit
def _family_analysis(fam_B, lams_L, eps, t_lo, t_max, budgets_J):
  lam = lams_L[0]
  main = jax.vmap(lambda f: _family_cmr(f, lam, eps, budgets_J))(fam_B)
  only_a = jax.vmap(lambda f: _family_cmr(f, lam, eps, budgets_J[-1:], False))(fam_B)
  fam0 = jax.tree.map(lambda x: x[0], fam_B)
  sens = jax.vmap(lambda l: _family_cmr(fam0, l, eps, budgets_J[-1:]))(lams_L)
  return main, only_a, sens, _family_trained(fam0, lam, t_lo, t_max)


def family_analysis(fam_B, lams, eps, t_lo, t_max, budgets_J) -> dict:
  """One size's family for B replicates (leading axis B on every leaf; replicate 0 is the
  point estimate). With lam = lams[0], for every replicate: the CMR at every budget (cmr_BxJ,
  censor_BxJ) and at T_max under condition A alone (cmr_a_B, censor_a_B); for replicate 0, at
  the trained ratios and T_max: T0, its kind, dL_gen and g; for replicate 0 and each lam in
  lams: the CMR at T_max (sens_cmr_L, sens_censor_L).
  """
  b = len(np.asarray(fam_B['e_gen']))
  bb = max(64, 1 << (b - 1).bit_length())  # shared compilations across replicate counts.
  with jax.enable_x64(True):
    fam = {k: jnp.asarray(np.concatenate([np.asarray(v, np.float64)] + [
        np.asarray(v, np.float64)[:1]] * (bb - b))) for k, v in fam_B.items()}
    (c, z), (ca, za), (sc, sz), (t0, kind, dg, g) = _family_analysis(
        fam, jnp.asarray(np.asarray(lams, np.float64)), float(eps), float(t_lo), float(t_max),
        jnp.asarray(np.asarray(budgets_J, np.float64)))
    out = dict(cmr_BxJ=c[:b], censor_BxJ=z[:b], cmr_a_B=ca[:b, 0], censor_a_B=za[:b, 0],
               sens_cmr_L=sc[:, 0], sens_censor_L=sz[:, 0], t0_K=t0, kind_K=kind, dgen_K=dg,
               g_K=g)
    return {k: np.array(v) for k, v in out.items()}


@jax.jit
def _eq7_root(dom_p, gen_p, lam, t_lo, t_hi):
  return last_crossing(lambda t: eq7_g(t, dom_p, gen_p, lam), t_lo, t_hi)


def eq7_root(dom_params, gen_params, lam, t_lo=1e-3, t_hi=100.0):
  """Critical point T0 of one ratio at budget t_hi from its Eq. 6 fits (dicts a1, s1, b1 /
  a2, s2, a3, s3, b2). Returns (T0, kind) as in last_crossing."""
  with jax.enable_x64(True):
    d = jnp.asarray([dom_params[k] for k in ('a1', 's1', 'b1')], jnp.float64)
    g = jnp.asarray([gen_params[k] for k in ('a2', 's2', 'a3', 's3', 'b2')], jnp.float64)
    t0, kind = _eq7_root(d, g, float(lam), float(t_lo), float(t_hi))
    return float(t0), int(kind)


def interp_exponent(s, r2):
  """Interpolation exponent from ratio-law fits (exponent s, R^2): s if R^2 >= 0.9 and
  0 < s <= 4, else 1 (linear in R)."""
  return np.where((s > 0) & (s <= 4) & (r2 >= 0.9), s, 1.0)


def fit_exponent(ratios_K, values_K) -> float:
  """interp_exponent of the ratio law fitted to one size's values at T_max (1 if < 3 ratios)."""
  if len(ratios_K) < 3:
    return 1.0
  r = fit_lib.fit_one('ratio_law', {'R': ratios_K}, values_K, what='ratio-law fit')
  return float(interp_exponent(r.params_CxP[0, 1], r.r2_C[0]))


def budgets(t_lo, t_max, n=N_BUDGETS):
  """The T grid of the CMR series: n evenly spaced budgets up to T_max, none below t_lo."""
  return np.linspace(max(t_lo, t_max / n), t_max, n)


@functools.lru_cache(maxsize=None)
def _eq6_jit(which):
  return jax.jit(lambda p, t: eq6_value(which, p, t))


def eq6_at(which, params_xP, t):
  """Eq. 6 value (which: 'general' or 'domain') at T for params with any leading shape."""
  with jax.enable_x64(True):
    p = jnp.asarray(np.asarray(params_xP, np.float64))
    t = jnp.asarray(np.asarray(t, np.float64))
    return np.array(_eq6_jit(which)(p, t))
