"""Stage `summary`: the full fit read out at T_max: per size its noise and design, per curve its
Eq. 6 fits with intervals and bands, the final losses (measured, fitted, smoothed), the
trained ratios' feasibility, and the CMR with its intervals, its model-free checks and which
condition decides it.
"""

import dataclasses

import numpy as np

from mixlaw.laws import bootstrap
from mixlaw.laws import cmr as cmr_lib
from mixlaw.laws import curves as curves_lib
from mixlaw.laws import fit as fit_lib
from mixlaw.laws import forms as forms_lib
from mixlaw.laws import intervals
from mixlaw.laws import modelfree
from mixlaw.laws import noise
from mixlaw.laws.budgetfits import BudgetFit
from mixlaw.laws.eq6 import N_GRID, WHICH, one_term_as_eq6
from mixlaw.laws.options import FitOptions


@dataclasses.dataclass
class SizeInfo:
  size: curves_lib.Size
  seeds_per_ratio: list
  evals_per_run: int
  warmup_step: int
  warmup_evals_dropped: int
  sigma_general: float  # median over the size's curves.
  sigma_domain: float
  rho: float  # lag-1 correlation of the eval noise.
  block_length: int


@dataclasses.dataclass
class CurveFit:
  """One Eq. 6 fit (general or domain) of a curve, with its bootstrap interval and band."""
  curve: curves_lib.Curve
  which: str
  form: forms_lib.Form
  terms: int
  evals_turn: bool | None  # general only.
  late_slope_rejects_one_term: bool | None  # general only.
  params_P: np.ndarray
  result: fit_lib.FitResult
  index: int  # the curve's row in `result`.
  sigma: float
  huber_delta: float
  flags: list
  bounds_lo_P: np.ndarray
  bounds_hi_P: np.ndarray
  params_lo_P: np.ndarray | None  # None without bootstrap.
  params_hi_P: np.ndarray | None
  n_ok: int
  band_lo_G: np.ndarray | None
  band_hi_G: np.ndarray | None
  dL_N: np.ndarray
  t_grid_G: np.ndarray
  dL_fit_G: np.ndarray


@dataclasses.dataclass
class Final:
  """A curve's last losses: measured, fitted at T_max, smoothed at T_max and T_max / 2."""
  curve: curves_lib.Curve
  size: curves_lib.Size
  dL_general_fit: float
  dL_domain_fit: float
  smooth: dict  # (which, tag '' | '_half') -> (mean, se).


@dataclasses.dataclass
class Feasibility:
  size: str
  ratio: float
  t0: float
  kind: int  # cmr.KIND
  g_t_max: float
  dL_general_t_max: float
  has_critical_point: bool
  condition_a: bool
  feasible: bool


@dataclasses.dataclass
class SizeCMRResult:
  """A size's Definition-2 CMR at T_max with its interval, and what decides it."""
  size: curves_lib.Size
  cmr: float
  censor: int
  n_boot: int
  lo: float | None
  hi: float | None
  n_ok: int
  n_censored_above: int
  n_censored_below: int
  ci_widened: bool
  cmr_a: float
  lo_a: float
  hi_a: float
  censor_a: int
  condition_a_decides: bool
  decides: str  # 'A' | 'B' | 'none (every trained ratio feasible)'
  lam_sensitivity: list  # [(lam, cmr, censor)] by lam.
  lam_decides: bool  # the CMR differs across the paper's lambdas.
  free: dict  # modelfree.at_budget
  model_free_disagrees: bool | None  # condition A, fitted against smoothed (None: no boot).
  def2_disagrees: bool
  def2_model_free_cmr: float
  def2_why: list
  e_general: float
  e_domain: float
  flags: list


@dataclasses.dataclass
class Summary:
  sizes: list  # SizeInfo
  curves: list  # CurveFit, general then domain
  finals: list  # Final
  feasibility: list  # Feasibility
  cmr: list  # SizeCMRResult


def summarise(full: BudgetFit, opts: FitOptions) -> Summary:
  """The full fit's read-out (module doc)."""
  data = full.data
  return Summary([_size_info(full, i) for i in range(len(data.sweep.sizes))],
                 _curve_fits(full, opts), _finals(full, opts), _feasibility(full, opts),
                 [_cmr(full, i, opts) for i in range(len(data.sweep.sizes))])


def _size_info(full, i):
  data, eq6, s = full.data, full.eq6, full.sweep.sizes[i]
  idx = data.of_size(i)
  runs = [r for c in s.curves for r in c.runs]
  return SizeInfo(s, [len(c.runs) for c in s.curves], int(min(r.t_N.size for r in runs)),
                  int(max(r.warmup_step for r in runs)), int(sum(r.n_warmup for r in runs)),
                  np.nanmedian(eq6.sigma['general'][idx]),
                  np.nanmedian(eq6.sigma['domain'][idx]), float(eq6.rho_S[i]),
                  int(eq6.block_C[idx].max()))


def _curve_fits(full, opts):
  data, eq6, boot = full.data, full.eq6, full.boot
  rows = []
  for k in WHICH:
    form = forms_lib.get_form(cmr_lib.EQ6[k])
    p = boot.params[k]
    for j, c in enumerate(data.curves):
      s = data.sweep.sizes[data.size_of[j]]
      grid = np.geomspace(c.t_N.min(), s.t_max, N_GRID)
      fit = cmr_lib.eq6_at(k, p[0, j], grid)
      key = k if k == 'domain' else ('general2' if eq6.two_term_C[j] else 'general1')
      res = eq6.results[key]
      lo, hi = res.lo_CxP[j], res.hi_CxP[j]
      if key == 'general1':  # a one-term fit's a, s, b are a2, s2 (= s3), b2; its a3 is 0.
        lo, hi = one_term_as_eq6(lo), one_term_as_eq6(hi)
      plo = phi = blo = bhi = None
      n_ok = 0
      if boot.n_boot:
        ok = boot.ok_BxC[1:, j]
        plo, phi = bootstrap.interval_axis(p[1:, j][ok], p[0, j], opts.ci_level)
        band = cmr_lib.eq6_at(k, p[1:, j][ok][:, None], grid)
        blo, bhi = bootstrap.interval_axis(band, fit, opts.ci_level)
        n_ok = int(ok.sum())
      general = k == 'general'
      rows.append(CurveFit(
          c, k, form, (2 if eq6.two_term_C[j] else 1) if general else 1,
          bool(eq6.turn_C[j]) if general else None, bool(eq6.late_C[j]) if general else None,
          p[0, j], res, j, eq6.sigma[k][j], eq6.delta[k][j], eq6.flags[k][j], lo, hi, plo,
          phi, n_ok, blo, bhi, getattr(c, 'gen_N' if general else 'dom_N'), grid, fit))
  return rows


def _finals(full, opts):
  data, eq6 = full.data, full.eq6
  rows = []
  for j, c in enumerate(data.curves):
    i = data.size_of[j]
    s = data.sweep.sizes[i]
    smooth = {}
    for k, attr in (('general', 'gen_N'), ('domain', 'dom_N')):
      for tag, tb in (('', s.t_max), ('_half', s.t_max / 2)):
        m, se, _ = noise.smoothed([r.t_N for r in c.runs], [getattr(r, attr) for r in c.runs],
                                  tb, opts.smooth_k, eq6.rho_S[i])
        smooth[(k, tag)] = (m, se)
    rows.append(Final(c, s, cmr_lib.eq6_at('general', eq6.params['general'][j], s.t_max),
                      cmr_lib.eq6_at('domain', eq6.params['domain'][j], s.t_max), smooth))
  return rows


def _feasibility(full, opts):
  rows = []
  for i, s in enumerate(full.sweep.sizes):
    o = full.per_size[i].out
    for j, r in enumerate(s.ratios):
      dg = float(o['dgen_K'][j])
      kind = int(o['kind_K'][j])
      rows.append(Feasibility(s.name, float(r), float(o['t0_K'][j]), kind, o['g_K'][j], dg,
                              bool(kind != 2), bool(dg <= opts.eps),
                              bool(kind != 2 and dg <= opts.eps)))
  return rows


def _cmr(full, i, opts) -> SizeCMRResult:
  data, eq6, boot, sc, free = full.data, full.eq6, full.boot, full.per_size[i], full.free[i]
  s, o, level = data.sweep.sizes[i], sc.out, opts.ci_level
  est, censor = float(o['cmr_BxJ'][0, -1]), int(o['censor_BxJ'][0, -1])
  est_a, censor_a = float(o['cmr_a_B'][0]), int(o['censor_a_B'][0])
  lo = hi = None
  n_ok = n_above = n_below = 0
  widened = False
  lo_a = hi_a = float('nan')
  if boot.n_boot:
    lo, hi, n_ok, widened = intervals.censored_interval(
        o['cmr_BxJ'][1:, -1], o['censor_BxJ'][1:, -1], est, censor, level)
    z = o['censor_BxJ'][1:, -1][~sc.bad_B[1:]]
    n_above, n_below = int(np.sum(z == 1)), int(np.sum(z == 2))
    lo_a, hi_a, _, _ = bootstrap.interval(intervals.ranked(o['cmr_a_B'][1:], o['censor_a_B'][1:]),
                                          bootstrap.BELOW if censor_a == 2 else est_a, level)
  flagged = [f'R={c.ratio:g} {k}: ' + '; '.join(eq6.flags[k][j])
             for j, c in zip(data.of_size(i), s.curves) for k in WHICH if eq6.flags[k][j]]
  sens = sorted(zip(o['lams'], o['sens_cmr_L'], o['sens_censor_L']), key=lambda t: t[0])
  a_decides = bool(np.isfinite(est) and np.isfinite(est_a) and abs(est - est_a) < 1e-6
                   or censor == censor_a == 2)
  decides = 'A' if a_decides else ('none (every trained ratio feasible)' if censor == 1 else 'B')
  fa = free['condition_A']
  mf_lo = fa['lo'] if np.isfinite(fa['lo']) else -np.inf
  mf_disagrees = (modelfree.disagree(est_a, lo_a if np.isfinite(lo_a) else -np.inf, hi_a,
                                     fa['cmr'], mf_lo, fa['hi']) if boot.n_boot else None)
  differ, mf, why = _compare_def2(s, o, est, censor, lo, hi, free, opts)
  return SizeCMRResult(s, est, censor, boot.n_boot, lo, hi, n_ok, n_above, n_below, widened,
                       est_a, lo_a, hi_a, censor_a, a_decides, decides, sens,
                       len({intervals.num(c) for _, c, _ in sens}) > 1, free, mf_disagrees, differ,
                       mf, why, float(full.e['general'][0, i]), float(full.e['domain'][0, i]),
                       flagged)


def _compare_def2(s, o, est, censor, lo, hi, free, opts):
  """(disagree, model-free CMR, why): whether the fitted and model-free Definition-2 CMRs
  disagree beyond their uncertainty, and if so the trained ratios where the two disagree on
  condition A or B. lo / hi: the fitted CMR's JSON-safe interval (None: none or open)."""
  fd = free['def2']
  lo_ = lo if lo is not None else (-np.inf if censor == 2 else est)
  hi_ = hi if hi is not None else est
  e_lo = -np.inf if censor == 2 and lo is None else lo_
  mf = fd['cmr'] if fd['censor'] != 2 else float('nan')
  gone = censor == 2 or fd['censor'] == 2
  differ = (modelfree.disagree(est, e_lo, hi_, fd['cmr'], fd['lo'] if np.isfinite(fd['lo'])
                               else -np.inf, fd['hi']) if not gone
            else (censor == 2) != (fd['censor'] == 2))
  why = []
  for k, r in enumerate(s.ratios):
    fit_b, mf_b = int(o['kind_K'][k]) != 2, bool(free['feasible_B'][k])
    fit_a, mf_a = float(o['dgen_K'][k]) <= opts.eps, bool(free['feasible_A'][k])
    if fit_b != mf_b:
      why.append(f'R={r:g}: condition B {"holds" if fit_b else "fails"} on the fitted curves, '
                 f'{"holds" if mf_b else "fails"} on the window slopes (g = '
                 f'{free["g"][k]:+.3g} +- {free["g_se"][k]:.2g}, fitted g = '
                 f'{float(o["g_K"][k]):+.3g})')
    if fit_a != mf_a:
      why.append(f'R={r:g}: condition A {"holds" if fit_a else "fails"} on the fitted curve '
                 f'(dL_gen {float(o["dgen_K"][k]):+.4f}), {"holds" if mf_a else "fails"} '
                 f'on the smoothed evals ({free["dL_general"][k]:+.4f})')
  return bool(differ), mf, why
