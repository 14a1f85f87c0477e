"""Synthetic sweeps with a known answer: Eq. 6 curves, optionally noisy the way real runs are.

Four families (n = N / 1e9, T in units of T, T >= 1, T_max = 100):
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
  TURN (late turns: the general loss rises, peaks at T_p = p(R) T_max and falls, as cmr_cpu's
    runs do near their CMR); with x = T / T_p:
    dL_gen = A (x - x^2.5 / 2.5) + b2 (Eq. 6: a3 T^1 + a2 T^2.5 + b2, dL_gen' = 0 at T_p),
    A = 0.2 R (N / 1e8)^-0.1, p(R) = 0.45 + 0.6 R (0.525, 0.6, 0.75, 0.9, 1.05 at R = 1/8,
    1/4, 1/2, 3/4, 1), b2: dL_gen(T_max / 10) = 0.02 R. The fall from the peak to T_max is
    0.018 / 0.018 / 0.0088 / 0.0014 / 0 nats (R = 1/8 .. 1 at 1e8; 0.0076 at R = 1/2 and 4e8):
    a turn at 0.9 T_max is too shallow to see at eval noise ~1e-3. dL_dom as NOISY. Condition A
    decides the CMR, just above R = 1/2 (0.513 at 1e8, 0.554 at 4e8; ratios 1/8, 1/4, 1/2, 1),
    where B holds only because the curve turned: a monotone fit of R = 1/2 makes B fail there
    and the CMR drop to ~0.46.
  MONO (the control: every general-loss curve monotone in T, falling (replay) below R = 0.85,
    rising above; condition A decides, at 0.59 (1e8) / 0.65 (4e8); B holds up to ~0.8):
    dL_gen = c ((T / T_max)^0.5 - 1) + L (one term; a3 = 0 in Eq. 6's layout),
    c = 0.08 (R - 0.85), L = 0.11 R^1.3 (N / 1e8)^-0.1 - 0.005 (dL_gen at T_max). dL_dom as NOISY.
Noise (`table`): per run, AR(1) eval noise along the trajectory (sd sigma, lag-1 correlation
rho) and seed-to-seed variation: each run's amplitudes scaled by 1 + seed_sd z (PAPER, NOISY:
a1, a2, a3; TURN, MONO: a1, the general amplitude A or c, and the peak position by
1 + seed_sd z / 2 (TURN) or the level L by 0.05 seed_sd z nats (MONO)), so that the mean
over seeds is the family (to first order for the peak). seeds='independent': z drawn per run;
'paired': one z per seed index, shared by every (size, R) (one data order per seed index, as
sweeps whose data seed depends on the CPT seed only). `method_cmr` is what the CMR machinery
returns on the noise-free curves at the trained ratios (the estimand an interval should
cover); `family_cmr` is the CMR of the continuous family (the estimand plus interpolation
error between ratios); `modelfree_cmr` is what the model-free CMRs return on noise-free evals.
"""

import numpy as np

PAPER_SIZES = {'460M': 460e6, '940M': 940e6, '1.6B': 1.6e9, '3.1B': 3.1e9}
PAPER_RATIOS = (1 / 8, 1 / 4, 1 / 3, 1 / 2, 3 / 4, 1.0)
K = 0.0404
T_MAX = 100.0  # the families' T_max (TURN's peaks and MONO's shapes are placed against it).
GEN_KEYS = ('a2', 's2', 'a3', 's3', 'b2')
DOM_KEYS = ('a1', 's1', 'b1')
_ZERO = (0.0, 0.0, 0.0)


def params(n_params: float, ratio: float, dev=_ZERO) -> tuple[dict, dict]:
  """True Eq. 6 parameters (domain, general) of the PAPER family (dev: relative deviations of
  a1, a2, a3 of one run)."""
  n = n_params / 1e9
  a1 = -0.08 * ratio ** 0.3 * n ** -0.05 * (1 + dev[0])
  a2 = -1e-4 * n ** -0.1 * (1 + dev[1])
  a3 = -K * ratio * n ** -0.4 * (1 + dev[2])
  return dict(a1=a1, s1=0.5, b1=0.0), dict(a2=a2, s2=0.5, a3=a3, s3=-0.5, b2=-(a2 + a3))


def _noisy_dom(n, ratio, dev):
  a1 = -0.12 * ratio ** 0.4 * n ** -0.05 * (1 + dev)
  return dict(a1=a1, s1=0.4, b1=-a1)


def noisy_params(n_params: float, ratio: float, dev=_ZERO) -> tuple[dict, dict]:
  """True Eq. 6 parameters (domain, general) of the NOISY family."""
  n = n_params / 1e9
  a2 = -0.006 * (1.2 - ratio) * n ** -0.1 * (1 + dev[1])
  a3 = -0.3 * ratio ** 1.5 * n ** -0.2 * (1 + dev[2])
  return _noisy_dom(n, ratio, dev[0]), dict(a2=a2, s2=0.5, a3=a3, s3=-1.0, b2=-(a2 + a3))


def turn_peak(ratio: float) -> float:
  """TURN: T of the general loss's peak, p(R) T_max."""
  return T_MAX * (0.45 + 0.6 * ratio)


def turn_params(n_params: float, ratio: float, dev=_ZERO) -> tuple[dict, dict]:
  """True Eq. 6 parameters (domain, general) of the TURN family (dev: relative deviations of
  a1, of the general amplitude A, and twice that of the peak T_p)."""
  s3, s2 = 1.0, 2.5
  amp = 0.2 * ratio * (n_params / 1e8) ** -0.1 * (1 + dev[1])
  tp = turn_peak(ratio) * (1 + 0.5 * dev[2])
  a3, a2 = amp * tp ** -s3 / s3, -amp * tp ** -s2 / s2
  t0 = T_MAX / 10
  b2 = 0.02 * ratio - (a2 * t0 ** s2 + a3 * t0 ** s3)
  return (_noisy_dom(n_params / 1e9, ratio, dev[0]),
          dict(a2=a2, s2=s2, a3=a3, s3=s3, b2=b2))


def mono_params(n_params: float, ratio: float, dev=_ZERO) -> tuple[dict, dict]:
  """True Eq. 6 parameters (domain, general) of the MONO family (one general term)."""
  c = 0.08 * (ratio - 0.85) * (1 + dev[1])
  level = 0.11 * ratio ** 1.3 * (n_params / 1e8) ** -0.1 - 0.005 + 0.05 * dev[2]
  a2 = c * T_MAX ** -0.5
  return (_noisy_dom(n_params / 1e9, ratio, dev[0]),
          dict(a2=a2, s2=0.5, a3=0.0, s3=0.5, b2=level - c))


FAMILIES = {'paper': params, 'noisy': noisy_params, 'turn': turn_params, 'mono': mono_params}


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


def eval_grid(n_points=100, t_max=T_MAX):
  """The T of a run's evals in `table` (before warmup drops any)."""
  return np.maximum(np.linspace(t_max / n_points, t_max, n_points), 1.0)


def curves(family, n_params, ratio, t, dev=_ZERO) -> tuple[np.ndarray, np.ndarray]:
  """Noise-free (dL_dom, dL_gen) of one run at T = t."""
  d, g = FAMILIES[family](n_params, ratio, dev)
  return _eq6(d, np.asarray(t, np.float64)), _eq6(g, np.asarray(t, np.float64))


def table(sizes=None, ratios=PAPER_RATIOS, n_points=100, t_max=T_MAX, sigma_gen=1e-5,
          sigma_dom=3e-4, seed=0, tokens_per_unit=0.2e9, base=(2.5, 2.2), family='paper',
          n_seeds=1, rho=0.0, seed_sd=0.0, warmup_evals=0, seeds='independent') -> dict:
  """Results-table columns: validation rows of CPT runs (step 0 = the base model).

  Evals at T = t_max / n_points ... t_max (at least 1), step = 100 x eval index; with
  warmup_evals = w, the first w evals fall inside an lr warmup (train rows every 10 steps carry
  the ramp), so the laws drop them.
  n_seeds > 1: run ids end in _s{seed} and rows carry cpt_seed.
  seeds: 'independent' (each run's seed deviation drawn on its own) or 'paired' (one per seed
  index, shared by every (size, R): one data order per seed index).
  """
  if seeds not in ('independent', 'paired'):
    raise ValueError(f'seeds must be "independent" or "paired", got {seeds!r}')
  sizes = dict(PAPER_SIZES if sizes is None else sizes)
  rng = np.random.default_rng(seed)
  shared_z = np.random.default_rng([seed, 1]).normal(size=(n_seeds, 3))
  cols = ('run_id', 'size_name', 'n_params', 'n_params_nonemb', 'ratio', 'step', 'tokens_seen',
          'split', 'general_loss', 'domain_loss', 'lr', 'wallclock', 'phase', 'domain',
          'cpt_seed')
  rows = {k: [] for k in cols}

  def add(**kw):
    for k in cols:
      rows[k].append(kw[k])

  t = eval_grid(n_points, t_max)
  for name, n in sizes.items():
    lg, ld = base[0] - 0.3 * np.log10(n / 1e8), base[1] - 0.3 * np.log10(n / 1e8)
    for r in ratios:
      for s in range(n_seeds):
        z = rng.normal(size=3)  # drawn in both modes: the eval noise streams stay the same.
        dev = seed_sd * (shared_z[s] if seeds == 'paired' else z)
        dom, gen = curves(family, n, r, t, dev)
        dom = dom + _ar1(rng, rho, sigma_dom, t.size)
        gen = gen + _ar1(rng, rho, sigma_gen, t.size)
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


def _family_arrays(family, n_params, ratios):
  fam = FAMILIES[family]
  gen = np.array([[fam(n_params, r)[1][k] for k in GEN_KEYS] for r in ratios])
  dom = np.array([[fam(n_params, r)[0][k] for k in DOM_KEYS] for r in ratios])
  return gen, dom


def _exponents(ratios, gen, dom, t_max):
  from mixlaw.laws import cmr as cmr_lib  # pylint: disable=g-import-not-at-top
  return [cmr_lib.fit_exponent(ratios, cmr_lib.eq6_at(k, p, t_max))
          for k, p in (('general', gen), ('domain', dom))]


def method_cmr(family, n_params, ratios, t_lo, t_max, lam, eps) -> tuple[float, int]:
  """(CMR, censor) of the CMR machinery on the noise-free curves of the trained ratios."""
  from mixlaw.laws import cmr as cmr_lib  # pylint: disable=g-import-not-at-top
  ratios = np.asarray(sorted(ratios), np.float64)
  gen, dom = _family_arrays(family, n_params, ratios)
  e = _exponents(ratios, gen, dom, t_max)
  out = cmr_lib.family_analysis(
      dict(ratios_K=ratios[None], gen_KxP=gen[None], dom_KxP=dom[None], e_gen=[e[0]],
           e_dom=[e[1]]), [lam], eps, t_lo, t_max, np.array([t_max]))
  return float(out['cmr_BxJ'][0, 0]), int(out['censor_BxJ'][0, 0])


def modelfree_cmr(family, n_params, ratios, t_N, lam, eps, smooth_k=5,
                  slope_window=0.25) -> dict:
  """The model-free CMRs (modelfree.cmrs) on noise-free evals at T = t_N (the fitted evals of
  one run): {'def2': (CMR, censor), 'condition_A': (CMR, censor)}. Their bias against
  method_cmr is that of the window: the mean of the last smooth_k evals, the slope over the
  trailing slope_window of T."""
  from mixlaw.laws import modelfree  # pylint: disable=g-import-not-at-top
  ratios = np.asarray(sorted(ratios), np.float64)
  t_N = np.asarray(t_N, np.float64)
  t_b = float(t_N[-1])
  gen, dom = _family_arrays(family, n_params, ratios)
  e = _exponents(ratios, gen, dom, t_b)[0]
  k = modelfree.window(t_N, t_b, slope_window)
  m, g = [], []
  for r in ratios:
    yd, yg = curves(family, n_params, r, t_N)
    m.append(yg[-smooth_k:].mean())
    g.append(np.polyfit(t_N[k], yd[k], 1)[0] + lam * np.polyfit(t_N[k], yg[k], 1)[0])
  a, d, _ = modelfree.cmrs(ratios, np.array(m), np.array(g), e, eps)
  return dict(condition_A=a, def2=d)


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
