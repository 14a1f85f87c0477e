"""The CPT learning-dynamics law: one fit per size over every run and step, LR-schedule aware.

Wang et al., "Learning Dynamics in Continual Pre-Training for Large Language Models" (ICML
2025, arXiv 2505.07796), Eq. 4 with the replay ratio of its Eq. 8, per loss (general: the
pretraining data's validation loss; domain: the CPT data's), each with its own parameters:

  L = L0 + A (S1pt + S1cpt)^-alpha - C1 S2pt - C2 exp(a1 r) S2cpt + B g(R) (1 - (1 + E S1cpt)^-beta)
      \\_____ hidden pretraining curve (Tissue et al. 2024), continued through CPT _____/
      \\___ distribution shift: a saturating power law in CPT's own forward area ___/

S1, S2: forward and annealing areas of the learning rates (schedules.py); R: the domain share
of CPT tokens; r = 1 - R (replay) for the general loss, R for the domain loss (Eq. 8);
g(R) = (1 - exp(-a2 R)) / (1 - exp(-a2)) for the general loss and (exp(a2 R) - 1) /
(exp(a2) - 1) for the domain loss: the paper's exponential forms, divided by their value at
R = 1 so that B is the shift of pure domain data (the paper's B is B / (1 - exp(-a2)), resp.
B / (exp(a2) - 1)). At R = 0 the shift vanishes: the replay-only control is the hidden curve,
so its drift and every other ratio's come from one fit, and dL_gen has two readings, against
the base model (the paper's) and against the R = 0 control at the same step.

The fit (per size, both losses in one vmapped call): the base run's evals after its warmup and
every CPT eval the Eq. 6 fits use; float64; bounded (BOUNDS, a sigmoid reparametrisation);
multi-start over the non-linear parameters with the linear ones (L0, A, C1, C2, B) solved by
least squares (variable projection); then the summed Huber loss with delta = huber_c x the
eval-noise sigma (second differences, noise.sigma_2nd) by L-BFGS in Gauss-Newton-whitened
coordinates (lbfgs.py), with lbfgs.py's stated convergence. Intervals: seed-level replicates
(bootstrap.seed_draws, 'wild_t': each run's deviation from its cell's mean at the same step,
scaled by a t-variate, seed labels drawn jointly when data orders are shared), each refitted
warm-started at the point fit. The base run is one run: not resampled.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from mixlaw.laws import bootstrap
from mixlaw.laws import fit as fit_lib
from mixlaw.laws import lbfgs
from mixlaw.laws import noise
from mixlaw.laws import schedules as sched
from mixlaw.laws.lbfgs import CONV_DECREASE, CONV_GRAD, LS_FAILED, RUNNING
from mixlaw.laws.options import FitError

WHICH = ('general', 'domain')
PARAMS = ('L0', 'A', 'alpha', 'C1', 'C2', 'a1', 'B', 'E', 'beta', 'a2')
LINEAR = (0, 1, 3, 4, 6)  # L0, A, C1, C2, B: solved by least squares in the start search.
NONLIN = (2, 5, 7, 8, 9)
# Boxes in natural units; E in log10 (10^-1 .. 10^6 per unit of S1, the paper's E run 3 ..
# 5662). L0's upper end is set per fit to twice the largest loss.
BOUNDS = dict(L0=(0.0, None), A=(0.0, 50.0), alpha=(0.02, 3.0), C1=(0.0, 20.0), C2=(0.0, 20.0),
              a1=(-5.0, 5.0), B=(-30.0, 30.0), E=(-1.0, 6.0), beta=(1e-3, 5.0),
              a2=(-10.0, 10.0))
EQUATION = ('L = L0 + A (S1pt + S1cpt)^-alpha - C1 S2pt - C2 exp(a1 r) S2cpt '
            '+ B g(R) (1 - (1 + E S1cpt)^-beta)')
N_STARTS = 8  # starts over the five non-linear parameters (R_k sequence)
POINT_ITER, BOOT_ITER = 1000, 200
AREA_KEYS = ('s1_pt', 's2_pt', 's1_cpt', 's2_cpt', 'r')
# Base evals fitted: after the base's warmup and from this fraction of its steps on (the first
# half of a short base run is fast early learning, outside the law's regime; docs/laws.md).
BASE_FROM = 0.5


@dataclasses.dataclass
class Problem:
  """One size's points: the base run's evals (run -1) and every CPT run's, in one array each."""
  size: str
  n: float
  x: dict  # AREA_KEYS -> N
  y: dict  # 'general' / 'domain' -> N (losses, not increments)
  run: np.ndarray  # N: index into run_ids, -1 for base evals.
  step: np.ndarray  # N: the eval's step (CPT step for CPT evals).
  ratio: np.ndarray  # N
  run_ids: list
  run_seed: list
  run_ratio: list
  schedule: sched.RunSchedule  # the size's (every CPT run's) schedule.
  base_loss: dict  # measured L(S) before CPT ('general', 'domain')
  tokens_per_unit: float

  @property
  def cpt(self):
    return self.run >= 0

  def t_max_step(self) -> int:
    return int(self.step[self.cpt].max())


def _run_points(run, rs, unit, ratio, cache):
  key = (rs.base, rs.cpt)
  steps = np.rint(run.t_N * unit / rs.tokens_per_step).astype(int)
  n = max(rs.cpt.steps, int(steps.max()))
  if key not in cache or cache[key]['s1_cpt'].size < n + 1:
    cache[key] = sched.areas(rs.base, rs.cpt.lrs(n))
  a = cache[key]
  x = dict(s1_pt=np.full(steps.size, a['s1_pt'][-1]), s2_pt=np.full(steps.size, a['s2_pt'][-1]),
           s1_cpt=a['s1_cpt'][steps], s2_cpt=a['s2_cpt'][steps], r=np.full(steps.size, ratio))
  return x, steps


def problem(size, schedules: dict, unit: float, base_from: float = BASE_FROM) -> Problem:
  """The Problem of one curves.Size, given {run id: RunSchedule} for its CPT runs; the base
  run's evals after its warmup and at step >= base_from x its steps are fitted too."""
  runs = [(c.ratio, r) for c in size.curves for r in c.runs]
  lacking = [r.run_id for _, r in runs if r.run_id not in schedules]
  if lacking:
    raise FitError(f'size {size.name}: no learning-rate schedule for run(s) {lacking[:3]}')
  rss = {schedules[r.run_id] for _, r in runs}
  if len({rs.base for rs in rss}) != 1 or len(rss) != 1:
    raise FitError(f'size {size.name}: its CPT runs have different schedules; the dynamics '
                   'law is fitted per size to runs of one schedule')
  rs = rss.pop()
  cache, parts = {}, []
  for k, (ratio, run) in enumerate(runs):
    x, steps = _run_points(run, rs, unit, ratio, cache)
    parts.append((x, size.base_gen + run.gen_N, size.base_dom + run.dom_N, k, steps, ratio))
  if size.base is not None:
    a = sched.areas(rs.base, np.zeros(0))
    st = np.asarray(size.base.steps, np.float64)
    keep = ((st > rs.base.warmup) & (st >= base_from * rs.base.steps) & (st <= rs.base.steps)
            & np.isfinite(size.base.gen) & np.isfinite(size.base.dom))
    st = st[keep].astype(int)
    z = np.zeros(st.size)
    x = dict(s1_pt=a['s1_pt'][st], s2_pt=a['s2_pt'][st], s1_cpt=z, s2_cpt=z, r=z)
    parts.append((x, size.base.gen[keep], size.base.dom[keep], -1, st, 0.0))
  cat = lambda f: np.concatenate([f(p) for p in parts])
  x = {k: cat(lambda p, k=k: p[0][k]) for k in AREA_KEYS}
  run_ix = cat(lambda p: np.full(p[4].size, p[3]))
  return Problem(size.name, float(size.n), x, dict(general=cat(lambda p: p[1]),
                                                    domain=cat(lambda p: p[2])),
                 run_ix, cat(lambda p: p[4]), cat(lambda p: np.full(p[4].size, p[5])),
                 [r.run_id for _, r in runs], [r.seed for _, r in runs], [q for q, _ in runs],
                 rs, dict(general=size.base_gen, domain=size.base_dom), unit)


# ----------------------------------------------------------------------------- the law
def law(v, x, dom):
  """The law at natural parameters v (PARAMS order, E as log10) on areas x; dom: 1.0 for the
  domain loss's ratio forms, 0.0 for the general loss's."""
  one, pw, s2p, s2c, sh = _cols(v, x, dom)
  return v[0] * one + v[1] * pw - v[3] * s2p - v[4] * s2c + v[6] * sh


def _cols(v, x, dom):
  """The columns multiplying L0, A, C1, C2, B (C1's and C2's with their signs dropped)."""
  al, a1, le, be, a2 = v[2], v[5], v[7], v[8], v[9]
  r = x['r']
  rr = jnp.where(dom > 0, r, 1.0 - r)
  d = -jnp.expm1(-be * jnp.log1p(10.0 ** le * x['s1_cpt']))
  s1 = x['s1_pt'] + x['s1_cpt']
  return (jnp.ones_like(r), s1 ** -al, x['s2_pt'], jnp.exp(a1 * rr) * x['s2_cpt'],
          ratio_factor(r, a2) * d)


def ratio_factor(r, a):
  """g(R; a) = (1 - exp(-a R)) / (1 - exp(-a)): concave for a > 0 (the paper's general-loss
  form), convex for a < 0 (its domain-loss form, (exp(|a| R) - 1) / (exp(|a|) - 1)), R at
  a = 0; 0 at R = 0 and 1 at R = 1."""
  small = jnp.abs(a) < 1e-6
  a_ = jnp.where(small, 1e-6, a)
  return jnp.where(small, r, jnp.expm1(-a_ * r) / jnp.expm1(-a_))


def _box(ymax):
  lo = np.array([BOUNDS[p][0] for p in PARAMS], np.float64)
  hi = np.array([2.0 * ymax if p == 'L0' else BOUNDS[p][1] for p in PARAMS], np.float64)
  return lo, hi


def _natural(z, lo, hi):
  return lo + (hi - lo) * jax.nn.sigmoid(z)


def _to_z(v, lo, hi):
  u = jnp.clip((v - lo) / (hi - lo), fit_lib.START_CLIP, 1 - fit_lib.START_CLIP)
  return jnp.log(u) - jnp.log1p(-u)


# ----------------------------------------------------------------------------- the fitter
def _curve_fit(q0_SxP, x, y, w, dom, delta, lo, hi, iters, search):
  """One loss of one size: (values, objective, status, iterations, delta, at_bound).

  search: phase 1 from every start (variable projection: the linear parameters solved by
  least squares, L-BFGS over the non-linear ones), the best by the Huber loss goes on; else
  the first start is a warm start (bootstrap refits). Phase 2: the Huber loss over every
  parameter in whitened coordinates, re-whitened every fit.POLISH_CHUNK iterations."""
  sw = jnp.sum(w)
  mean = jnp.sum(w * y) / sw
  scale = jnp.sqrt(jnp.sum(w * (y - mean) ** 2) / sw)
  scale = jnp.where(scale > 0, scale, 1.0)
  lin, nl = np.array(LINEAR), np.array(NONLIN)
  res = lambda q: jnp.where(w > 0, (law(_natural(q, lo, hi), x, dom) - y) / scale, 0.0)
  dn = delta / scale
  fun = lambda q: _finite(jnp.sum(w * fit_lib.huber(res(q), dn)))
  if search:
    q = _search(q0_SxP, x, y, w, dom, lo, hi, scale, fun)
  else:
    q = q0_SxP[0]
  rtol = lbfgs.RTOL / jnp.sqrt(jnp.maximum(sw - len(PARAMS), 1.0))

  def cond(c):
    return (((c[2] == RUNNING) | ((c[2] == LS_FAILED) & (c[4] < 2))) & (c[3] < iters))

  def body(c):
    q, _, _, n, fails = c
    fz, to_q = lbfgs.preconditioned(fun, res, q)
    z, f, st, m = lbfgs.minimize(fz, jnp.zeros_like(q), jnp.minimum(fit_lib.POLISH_CHUNK,
                                                                    iters - n), rtol=rtol)
    return to_q(z), f, st, n + m, jnp.where(st == LS_FAILED, fails + 1, 0)

  q, f, status, n_it, _ = jax.lax.while_loop(
      cond, body, (q, fun(q), jnp.int32(RUNNING), jnp.int32(0), jnp.int32(0)))
  u = jax.nn.sigmoid(q)
  at = (u <= fit_lib.AT_BOUND) | (u >= 1 - fit_lib.AT_BOUND)
  return _natural(q, lo, hi), f * scale ** 2, status, n_it, at


def _finite(v):
  return jnp.where(jnp.isfinite(v), v, jnp.inf)


def _search(q0_SxP, x, y, w, dom, lo, hi, scale, fun):
  """Phase 1: every start's non-linear parameters by L-BFGS on the projected least squares
  (the linear ones solved without their box, by normal equations), then the linear ones by
  least squares within their box (box_lsq); the best start by `fun`."""
  lin, nl = np.array(LINEAR), np.array(NONLIN)

  def normal(q):  # Gram matrix and right-hand side of the linear parameters (scaled columns).
    v = _natural(q, lo, hi)
    one, pw, s2p, s2c, sh = _cols(v, x, dom)
    m_NxL = jnp.stack([one, pw, -s2p, -s2c, sh], axis=1)
    m_L = jnp.max(jnp.where(w[:, None] > 0, jnp.abs(m_NxL), 0.0), axis=0)
    m_L = jnp.where(m_L > 0, m_L, 1.0)
    a_NxL = m_NxL / m_L
    return v, (a_NxL * w[:, None]).T @ a_NxL, (a_NxL * w[:, None]).T @ y, m_L

  def full(q_nl):
    return jnp.zeros(len(PARAMS), q_nl.dtype).at[nl].set(q_nl)

  def phi(q_nl):
    v, g, b, m = normal(full(q_nl))
    ridge = 1e-10 * jnp.trace(g) / g.shape[0] + 1e-300
    c = jnp.linalg.solve(g + ridge * jnp.eye(g.shape[0]), b) / m
    v = v.at[lin].set(jax.lax.stop_gradient(c))
    r = jnp.where(w > 0, (law(v, x, dom) - y) / scale, 0.0)
    return _finite(0.5 * jnp.sum(w * r * r))

  def start(q0):
    q_nl = lbfgs.minimize(phi, q0[nl], SEARCH_ITER, *fit_lib.SEARCH_TOL,
                          lbfgs.LS_STEPS[0])[0]
    v, g, b, m = normal(full(q_nl))
    return _to_z(v.at[lin].set(box_lsq(g, b, lo[lin] * m, hi[lin] * m) / m), lo, hi)

  q_SxP = jax.vmap(start)(q0_SxP)
  f_S = _finite(jax.vmap(fun)(q_SxP))
  best = q_SxP[jnp.argmin(f_S)]
  return jnp.where(jnp.isfinite(best), best, 0.0)


SEARCH_ITER = 60  # phase 1, per start (five non-linear parameters).
_PATTERNS = np.array(np.meshgrid(*[np.arange(3)] * len(LINEAR), indexing='ij')).reshape(
    len(LINEAR), -1).T  # every active set: 0 free, 1 at the lower bound, 2 at the upper.


def box_lsq(g_LxL, b_L, lo_L, hi_L):
  """argmin 0.5 c'Gc - b'c over lo <= c <= hi, exactly: the best feasible solution over every
  active set (3^L reduced solves; the optimum is the feasible one of lowest value)."""
  ridge = 1e-12 * jnp.trace(g_LxL) / g_LxL.shape[0] + 1e-300
  eye = jnp.eye(g_LxL.shape[0])

  def one(pat):
    free = (pat == 0).astype(g_LxL.dtype)
    fixed = jnp.where(pat == 1, lo_L, jnp.where(pat == 2, hi_L, 0.0))
    m = free[:, None] * free[None, :] * (g_LxL + ridge * eye) + jnp.diag(1.0 - free)
    z = jnp.linalg.solve(m, free * (b_L - g_LxL @ fixed))
    c = fixed + free * z
    tol = 1e-9 * (hi_L - lo_L)
    ok = jnp.all((c >= lo_L - tol) & (c <= hi_L + tol)) & jnp.all(jnp.isfinite(c))
    return jnp.clip(c, lo_L, hi_L), jnp.where(ok, 0.5 * c @ g_LxL @ c - b_L @ c, jnp.inf)

  c_KxL, f_K = jax.vmap(one)(jnp.asarray(_PATTERNS))
  return c_KxL[jnp.argmin(f_K)]


def _solver(search: bool):
  one = lambda q0, x, y, w, dom, delta, lo, hi, iters: _curve_fit(
      q0, x, y, w, dom, delta, lo, hi, iters, search)
  return jax.jit(jax.vmap(one, in_axes=(0, None, 0, 0, 0, 0, 0, 0, None)))


_SOLVERS = {}


def _solve(search, q0_KxSxP, x, y_KxN, w_KxN, dom_K, delta_K, lo_KxP, hi_KxP, iters):
  """K curves (losses, or replicates x losses) of one size in one jitted call, float64."""
  if search not in _SOLVERS:
    _SOLVERS[search] = _solver(search)
  with jax.enable_x64(True):
    arrs = [jnp.asarray(a, jnp.float64) for a in (q0_KxSxP, y_KxN, w_KxN, dom_K, delta_K,
                                                  lo_KxP, hi_KxP)]
    xs = {k: jnp.asarray(v, jnp.float64) for k, v in x.items()}
    out = _SOLVERS[search](arrs[0], xs, *arrs[1:], jnp.int32(iters))
    return [np.asarray(o) for o in out]


# ----------------------------------------------------------------------------- fits
@dataclasses.dataclass
class Fit:
  """Both losses' fits of one size (on the points with w > 0), and their replicates."""
  prob: Problem
  w: np.ndarray  # N: the points fitted (1) or left out (0).
  params: dict  # which -> P natural values (E as log10)
  objective: dict
  status: dict
  iters: dict
  at_bound: dict  # which -> P bools
  delta: dict
  r2: dict
  rmse: dict
  boot: dict | None = None  # which -> B x P (failed replicates: NaN rows)

  def converged(self, which) -> bool:
    return int(self.status[which]) in (CONV_GRAD, CONV_DECREASE)

  def flags(self, which) -> list:
    out = [] if self.converged(which) else [f'not converged (status {int(self.status[which])})']
    out += [f'at bound: {p}' for p, a in zip(PARAMS, self.at_bound[which]) if a]
    return out

  def named(self, which, v=None) -> dict:
    """PARAMS -> value, E in natural units."""
    v = self.params[which] if v is None else v
    return {p: float(10.0 ** x if p == 'E' else x) for p, x in zip(PARAMS, v)}


def _pad(n: int) -> int:
  return max(128, -(-n // 128) * 128)


def _arrays(prob: Problem, w_N):
  """Areas, targets and weights padded to a multiple of 128 points (one compilation serves
  every size and every cut); padding repeats point 0 with weight 0."""
  n, m = w_N.size, _pad(w_N.size)
  idx = np.concatenate([np.arange(n), np.zeros(m - n, int)])
  x = {k: v[idx] for k, v in prob.x.items()}
  y = np.stack([prob.y[k][idx] for k in WHICH])
  w = np.concatenate([w_N, np.zeros(m - n)])
  return x, y, w


def _boxes(y_KxN, w_N):
  los, his = zip(*[_box(float(np.max(np.abs(y[w_N > 0])))) for y in y_KxN])
  return np.stack(los), np.stack(his)


def fit(prob: Problem, w_N=None, huber_c: float = fit_lib.HUBER_C, n_starts: int = N_STARTS,
        iters: int = POINT_ITER) -> Fit:
  """Point fits of both losses to the points with w_N > 0 (default: all)."""
  w_N = np.ones(prob.run.size) if w_N is None else np.asarray(w_N, np.float64)
  x, y, w = _arrays(prob, w_N)
  lo, hi = _boxes(y, w)
  u = fit_lib._unit_grid(len(NONLIN), n_starts)
  q0 = np.zeros((u.shape[0], len(PARAMS)))
  q0[:, NONLIN] = np.log(u) - np.log1p(-u)
  delta = np.array([huber_c * sigma(prob, w_N, k) for k in WHICH])
  if not np.all(np.isfinite(delta) & (delta > 0)):
    raise FitError(f'size {prob.size}: no eval-noise estimate (too few CPT evals per run)')
  v, f, st, it, at = _solve(True, np.stack([q0, q0]), x, y, np.stack([w, w]), np.array([0., 1.]),
                            delta, lo, hi, iters)
  keep = w > 0
  pred = {k: np.asarray(losses({k: v[j]}, x, k)) for j, k in enumerate(WHICH)}
  r2, rmse = {}, {}
  for j, k in enumerate(WHICH):
    r = (pred[k] - y[j])[keep]
    rmse[k] = float(np.sqrt(np.mean(r * r)))
    r2[k] = float(1 - np.sum(r * r) / np.sum((y[j][keep] - y[j][keep].mean()) ** 2))
  d = lambda a: {k: a[j] for j, k in enumerate(WHICH)}
  return Fit(prob, w_N, d(v), d(f), d(st), d(it), d(at), d(delta), r2, rmse)


def sigma(prob: Problem, w_N, which: str) -> float:
  """Eval noise of loss `which` from the second differences of the fitted CPT evals."""
  keep = np.asarray(w_N) > 0
  return noise.sigma_2nd([prob.y[which][(prob.run == j) & keep]
                          for j in range(len(prob.run_ids))])


def losses(params: dict, x: dict, which: str):
  """The law of loss `which` at params (P, or B x P: then B x N) on areas x (arrays)."""
  with jax.enable_x64(True):
    v = jnp.asarray(params[which], jnp.float64)
    xs = {k: jnp.asarray(a, jnp.float64) for k, a in x.items()}
    dom = 1.0 if which == 'domain' else 0.0
    if v.ndim == 1:
      return np.asarray(law(v, xs, dom))
    return np.asarray(jax.vmap(lambda p: law(p, xs, dom))(v))


# ----------------------------------------------------------------------------- intervals
def replicate_targets(prob: Problem, n_boot: int, seed: int, shared: bool,
                      mode: str = 'wild_t'):
  """({which: B x N} targets, B x N weights): every CPT run is its cell's mean at the same
  step plus its deviation from it times the run's draw of bootstrap.seed_draws (cells: the
  ratios; seed labels drawn jointly across cells when `shared`). Base evals are kept."""
  cells = [np.flatnonzero(np.asarray(prob.run_ratio) == r) for r in sorted(set(prob.run_ratio))]
  draws = bootstrap.seed_draws([[prob.run_seed[k] for k in c] for c in cells], n_boot, seed,
                               shared, mode)
  y = {k: np.tile(prob.y[k], (n_boot, 1)) for k in WHICH}
  w = np.ones((n_boot, prob.run.size))
  for runs, (wt_Bxk, sc_Bxk) in zip(cells, draws):
    pts = np.isin(prob.run, runs)
    for k in WHICH:
      pooled = _cell_mean(prob.y[k], prob.step, pts)
      for j, rk in enumerate(runs):
        m = prob.run == rk
        y[k][:, m] = pooled[m] + sc_Bxk[:, j:j + 1] * (prob.y[k][m] - pooled[m])
    for j, rk in enumerate(runs):
      w[:, prob.run == rk] = wt_Bxk[:, j:j + 1]
  return y, w


def _cell_mean(y_N, step_N, pts_N):
  """Per point of the cell: the mean over the cell's runs of their evals at the same step."""
  out = np.array(y_N, np.float64)
  steps = step_N[pts_N]
  for s in np.unique(steps):
    m = pts_N & (step_N == s)
    out[m] = y_N[m].mean()
  return out


def fit_boot(f: Fit, n_boot: int, seed: int, shared: bool, mode: str = 'wild_t',
             iters: int = BOOT_ITER) -> Fit:
  """f with `boot` filled: n_boot refits to seed-level replicates, warm-started at f; rows of
  replicates that did not converge are NaN."""
  if n_boot <= 0:
    return dataclasses.replace(f, boot={k: np.zeros((0, len(PARAMS))) for k in WHICH})
  prob = f.prob
  yb, wb = replicate_targets(prob, n_boot, seed, shared, mode)
  x, y0, w0 = _arrays(prob, f.w)
  pad = lambda a: np.concatenate([a, np.repeat(a[..., :1], w0.size - a.shape[-1], -1)], -1)
  y = np.concatenate([pad(yb[k]) for k in WHICH])
  w = np.concatenate([pad(wb) * w0] * 2)
  lo, hi = _boxes(y0, w0)
  with jax.enable_x64(True):
    z = np.stack([np.asarray(_to_z(jnp.asarray(f.params[k]), lo[j], hi[j]))
                  for j, k in enumerate(WHICH)])
  rep = lambda a: np.repeat(a, n_boot, axis=0)
  v, _, st, _, _ = _solve(False, rep(z)[:, None], x, y, w, rep(np.array([0., 1.])),
                          rep(np.array([f.delta[k] for k in WHICH])), rep(lo), rep(hi), iters)
  ok = np.isin(st, (CONV_GRAD, CONV_DECREASE))
  v = np.where(ok[:, None], v, np.nan)
  return dataclasses.replace(f, boot={k: v[j * n_boot:(j + 1) * n_boot]
                                      for j, k in enumerate(WHICH)})


# ----------------------------------------------------------------------------- readings
def grid_x(rs: sched.RunSchedule, steps, ratios) -> dict:
  """Areas at every (CPT step, ratio) pair (steps-major, flattened) under schedule rs."""
  steps = np.asarray(steps, int)
  a = sched.areas(rs.base, rs.cpt.lrs(max(rs.cpt.steps, int(steps.max()))))
  s, r = np.meshgrid(steps, np.asarray(ratios, np.float64), indexing='ij')
  s, r = s.ravel(), r.ravel()
  return dict(s1_pt=np.full(s.size, a['s1_pt'][-1]), s2_pt=np.full(s.size, a['s2_pt'][-1]),
              s1_cpt=a['s1_cpt'][s], s2_cpt=a['s2_cpt'][s], r=r)


def increments(params: dict, base_loss: dict, rs: sched.RunSchedule, steps, ratios) -> dict:
  """{which: [B x] steps x ratios} base-referenced increments L - L(S) (base_loss: the
  measured L(S), Problem.base_loss)."""
  x = grid_x(rs, steps, ratios)
  shape = (len(steps), len(ratios))
  return {k: losses(params, x, k).reshape(np.shape(params[k])[:-1] + shape)
          - base_loss[k] for k in WHICH}


def readings(params: dict, base_loss: dict, rs: sched.RunSchedule, step: int, eps: float,
             lam: float, r_lo: float, r_hi: float, n_grid: int = 1001) -> dict:
  """Definition 2 and condition-A CMRs at CPT step `step` under schedule rs, in both
  references of dL_gen: 'base' (L(R, t) - L(S), the paper's) and 'control' (L(R, t) - L(0, t):
  what the domain share costs beyond replay alone; condition B then uses the slope of that
  difference). Condition B: the one-step slopes at `step`, dL_dom + lam dL_gen <= 0. Each
  value: [B] arrays; censored below = -inf, above = r_hi (with a flag)."""
  ratios = np.concatenate([np.linspace(r_lo, r_hi, n_grid), [0.0]])
  inc = increments(params, base_loss, rs, [step - 1, step], ratios)
  g, d = inc['general'], inc['domain']
  sg, sd = g[..., 1, :] - g[..., 0, :], d[..., 1, :] - d[..., 0, :]
  out = {}
  for ref, dg, slope in (('base', g[..., 1, :-1], sg[..., :-1]),
                         ('control', g[..., 1, :-1] - g[..., 1, -1:],
                          sg[..., :-1] - sg[..., -1:])):
    ok_a = dg <= eps
    ok_b = sd[..., :-1] + lam * slope <= 0
    out[ref] = dict(cmr=_largest(ok_a & ok_b, ratios[:-1]),
                    cmr_condition_A=_largest(ok_a, ratios[:-1]),
                    above=(ok_a & ok_b)[..., -1], above_A=ok_a[..., -1],
                    dL_general_max_ratio=dg[..., -1])
  return out


def _largest(ok, ratios):
  idx = ok.shape[-1] - 1 - np.argmax(ok[..., ::-1], axis=-1)
  return np.where(ok.any(axis=-1), ratios[idx], -np.inf)


# ----------------------------------------------------------------------------- checks
def measured(size, t_b: float, k: int, rho: float) -> dict:
  """{which: [(mean, se)] per ratio}: the smoothed measured dL at T_b (mean of each run's last
  k evals with T <= T_b, over runs; noise.smoothed), as the Eq. 6 leave-future-out uses."""
  out = {}
  for which, attr in (('general', 'gen_N'), ('domain', 'dom_N')):
    out[which] = [noise.smoothed([r.t_N for r in c.runs], [getattr(r, attr) for r in c.runs],
                                 t_b, k, rho)[:2] for c in size.curves]
  return out


def cut_weights(prob: Problem, frac: float) -> np.ndarray:
  """1 for the base evals and the CPT evals at step <= frac x the last CPT step, else 0."""
  return np.where(prob.cpt & (prob.step > frac * prob.t_max_step() + 1e-9), 0.0, 1.0)


def predicted_final(f: Fit, step: int | None = None) -> dict:
  """{which: dL per trained ratio} at CPT step `step` (default: the last) from fit f."""
  prob = f.prob
  step = prob.t_max_step() if step is None else step
  ratios = sorted(set(prob.run_ratio))
  inc = increments(f.params, prob.base_loss, prob.schedule, [step], ratios)
  return {k: inc[k][0] for k in WHICH}


def leave_one_ratio_out(prob: Problem, **kw) -> list:
  """Per trained ratio: the fit without its runs, and its predicted dL at the last step."""
  out = []
  for r in sorted(set(prob.run_ratio)):
    w = np.where(prob.cpt & (prob.ratio == r), 0.0, 1.0)
    f = fit(prob, w, **kw)
    inc = increments(f.params, prob.base_loss, prob.schedule, [prob.t_max_step()], [r])
    out.append(dict(ratio=r, fit=f, predicted={k: float(inc[k][0, 0]) for k in WHICH}))
  return out
