"""Synthetic sweeps with a known answer: Eq. 6 curves whose CMR is known in closed form.

Per size n = N / 1e9 and ratio R (T in the paper's unit, T >= 1):
  dL_dom = a1 T^0.5,                              a1 = -0.08 R^0.3 n^-0.05
  dL_gen = a2 T^0.5 + a3 T^-0.5 + b2 (rise, turn), a2 = -1e-4 n^-0.1,  a3 = -K R n^-0.4,
  b2 = -(a2 + a3) so that dL_gen(1) = 0.
With s2 - s3 = s1 - s3 = 1, Eq. 7 is linear in T: T0 = lam a3 s3 / -(a1 s1 + lam a2 s2)
= lam |a3| / (|a1| + lam |a2|), increasing in R; as lam grows T0 -> |a3| / |a2|, the turning
point of dL_gen. Condition A does not bind below R ~ 1, so the CMR at budget T solves
T0(R) = T: about 0.30 at 460M and T = 100 (lam = 1000), growing with N.
"""

import numpy as np

PAPER_SIZES = {'460M': 460e6, '940M': 940e6, '1.6B': 1.6e9, '3.1B': 3.1e9}
PAPER_RATIOS = (1 / 8, 1 / 4, 1 / 3, 1 / 2, 3 / 4, 1.0)
K = 0.0404


def params(n_params: float, ratio: float) -> tuple[dict, dict]:
  """True Eq. 6 parameters (domain, general) of the synthetic family."""
  n = n_params / 1e9
  a1 = -0.08 * ratio ** 0.3 * n ** -0.05
  a2 = -1e-4 * n ** -0.1
  a3 = -K * ratio * n ** -0.4
  return dict(a1=a1, s1=0.5, b1=0.0), dict(a2=a2, s2=0.5, a3=a3, s3=-0.5, b2=-(a2 + a3))


def true_t0(n_params: float, ratio: float, lam: float) -> float:
  d, g = params(n_params, ratio)
  return lam * abs(g['a3']) / (abs(d['a1']) + lam * abs(g['a2']))


def true_cmr(n_params: float, t_budget: float, lam: float) -> float:
  """R with T0(R) = t_budget, by bisection (T0 increases with R); 1.0 if every R <= 1 is."""
  lo, hi = 0.0, 1.0
  if true_t0(n_params, hi, lam) <= t_budget:
    return 1.0
  for _ in range(100):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if true_t0(n_params, mid, lam) <= t_budget else (lo, mid)
  return 0.5 * (lo + hi)


def table(sizes=None, ratios=PAPER_RATIOS, n_points=100, t_max=100.0, sigma_gen=1e-5,
          sigma_dom=3e-4, seed=0, tokens_per_unit=0.2e9, base=(2.5, 2.2)) -> dict:
  """Results-table columns (validation rows, CPT phase, base rows at tokens_seen = 0)."""
  sizes = dict(PAPER_SIZES if sizes is None else sizes)
  rng = np.random.default_rng(seed)
  rows = {k: [] for k in ('run_id', 'size_name', 'n_params', 'n_params_nonemb', 'ratio', 'step',
                          'tokens_seen', 'split', 'general_loss', 'domain_loss', 'lr',
                          'wallclock', 'phase', 'domain')}
  t = np.linspace(t_max / n_points, t_max, n_points)
  t = np.maximum(t, 1.0)
  for name, n in sizes.items():
    lg, ld = base[0] - 0.3 * np.log10(n / 1e8), base[1] - 0.3 * np.log10(n / 1e8)
    for r in ratios:
      d, g = params(n, r)
      dom = d['a1'] * t ** d['s1'] + d['b1'] + rng.normal(0, sigma_dom, t.size)
      gen = (g['a2'] * t ** g['s2'] + g['a3'] * t ** g['s3'] + g['b2']
             + rng.normal(0, sigma_gen, t.size))
      run = f'{name}_r{r:.4f}'
      for step, (tt, gg, dd) in enumerate(zip(np.r_[0.0, t], np.r_[0.0, gen], np.r_[0.0, dom])):
        for k, v in (('run_id', run), ('size_name', name), ('n_params', n),
                     ('n_params_nonemb', n), ('ratio', r), ('step', step * 100),
                     ('tokens_seen', int(round(tt * tokens_per_unit))), ('split', 'validation'),
                     ('general_loss', lg + gg), ('domain_loss', ld + dd), ('lr', 3e-5),
                     ('wallclock', float(step)), ('phase', 'cpt'), ('domain', 'synthetic')):
          rows[k].append(v)
  return {k: np.asarray(v) for k, v in rows.items()}
