"""One budget's CMRs in both references, with paired intervals, the seed offset, the
Definition-2 bracket and the R = 0 control's drift (numbers: references.py, paired.py,
bracket.py, seedwise.py).

Per size at the budget's T_b (its sweep's T_max):
  reps      references.analysis of the bootstrap replicates: for 'base' and 'control', the
            Definition-2 and condition-A CMRs; 'base' within seed (the shared offset held, as
            every replicate is drawn) and absolute ('base_abs': plus the mean offset of a fresh
            set of data orders, paired.offset_shifts). Without shared orders (or without
            replicates) the absolute replicates are the within ones.
  g_se      per reference and trained ratio: the within-seed standard error of g = dF/dT
            (references.spread over the replicates).
  brackets  the Definition-2 bracket of each reference (references.brackets with g_se).
  drift     the R = 0 control's dL_gen at T_b: fitted (absolute interval) and measured (the
            mean of its runs' last smooth_k evals, with the paired standard error).
  seedwise  each data order's model-free CMRs and brackets, and their mean with paired
            intervals (seedwise.analyse), per reference; None without shared orders.
"""

import dataclasses
import math

import numpy as np

from mixlaw.laws import paired
from mixlaw.laws import references
from mixlaw.laws import seedwise

N_DRAWS_CUT = 1000  # Monte-Carlo draws of the model-free intervals at earlier budgets.


@dataclasses.dataclass
class SizeRefs:
  size: object  # curves.Size
  t_b: float
  reps: dict
  bad_B: np.ndarray
  g_se: dict
  brackets: dict
  drift: dict | None
  seedwise: dict  # reference -> seedwise row (None: no shared orders)


@dataclasses.dataclass
class Paired:
  """What seeds as blocks say at one budget (shared data orders only)."""
  series: paired.Series  # the replicate runs' block model
  level: dict  # reference -> seedwise.Analysis (model-free, at T_b)
  seed_offset: dict  # paired.seed_offset of the smoothed general levels (base reference)


def blockable(sweep, shared: bool) -> bool:
  """Seeds can be blocks: the data orders are shared and every curve has the same >= 2."""
  labels = {tuple(sorted(lab)) for lab in sweep.seed_labels()}
  return bool(shared and len(labels) == 1 and len(next(iter(labels))) >= 2)


def series(data, eq6) -> paired.Series:
  """The block model of the runs about their pooled Eq. 6 fits (paired.estimate)."""
  return paired.estimate(data.t_CxN, data.w_CxN, data.run_CxN, data.sweep.seed_labels(),
                         data.size_of, [c.ratio for c in data.curves], data.y, eq6.fitted)


def model_free(sweep, e_general, opts, n_draws: int, seed: int):
  """seedwise.analyse in both references at the sweep's own T_max (None: not blockable)."""
  cl = seedwise.cells(sweep, 1.0, opts)
  if cl is None:
    return None
  out = {}
  for ref, c in (('base', cl), ('control', seedwise.control(cl))):
    if c is not None:
      out[ref] = seedwise.analyse(c, e_general, opts, np.random.default_rng([seed, 43]), ref,
                                  n_draws)
  return out


def at_budget(sweep, data, boot, e, opts, ser, level) -> list:
  """SizeRefs per size of one budget's fits (module docstring). ser: paired.Series or None;
  level: model_free(...) or None."""
  out = []
  for i, s in enumerate(sweep.sizes):
    idx = data.of_size(i)
    fam = dict(ratios_K=np.broadcast_to(s.ratios, (1 + boot.n_boot, s.ratios.size)),
               gen_KxP=boot.params['general'][:, idx], dom_KxP=boot.params['domain'][:, idx],
               e_gen=e['general'][:, i], e_dom=e['domain'][:, i])
    bad = ~boot.ok_BxC[:, idx].all(axis=1)
    fam = {k: np.where(bad.reshape((-1,) + (1,) * (np.ndim(v) - 1)), np.asarray(v)[:1], v)
           for k, v in fam.items()}
    sh = (paired.offset_shifts(ser, s.t_max, opts.smooth_k, opts.slope_window, opts.lam,
                               boot.n_boot, opts.seed) if ser is not None and boot.n_boot
          else {})
    reps = references.analysis(fam, opts.lam, opts.eps, s.t_max, sh.get('level_B'),
                               sh.get('g_B'))
    if ser is None:  # no offset to add: the replicates already vary the seeds.
      for k in [k for k in reps if k.startswith('base_') and not k.startswith('base_abs')]:
        reps['base_abs' + k[4:]] = reps[k]
    for k, v in reps.items():
      if isinstance(v, tuple):
        reps[k] = (np.where(bad, np.nan, v[0]), np.where(bad, -1, v[1]))
    refs = [r for r in references.REFS if f'{r}_def2' in reps]
    g_se = {r: np.array([references.spread(reps[f'{r}_def2_g_K'][1:, k][~bad[1:]],
                                           opts.decision_z) for k in range(s.ratios.size)])
            for r in refs}
    br = references.brackets({k: np.asarray(v)[0] for k, v in fam.items()}, opts.lam, opts.eps,
                             s.t_max, g_se, opts.decision_z)
    rows = {r: (level[r].rows[i] if level and r in level else None) for r in refs}
    out.append(SizeRefs(s, s.t_max, reps, bad, g_se, br, _drift(s, reps, rows, level, opts),
                        rows))
  return out


def _drift(s, reps, rows, level, opts):
  """The R = 0 control's dL_gen at T_b: fitted, with the absolute replicates' interval, and
  measured (mean over its runs), with the paired standard error (residual and offset)."""
  if s.ratios[0] != 0.0:
    return None
  fit = reps['base_abs_def2_dgen_K'][:, 0]
  q = 100 * (1 - opts.ci_level) / 2
  ok = np.isfinite(fit[1:])
  lo, hi = np.percentile(fit[1:][ok], [q, 100 - q]) if ok.sum() >= 3 else (np.nan, np.nan)
  out = dict(dL_general_fit=float(fit[0]), lo=float(lo), hi=float(hi), eps=float(opts.eps),
             dL_general_measured=None, measured_se=None, measured_df=None)
  if rows.get('base') is not None:
    bl = level['base'].level
    out.update(dL_general_measured=float(rows['base']['level'][0]),
               measured_se=math.sqrt((bl.sigma ** 2 + bl.offset_sd ** 2) / bl.n),
               measured_df=int(bl.offset_df))
  return out
