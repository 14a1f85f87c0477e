"""Model-free CMRs of each data order, and of their mean with paired intervals (paired.py).

At a budget T_b (a fraction f of each size's T_max), per run: level = the mean of its last
smooth_k evals of dL_gen with T <= T_b; g = slope_dom + lam slope_gen, least-squares slopes over
the trailing window (modelfree.run_slopes). Two references:
  base     dL against the base model (the paper's);
  control  dL against the R = 0 run of the same data order at the same step (level_R - level_0,
           g_R - g_0): what continued pretraining on general data alone does is taken out, and
           with it the seed offset (paired.py), which every cell shares.
Per data order: the condition-A CMR and the Definition-2 bracket (bracket.py; B's standard
error is the pooled residual sd of one run's g). Seed means: the same, with Monte-Carlo
intervals from paired.cell_draws: `lo`/`hi` absolute (base: with the offset's t_{n-1}
uncertainty), `within_lo`/`within_hi` with the offset held (what a within-seed contrast sees).
Contrasts between sizes are computed on the same draws (offset held: it cancels).
Needs shared data orders: every cell has the same >= 2 seed labels.
"""

import dataclasses

import numpy as np

from mixlaw.laws import bracket
from mixlaw.laws import modelfree
from mixlaw.laws import noise
from mixlaw.laws import paired

N_DRAWS = 4000
REFERENCES = ('base', 'control')


@dataclasses.dataclass
class Cells:
  """Per-run values at a budget: S seeds x C cells (size, R), cells ordered by size then R."""
  fraction: float
  sizes: list  # size names
  t_b: np.ndarray  # per size
  seeds: list
  size_C: np.ndarray
  ratio_C: np.ndarray
  level_SxC: np.ndarray
  g_SxC: np.ndarray

  def of_size(self, i):
    return np.flatnonzero(self.size_C == i)


def cells(sweep, fraction: float, opts):
  """Cells at T_b = fraction x each size's T_max; None unless every cell has the same >= 2
  seeds (shared data orders)."""
  labels = {tuple(sorted(r.seed for r in c.runs)) for s in sweep.sizes for c in s.curves}
  if len(labels) != 1 or len(next(iter(labels))) < 2:
    return None
  seeds = list(next(iter(labels)))
  lam, size_c, ratio_c, level, g, t_b = float(opts.lam), [], [], [], [], []
  for i, s in enumerate(sweep.sizes):
    tb = fraction * s.t_max
    t_b.append(tb)
    for c in s.curves:
      runs = sorted(c.runs, key=lambda r: r.seed)
      ts = [r.t_N for r in runs]
      lev = [float(y.mean()) for y in noise.last_evals(ts, [r.gen_N for r in runs], tb,
                                                         opts.smooth_k)]
      sg = modelfree.run_slopes(ts, [r.gen_N for r in runs], tb, opts.slope_window, 0.0)[0]
      sd = modelfree.run_slopes(ts, [r.dom_N for r in runs], tb, opts.slope_window, 0.0)[0]
      if len(lev) != len(seeds) or len(sg) != len(seeds) or len(sd) != len(seeds):
        return None
      size_c.append(i)
      ratio_c.append(c.ratio)
      level.append(lev)
      g.append([d + lam * gg for d, gg in zip(sd, sg)])
  return Cells(fraction, [s.name for s in sweep.sizes], np.array(t_b), seeds,
               np.array(size_c), np.array(ratio_c, np.float64), np.array(level).T,
               np.array(g).T)


def control(cl: Cells):
  """The same cells against the R = 0 run of the same size and seed; None without R = 0."""
  level, g = cl.level_SxC.copy(), cl.g_SxC.copy()
  for i in range(len(cl.sizes)):
    idx = cl.of_size(i)
    zero = idx[cl.ratio_C[idx] == 0.0]
    if not zero.size:
      return None
    level[:, idx] -= cl.level_SxC[:, zero[:1]]
    g[:, idx] -= cl.g_SxC[:, zero[:1]]
  return dataclasses.replace(cl, level_SxC=level, g_SxC=g)


@dataclasses.dataclass
class Analysis:
  """One reference at one budget: the blocks, per-size rows and the draws behind them."""
  reference: str
  cells: Cells
  level: paired.Blocks
  g: paired.Blocks
  rows: list  # per size (see analyse)
  draws: dict  # kind ('condition_A', 'def2') -> {'within', 'absolute'} -> S x D CMRs (bounded)


def _blocks(cl, reference):
  """Blocks of levels and g over the cells that carry information (control: R > 0)."""
  use = cl.ratio_C > 0 if reference == 'control' else np.ones(cl.ratio_C.size, bool)
  bl = {k: paired.blocks(getattr(cl, k + '_SxC')[:, use], cl.ratio_C[use])
        for k in ('level', 'g')}
  return use, bl


def _draw(cl, use, bl, rng, n_draws, absolute):
  """D x C draws of the cell means of level and g (cells outside `use` stay at 0)."""
  out = {}
  for k in ('level', 'g'):
    d = np.zeros((n_draws, cl.ratio_C.size))
    d[:, use] = paired.cell_draws(bl[k], rng, n_draws, absolute)
    out[k] = d
  return out


def analyse(cl: Cells, e_I, opts, rng, reference: str = 'base', n_draws: int = N_DRAWS):
  """Per size: per-seed CMRs and brackets, the seed mean's CMRs with intervals (module
  docstring). e_I: the interpolation exponent of each size (cmr.interp_exponent)."""
  use, bl = _blocks(cl, reference)
  eps, z, level = float(opts.eps), float(opts.decision_z), float(opts.ci_level)
  mean = {k: getattr(cl, k + '_SxC').mean(axis=0) for k in ('level', 'g')}
  within = _draw(cl, use, bl, rng, n_draws, absolute=False)
  absolute = (_draw(cl, use, bl, rng, n_draws, absolute=True) if reference == 'base'
              else within)
  n = len(cl.seeds)
  se_run = np.where(use, bl['g'].sigma, 0.0)
  off = bl['g'].offset_sd ** 2 / n if reference == 'base' else 0.0
  se_mean = np.where(use, np.sqrt(bl['g'].sigma ** 2 / n + off), 0.0)
  rows, draws = [], {'condition_A': {}, 'def2': {}}
  for i, name in enumerate(cl.sizes):
    idx = cl.of_size(i)
    r, e = cl.ratio_C[idx], float(e_I[i])
    per = bracket.cmrs(r, cl.level_SxC[:, idx], cl.g_SxC[:, idx], e, eps,
                       np.broadcast_to(se_run[idx], (n, idx.size)), z)
    pt = bracket.cmrs(r, mean['level'][idx], mean['g'][idx], e, eps, se_mean[idx], z)
    row = dict(size=name, T=float(cl.t_b[i]), ratios=r.tolist(), seeds=list(cl.seeds),
               level=mean['level'][idx].tolist(), g=mean['g'][idx].tolist(),
               g_se=se_mean[idx].tolist(),
               condition_B=bracket.status(mean['g'][idx], se_mean[idx], z),
               per_seed=[dict(seed=s, level=cl.level_SxC[j, idx].tolist(),
                              g=cl.g_SxC[j, idx].tolist(),
                              condition_B=bracket.status(cl.g_SxC[j, idx], se_run[idx], z),
                              **{k: _pair(per[k], j) for k in per})
                         for j, s in enumerate(cl.seeds)],
               **{k: _pair(pt[k], 0) for k in pt})
    for kind in ('condition_A', 'def2'):
      for tag, d in (('within', within), ('absolute', absolute)):
        c = bracket.cmrs(r, d['level'][:, idx], d['g'][:, idx], e, eps)[kind]
        draws[kind].setdefault(tag, []).append(_bounded(c, r))
      lo, hi = _percentiles(draws[kind]['absolute'][-1], level)
      wlo, whi = _percentiles(draws[kind]['within'][-1], level)
      row[kind].update(lo=lo, hi=hi, within_lo=wlo, within_hi=whi)
    rows.append(row)
  draws = {k: {t: np.array(v) for t, v in d.items()} for k, d in draws.items()}
  return Analysis(reference, cl, bl['level'], bl['g'], rows, draws)


def _pair(p, j):
  cmr, censor = p
  return dict(cmr=None if censor[j] == 2 else float(cmr[j]), censor=int(censor[j]))


def _bounded(p, ratios):
  """A CMR censored below counts as the smallest trained ratio, above as the largest."""
  cmr, censor = p
  return np.where(censor == 2, ratios[0], np.where(censor == 1, ratios[-1], cmr))


def _percentiles(x_D, level):
  q = 100 * (1 - level) / 2
  lo, hi = np.percentile(x_D, [q, 100 - q])
  return float(lo), float(hi)


def contrast(x_D, y_D, est: float, level: float) -> dict:
  """y - x from paired draws: the estimate, its central interval at `level`."""
  d = np.asarray(y_D) - np.asarray(x_D)
  lo, hi = _percentiles(d, level)
  return dict(diff=float(est), lo=min(lo, est), hi=max(hi, est))


def size_contrasts(a: Analysis, kind: str, level: float) -> list:
  """Each size minus the next smaller, and largest minus smallest (offset held)."""
  rows, n = [], len(a.rows)
  pairs = [(i, i + 1) for i in range(n - 1)] + ([(0, n - 1)] if n > 2 else [])
  for i, j in pairs:
    pi, pj = a.rows[i][kind], a.rows[j][kind]
    ri, rj = a.rows[i]['ratios'], a.rows[j]['ratios']
    est = _bound1(pj, rj) - _bound1(pi, ri)
    rows.append(dict(smaller=a.rows[i]['size'], larger=a.rows[j]['size'],
                     **contrast(a.draws[kind]['within'][i], a.draws[kind]['within'][j], est,
                                level)))
  return rows


def _bound1(p, ratios):
  return ratios[0] if p['censor'] == 2 else (ratios[-1] if p['censor'] == 1 else p['cmr'])
