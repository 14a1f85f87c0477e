"""Synthetic sweeps with a known answer: Eq. 6 curves, optionally noisy the way real runs are.

Two families (n = N / 1e9, T in units of T, T >= 1):
  PAPER (the paper's shapes; tiny noise by default): its CMR is known in closed form.
    dL_dom = a1 T^0.5,                               a1 = -0.08 R^0.3 n^-0.05
    dL_gen = a2 T^0.5 + a3 T^-0.5 + b2 (rise, turn),  a2 = -1e-4 n^-0.1, a3 = -K R n^-0.4,
    b2 = -(a2 + a3) so that dL_gen(1) = 0. With s2 - s3 = s1 - s3 = 1, Eq. 7 is linear in T:
    T0 = lam |a3| / (|a1| + lam |a2|), increasing in R; condition A does not bind below R ~ 1,
    so the CMR at budget T solves T0(R) = T: about 0.30 at 460M and T = 100 (lam = 1000).
  NOISY (the demo's scale: a rise of ~0.3 nats at R = 1, replay lowering the general loss at
    small R, condition A deciding the CMR near R ~ 0.45):
    dL_dom = a1 (T^0.4 - 1),                         a1 = -0.12 R^0.4 n^-0.05
    dL_gen = a2 T^0.5 + a3 T^-1 + b2,                 a2 = -0.006 (1.2 - R) n^-0.1,
    a3 = -0.3 R^1.5 n^-0.2, b2 = -(a2 + a3).
Noise (`table`): per run, AR(1) eval noise along the trajectory (sd sigma, lag-1 correlation
rho) and seed-to-seed variation (each run's amplitudes a1, a2, a3 scaled by 1 + seed_sd z, so
the mean over seeds is the family). `method_cmr` is what the CMR machinery returns on the
noise-free curves at the trained ratios (the estimand an interval should cover); `family_cmr`
is the CMR of the continuous family (the estimand plus interpolation error between ratios).
"""

import numpy as np

PAPER_SIZES = {'460M': 460e6, '940M': 940e6, '1.6B': 1.6e9, '3.1B': 3.1e9}
PAPER_RATIOS = (1 / 8, 1 / 4, 1 / 3, 1 / 2, 3 / 4, 1.0)
K = 0.0404


def params(n_params: float, ratio: float) -> tuple[dict, dict]:
  """True Eq. 6 parameters (domain, general) of the PAPER family."""
  n = n_params / 1e9
  a1 = -0.08 * ratio ** 0.3 * n ** -0.05
  a2 = -1e-4 * n ** -0.1
  a3 = -K * ratio * n ** -0.4
  return dict(a1=a1, s1=0.5, b1=0.0), dict(a2=a2, s2=0.5, a3=a3, s3=-0.5, b2=-(a2 + a3))


def noisy_params(n_params: float, ratio: float) -> tuple[dict, dict]:
  """True Eq. 6 parameters (domain, general) of the NOISY family."""
  n = n_params / 1e9
  a1 = -0.12 * ratio ** 0.4 * n ** -0.05
  a2 = -0.006 * (1.2 - ratio) * n ** -0.1
  a3 = -0.3 * ratio ** 1.5 * n ** -0.2
  return dict(a1=a1, s1=0.4, b1=-a1), dict(a2=a2, s2=0.5, a3=a3, s3=-1.0, b2=-(a2 + a3))


FAMILIES = {'paper': params, 'noisy': noisy_params}


def true_t0(n_params: float, ratio: float, lam: float) -> float:
  d, g = params(n_params, ratio)
  return lam * abs(g['a3']) / (abs(d['a1']) + lam * abs(g['a2']))


def true_cmr(n_params: float, t_budget: float, lam: float) -> float:
  """PAPER family: R with T0(R) = t_budget, by bisection (T0 increases with R); 1.0 if every
  R <= 1 is feasible."""
  lo, hi = 0.0, 1.0
  if true_t0(n_params, hi, lam) <= t_budget:
    return 1.0
  for _ in range(100):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if true_t0(n_params, mid, lam) <= t_budget else (lo, mid)
  return 0.5 * (lo + hi)


def _ar1(rng, rho, sigma, n):
  z = rng.normal(0.0, sigma, n)
  e = np.empty(n)
  e[0] = z[0]
  for i in range(1, n):
    e[i] = rho * e[i - 1] + np.sqrt(1 - rho * rho) * z[i]
  return e


def _eq6(p, t):
  if 'a1' in p:
    return p['a1'] * t ** p['s1'] + p['b1']
  return p['a2'] * t ** p['s2'] + p['a3'] * t ** p['s3'] + p['b2']


def table(sizes=None, ratios=PAPER_RATIOS, n_points=100, t_max=100.0, sigma_gen=1e-5,
          sigma_dom=3e-4, seed=0, tokens_per_unit=0.2e9, base=(2.5, 2.2), family='paper',
          n_seeds=1, rho=0.0, seed_sd=0.0, warmup_evals=0) -> dict:
  """Results-table columns: validation rows of CPT runs (step 0 = the base model).

  Evals at T = t_max / n_points ... t_max (at least 1), step = 100 x eval index; with
  warmup_evals = w, the first w evals fall inside an lr warmup (train rows every 10 steps carry
  the ramp), so the laws drop them.
  n_seeds > 1: run ids end in _s{seed} and rows carry cpt_seed.
  """
  sizes = dict(PAPER_SIZES if sizes is None else sizes)
  fam = FAMILIES[family]
  rng = np.random.default_rng(seed)
  cols = ('run_id', 'size_name', 'n_params', 'n_params_nonemb', 'ratio', 'step', 'tokens_seen',
          'split', 'general_loss', 'domain_loss', 'lr', 'wallclock', 'phase', 'domain',
          'cpt_seed')
  rows = {k: [] for k in cols}

  def add(**kw):
    for k in cols:
      rows[k].append(kw[k])

  t = np.maximum(np.linspace(t_max / n_points, t_max, n_points), 1.0)
  for name, n in sizes.items():
    lg, ld = base[0] - 0.3 * np.log10(n / 1e8), base[1] - 0.3 * np.log10(n / 1e8)
    for r in ratios:
      for s in range(n_seeds):
        d, g = fam(n, r)
        d, g = dict(d), dict(g)
        for p, keys in ((d, ('a1',)), (g, ('a2', 'a3'))):
          for k in keys:
            p[k] *= 1 + seed_sd * rng.normal()
        g['b2'] = -(g['a2'] + g['a3'])
        if family == 'noisy':
          d['b1'] = -d['a1']
        dom = _eq6(d, t) + _ar1(rng, rho, sigma_dom, t.size)
        gen = _eq6(g, t) + _ar1(rng, rho, sigma_gen, t.size)
        run = f'{name}_r{r:.4f}' + (f'_s{s}' if n_seeds > 1 else '')
        common = dict(run_id=run, size_name=name, n_params=n, n_params_nonemb=n, ratio=r,
                      phase='cpt', domain='synthetic', cpt_seed=s, wallclock=0.0)
        # lr warmup to step 100 w + 50: the first w evals (steps 100 .. 100 w) fall inside it.
        ramp = 100 * warmup_evals + 50
        lr = lambda step: 3e-5 * min(1.0, step / ramp) if warmup_evals else 3e-5
        for step in range(10, ramp + 20 if warmup_evals else 0, 10):
          add(**common, step=step, tokens_seen=0, split='train', general_loss=np.nan,
              domain_loss=np.nan, lr=lr(step))
        for i, (tt, gg, dd) in enumerate(zip(np.r_[0.0, t], np.r_[0.0, gen], np.r_[0.0, dom])):
          add(**common, step=100 * i, tokens_seen=int(round(tt * tokens_per_unit)),
              split='validation', general_loss=lg + gg, domain_loss=ld + dd, lr=lr(100 * i))
  return {k: np.asarray(v) for k, v in rows.items()}


def method_cmr(family, n_params, ratios, t_lo, t_max, lam, eps) -> tuple[float, int]:
  """(CMR, censor) of the CMR machinery on the noise-free curves of the trained ratios."""
  from mixlaw.laws import cmr as cmr_lib  # pylint: disable=g-import-not-at-top
  fam = FAMILIES[family]
  ratios = np.asarray(sorted(ratios), np.float64)
  gen = np.array([[fam(n_params, r)[1][k] for k in ('a2', 's2', 'a3', 's3', 'b2')]
                  for r in ratios])
  dom = np.array([[fam(n_params, r)[0][k] for k in ('a1', 's1', 'b1')] for r in ratios])
  e = [cmr_lib.fit_exponent(ratios, cmr_lib.eq6_at(k, p, t_max))
       for k, p in (('general', gen), ('domain', dom))]
  out = cmr_lib.family_analysis(
      dict(ratios_K=ratios[None], gen_KxP=gen[None], dom_KxP=dom[None], e_gen=[e[0]],
           e_dom=[e[1]]), [lam], eps, t_lo, t_max, np.array([t_max]))
  return float(out['cmr_BxJ'][0, 0]), int(out['censor_BxJ'][0, 0])


def family_cmr(family, n_params, r_lo, r_hi, t_b, lam, eps, n_grid=20001) -> float:
  """CMR of the continuous family at budget t_b: the largest R in [r_lo, r_hi] with
  dL_gen(R, t_b) <= eps and dF/dT(t_b) <= 0 (slopes by central differences). NaN if none."""
  fam = FAMILIES[family]
  h = 1e-6 * t_b
  best = float('nan')
  for r in np.linspace(r_lo, r_hi, n_grid):
    d, g = fam(n_params, r)
    slope = lambda p: (_eq6(p, t_b + h) - _eq6(p, t_b - h)) / (2 * h)
    if _eq6(g, t_b) <= eps and slope(d) + lam * slope(g) <= 0:
      best = float(r)
  return best
