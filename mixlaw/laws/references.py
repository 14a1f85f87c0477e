"""The fitted CMR in two references, with the seed offset's uncertainty and a noise-aware
condition B (the Eq. 6 curves of one size, interpolated between trained ratios: cmr.py).

  base     dL against the base model (the paper's). Replicates (paired.series_draws) hold the
           data orders' shared offset at its measured value ('within': what a within-seed
           contrast sees); the absolute CMR ('abs') adds what the mean offset of a fresh set of
           orders would add at the budget (paired.offset_shifts: a level shift of dL_gen and a
           shift of g), per replicate.
  control  dL against the R = 0 run of the same data order at the same step: the fitted
           curves minus the R = 0 curve (dL_gen(R, T) - dL_gen(0, T), and so g). The offset
           cancels, so it needs no offset draw. Needs R = 0 among the ratios.
Per replicate and variant: the Definition-2 CMR and the condition-A CMR at the budget, g and
dL_gen at the trained ratios. `brackets`: the Definition-2 bracket of bracket.py on the
continuous family, B passing where g + z se(R) <= 0 and not failing where g - z se(R) <= 0,
se(R) interpolated in u = R^e between the within-seed replicate standard errors at the trained
ratios (eval noise flips B; the data orders' uncertainty is in the absolute interval).
Every variant is one row of a vmapped call (one compilation per padded replicate count).
"""

import functools
from statistics import NormalDist

import jax
import jax.numpy as jnp
import numpy as np

from mixlaw.laws import cmr as cmr_lib
from mixlaw.laws.forms import pow_

REFS = ('base', 'control')
# (reference, kind, absolute) of every replicate variant; (reference, side) of the brackets.
VARIANTS = (('base', 'def2', False), ('base', 'A', False), ('base', 'def2', True),
            ('base', 'A', True), ('control', 'def2', False), ('control', 'A', False))
BRACKETS = (('base', -1.0), ('base', 1.0), ('control', -1.0), ('control', 1.0))  # lo, hi


def key(ref: str, kind: str, absolute: bool = False) -> str:
  return f'{ref}{"_abs" if absolute else ""}_{kind}'


@jax.jit
def _variants(fam_B, lam, eps, t_b, v_BxVx5, se_BxVxK):
  """Per replicate b and variant v (dl, dg, control, use_cp, m): the CMR at t_b of
  gen = gen_fn + dl - control gen_fn(R0), g = g_fn + dg - control g_fn(R0) + m se(R), with
  g = -1 (never binding) where use_cp = 0; and g, gen at the trained ratios."""
  budgets = jnp.reshape(t_b, (1,))

  def one(fam, v_Vx5, se_VxK):
    gen_fn, g_fn = cmr_lib.interp_family(fam, lam)
    r = fam['ratios_K']
    u = pow_(r, fam['e_gen'])

    def variant(v, se_K):
      dl, dg, ctrl, cp, m = v[0], v[1], v[2], v[3], v[4]
      gen = lambda rr, t: gen_fn(rr, t) + dl - ctrl * gen_fn(r[0], t)
      se = lambda rr: jnp.interp(pow_(rr, fam['e_gen']), u, se_K)
      g = lambda rr, t: jnp.where(cp > 0, g_fn(rr, t) + dg - ctrl * g_fn(r[0], t) + m * se(rr),
                                  -1.0)
      c, z = cmr_lib.cmr_core(gen, g, r[0], r[-1], budgets, eps)
      return c[0], z[0], jax.vmap(lambda rr: g(rr, t_b))(r), jax.vmap(lambda rr: gen(rr, t_b))(r)

    return jax.vmap(variant)(v_Vx5, se_VxK)

  return jax.vmap(one)(fam_B, v_BxVx5, se_BxVxK)


def _run(fam_B, lam, eps, t_b, v_BxVx5, se_BxVxK):
  b = v_BxVx5.shape[0]
  bb = max(64, 1 << (b - 1).bit_length())  # one compilation across replicate counts.
  pad = lambda a: np.concatenate([a] + [a[:1]] * (bb - b))
  with jax.enable_x64(True):
    fam = {k: jnp.asarray(pad(np.asarray(v, np.float64))) for k, v in fam_B.items()}
    out = _variants(fam, float(lam), float(eps), float(t_b), jnp.asarray(pad(v_BxVx5)),
                    jnp.asarray(pad(se_BxVxK)))
    return [np.array(x)[:b] for x in out]


def analysis(fam_B, lam: float, eps: float, t_b: float, level_B=None, g_B=None) -> dict:
  """For B replicates of one size's family (leading axis B on every leaf of fam_B, as
  cmr.family_analysis takes it; replicate 0 the point estimate): key(ref, kind, absolute) ->
  (CMR_B, censor_B); key + '_g_K', key + '_dgen_K' -> B x K (kind 'def2'). level_B, g_B: the
  offset shifts of the absolute replicates (replicate 0 gets none). Control variants only
  when the smallest ratio is 0."""
  b = len(np.asarray(fam_B['e_gen']))
  k = np.asarray(fam_B['ratios_K']).shape[-1]
  shift = lambda x: np.zeros(b) if x is None else np.r_[0.0, np.asarray(x, np.float64)[:b - 1]]
  dl, dg = shift(level_B), shift(g_B)
  v = np.zeros((b, len(VARIANTS), 5))
  for j, (ref, kind, absolute) in enumerate(VARIANTS):
    v[:, j, 0], v[:, j, 1] = (dl, dg) if absolute else (0.0, 0.0)
    v[:, j, 2], v[:, j, 3] = float(ref == 'control'), float(kind == 'def2')
  c, z, g, gen = _run(fam_B, lam, eps, t_b, v, np.zeros((b, len(VARIANTS), k)))
  control = bool(np.asarray(fam_B['ratios_K'])[0, 0] == 0.0)
  out = {}
  for j, (ref, kind, absolute) in enumerate(VARIANTS):
    if ref == 'control' and not control:
      continue
    name = key(ref, kind, absolute)
    out[name] = (c[:, j], z[:, j])
    if kind == 'def2':
      out[name + '_g_K'], out[name + '_dgen_K'] = g[:, j], gen[:, j]
  return out


def brackets(fam: dict, lam: float, eps: float, t_b: float, se: dict, z: float) -> dict:
  """The Definition-2 bracket of the point family (leaves without a replicate axis) per
  reference: '{ref}_lo' / '{ref}_hi' -> (CMR, censor). se: ref -> standard error of g per
  trained ratio (missing or NaN: undetermined there)."""
  k = np.asarray(fam['ratios_K']).size
  v = np.zeros((1, len(VARIANTS), 5))
  s = np.full((1, len(VARIANTS), k), 1e30)
  for j, (ref, sign) in enumerate(BRACKETS):
    v[0, j] = (0.0, 0.0, float(ref == 'control'), 1.0, -sign * z)
    if ref in se:
      s[0, j] = np.nan_to_num(np.asarray(se[ref], np.float64), nan=1e30)
  fam1 = {key_: np.asarray(val)[None] for key_, val in fam.items()}
  c, zz, _, _ = _run(fam1, lam, eps, t_b, v, s)
  control = 'control' in se and float(np.asarray(fam['ratios_K'])[0]) == 0.0
  return {f'{ref}_{"lo" if sign < 0 else "hi"}': (float(c[0, j]), int(zz[0, j]))
          for j, (ref, sign) in enumerate(BRACKETS) if ref == 'base' or control}


def spread(x_B, z: float) -> float:
  """Robust standard error of replicates: the half-width of their central interval at the
  level of +-z normal standard errors, / z (heavy-tailed draws: not their sd)."""
  x = np.asarray(x_B, np.float64)
  x = x[np.isfinite(x)]
  if x.size < 3:
    return float('nan')
  q = 100 * (1 - NormalDist().cdf(z))
  lo, hi = np.percentile(x, [q, 100 - q])
  return float((hi - lo) / (2 * z))
