"""Calibration: do the CMR intervals cover the truth at their nominal rate?

Draws synthetic sweeps with known noise from mixlaw.laws.synth (per-eval noise AR(1) correlated
along each trajectory, seed-to-seed variation of the curves' shapes), fits each with the laws
(bootstrap intervals) and counts how often the nominal 95% interval of each size's CMR covers
the truth: the CMR the machinery returns on the noise-free curves (synth.method_cmr), so
interpolation between ratios is not counted as noise. Two families and two designs:
  noisy_*: synth's NOISY family at the demo's scale (sigma 0.012 / 0.008 nats, rho 0.6);
  turn_*:  synth's TURN family, late turns (the general loss peaks at 0.6-0.75 T_max at the
           ratios below the CMR, after T_max above it) at cmr_cpu's scale (sigma 0.003 nats,
           rho 0.5, 2 seeds);
  *_paired: one data order per seed index (the seed deviation shared by every (size, R)), fitted
           with data_orders = 'shared' (seed indices resampled jointly); the others draw and
           resample seeds independently per (size, R).
Each draw refits the full data only (budget_fractions = (1.0,), no leave-future-out, no
surface). Prints one JSON line per scenario; --append adds them to
benchmarks/results/calibration.jsonl.

  python benchmarks/calibration.py [--draws 50] [--n-boot 100] [--scenarios turn_paired,...]
      [--seed-resampling wild_t|runs] [--first-seed 0]
"""

import argparse
import json
import os
import time

import numpy as np

from mixlaw import laws
from mixlaw.laws import api
from mixlaw.laws import synth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, 'benchmarks', 'results', 'calibration.jsonl')
SIZES = {'S': 1e8, 'M': 4e8}
RATIOS = (0.125, 0.25, 0.5, 1.0)
N_EVALS, WARMUP = 25, 1  # as the demo: 25 evals, the first inside the lr warmup.
DEMO_NOISE = dict(sigma_gen=0.012, sigma_dom=0.008, rho=0.6)
CPU_NOISE = dict(sigma_gen=0.003, sigma_dom=0.003, rho=0.5)
SCENARIOS = {  # name: family, synth.table noise options, data_orders of the fit.
    'one_seed': ('noisy', dict(DEMO_NOISE, n_seeds=1, seed_sd=0.0), 'independent'),
    'seeds': ('noisy', dict(DEMO_NOISE, n_seeds=3, seed_sd=0.1), 'independent'),
    'two_seeds': ('noisy', dict(DEMO_NOISE, n_seeds=2, seed_sd=0.1), 'independent'),
    'noisy_paired': ('noisy', dict(DEMO_NOISE, n_seeds=2, seed_sd=0.1, seeds='paired'),
                     'shared'),
    'turn_independent': ('turn', dict(CPU_NOISE, n_seeds=2, seed_sd=0.1), 'independent'),
    'turn_paired': ('turn', dict(CPU_NOISE, n_seeds=2, seed_sd=0.1, seeds='paired'), 'shared'),
    'turn_paired_3': ('turn', dict(CPU_NOISE, n_seeds=3, seed_sd=0.1, seeds='paired'),
                      'shared'),
}


def options(n_boot, data_orders, n_starts=64, seed_resampling='wild_t'):
  """The fit settings of every draw: the full fit only (no budgets, no surface)."""
  return laws.FitOptions(n_boot=n_boot, surface=False, n_starts=n_starts,
                         budget_fractions=(1.0,), lfo_fractions=(), data_orders=data_orders,
                         seed_resampling=seed_resampling)


def truths(family, opts):
  """Per size: the method's CMR on the noise-free curves (with its censoring), the continuous
  family's and the model-free Definition-2 CMR on noise-free evals."""
  t_N = synth.eval_grid(N_EVALS)[WARMUP:]
  out = {}
  for name, n in SIZES.items():
    cmr, censor = synth.method_cmr(family, n, RATIOS, float(t_N[0]), 100.0, opts.lam, opts.eps)
    free = synth.modelfree_cmr(family, n, RATIOS, t_N, opts.lam, opts.eps, opts.smooth_k,
                               opts.slope_window)
    out[name] = dict(cmr=cmr, censor=censor,
                     continuous=synth.family_cmr(family, n, RATIOS[0], RATIOS[-1], 100.0,
                                                 opts.lam, opts.eps),
                     model_free=free['def2'][0])
  return out


def covered(row, truth):
  lo = -np.inf if row['lo'] is None else row['lo']
  hi = -np.inf if row['hi'] is None else row['hi']
  t = -np.inf if truth['censor'] == 2 else truth['cmr']
  return bool(lo - 1e-9 <= t <= hi + 1e-9)


def run(scenario, draws, n_boot, first_seed=0, n_starts=64, seed_resampling='wild_t'):
  family, noise, orders = SCENARIOS[scenario]
  opts = options(n_boot, orders, n_starts, seed_resampling)
  truth = truths(family, opts)
  hits, hits_a, hits_mf, widths, errors, errors_mf, n_ok, widened = [], [], [], [], [], [], [], 0
  draw_errors = []  # per draw: the mean error of its sizes' CMRs.
  two_terms, used = [], set()
  t0 = time.perf_counter()
  for d in range(first_seed, first_seed + draws):
    table = synth.table(sizes=SIZES, ratios=RATIOS, n_points=N_EVALS, family=family, seed=d,
                        warmup_evals=WARMUP, **noise)
    fits = api.fit_table(table, opts, seed=d)
    used.add(fits['options']['data_orders_used'])
    two_terms += [c['terms'] == 2 for c in fits['curves'] if c['which'] == 'general']
    mine = []
    for row in fits['cmr']:
      tr = truth[row['size']]
      hits.append(covered(row, tr))
      a = dict(lo=row['cmr_condition_A_lo'], hi=row['cmr_condition_A_hi'])
      hits_a.append(covered(a, tr))  # condition A decides these families' CMRs.
      mf = row['model_free_def2']
      hits_mf.append(covered(mf, tr))
      if row['lo'] is not None and row['hi'] is not None:
        widths.append(row['hi'] - row['lo'])
      if row['cmr'] is not None:
        errors.append(row['cmr'] - tr['cmr'])
        mine.append(errors[-1])
      if mf['cmr'] is not None:
        errors_mf.append(mf['cmr'] - tr['cmr'])
      n_ok.append(row['n_ok'])
      widened += row['ci_widened']
    if mine:
      draw_errors.append(float(np.mean(mine)))
  mean = lambda x: float(np.mean(x)) if len(x) else None
  return dict(scenario=scenario, family=family, noise=noise, data_orders=orders,
              seed_resampling=seed_resampling, first_seed=first_seed,
              data_orders_used=sorted(used), draws=draws, intervals=len(hits), n_boot=n_boot,
              level=opts.ci_level, coverage=float(np.mean(hits)),
              coverage_condition_A_only=float(np.mean(hits_a)),
              coverage_model_free_def2=float(np.mean(hits_mf)),
              mean_width=mean(widths), bias=mean(errors),
              # The sizes of a draw share its seeds (paired: their deviations too), so draws,
              # not estimates, are the independent units of the bias's standard error.
              bias_se=(float(np.std(draw_errors, ddof=1) / np.sqrt(len(draw_errors)))
                       if len(draw_errors) >= 2 else None),
              rmse=float(np.sqrt(np.mean(np.square(errors)))) if errors else None,
              n_estimates=len(errors), bias_model_free_def2=mean(errors_mf),
              rmse_model_free_def2=(float(np.sqrt(np.mean(np.square(errors_mf))))
                                    if errors_mf else None),
              two_term_fraction=mean(two_terms),
              min_n_ok=int(min(n_ok)), widened=int(widened),
              truth={k: round(v['cmr'], 4) for k, v in truth.items()},
              continuous_truth={k: round(v['continuous'], 4) for k, v in truth.items()},
              model_free_truth={k: round(v['model_free'], 4) for k, v in truth.items()},
              seconds=round(time.perf_counter() - t0, 1),
              load_average=round(os.getloadavg()[0], 2))


# ----------------------------------------------------------------------------- cmr_long family

LONG_SIZES = {'2xs': 4e7, 's': 1.5e8, 'm': 4e8}  # 3 sizes (names only set the order).
LONG_RATIOS = (0.0, 0.25, 0.375, 0.5, 0.625, 0.75)
LONG_EVALS = 52  # as cmr_long: 416 steps, an eval every 8.
# Condition-A CMR at T_max per size: 0.42 / 0.50 / 0.54 (largest - smallest +0.12), or 0.50 at
# every size (no contrast). Rise at T_max = A R^1.5, so A = (eps - drift) / CMR^1.5.
LONG_CMR = {'contrast': (0.42, 0.50, 0.54), 'none': (0.50, 0.50, 0.50)}
LONG_DRIFT = -0.045  # the R = 0 control's dL_gen at T_max (cmr_long: -0.041 .. -0.055).
LONG_NOISE = dict(offset_sd=0.007, sigma=0.005, rho=0.7, rho_x=0.7)


def long_params(size_index: int, ratio: float, contrast: str, eps: float = 0.05):
  """True Eq. 6 parameters (domain, general) of the cmr_long-shaped family: dL_gen = drift
  (T / 100)^0.5 + A R^1.5 (1 - T^-0.5) / (1 - 100^-0.5), dL_dom as synth's NOISY family."""
  amp = (eps - LONG_DRIFT) / LONG_CMR[contrast][size_index] ** 1.5
  rise = amp * ratio ** 1.5 / (1 - 0.1)
  n = list(LONG_SIZES.values())[size_index] / 1e9
  return synth._noisy_dom(n, ratio, 0.0), dict(a2=LONG_DRIFT / 10, s2=0.5, a3=-rise, s3=-0.5,
                                                b2=rise)


def long_truth(contrast: str, opts) -> dict:
  """Per size: the machinery's condition-A and Definition-2 CMRs on the noise-free curves."""
  from mixlaw.laws import cmr as cmr_lib
  ratios = np.array(LONG_RATIOS)
  t = synth.eval_grid(LONG_EVALS)
  out = {}
  for i, name in enumerate(LONG_SIZES):
    p = [long_params(i, r, contrast, opts.eps) for r in ratios]
    gen = np.array([[q[1][k] for k in synth.GEN_KEYS] for q in p])
    dom = np.array([[q[0][k] for k in synth.DOM_KEYS] for q in p])
    e = synth._exponents(ratios, gen, dom, t[-1])
    o = cmr_lib.family_analysis(dict(ratios_K=ratios[None], gen_KxP=gen[None],
                                     dom_KxP=dom[None], e_gen=[e[0]], e_dom=[e[1]]),
                                [opts.lam], opts.eps, float(t[0]), float(t[-1]),
                                np.array([t[-1]]))
    out[name] = dict(def2=float(o['cmr_BxJ'][0, 0]), condition_A=float(o['cmr_a_B'][0]))
  return out


def _ar1_unit(rng, rho, n):
  z = rng.standard_normal(n)
  e = np.empty(n)
  e[0] = z[0]
  for i in range(1, n):
    e[i] = rho * e[i - 1] + np.sqrt(1 - rho * rho) * z[i]
  return e


def long_table(contrast: str, seed: int, n_seeds: int = 2, noise=None) -> dict:
  """A results table shaped like cmr_long: 3 sizes x 6 ratios x n_seeds data orders shared by
  every cell. General loss: the family + the order's offset z_s offset_sd (T / 100)^0.5
  (shared by every cell) + eval noise, AR(1) along T (sd sigma, lag-1 rho) and correlated
  rho_x across the sizes of one (R, seed) (one part drawn per (R, seed, step)); domain loss:
  the family + eval noise of the same kind."""
  nz = dict(LONG_NOISE, **(noise or {}))
  rng = np.random.default_rng([seed, 41])
  t = synth.eval_grid(LONG_EVALS)
  offsets = rng.normal(0, nz['offset_sd'], n_seeds)
  common = {(r, s, k): _ar1_unit(rng, nz['rho'], t.size) for r in LONG_RATIOS
            for s in range(n_seeds) for k in ('gen', 'dom')}
  rows = {k: [] for k in ('run_id', 'size_name', 'n_params', 'n_params_nonemb', 'ratio', 'step',
                          'tokens_seen', 'split', 'general_loss', 'domain_loss', 'lr', 'phase',
                          'domain', 'cpt_seed')}
  for i, (name, n) in enumerate(LONG_SIZES.items()):
    base = (3.4 - 0.3 * i, 3.9 - 0.3 * i)
    for r in LONG_RATIOS:
      d_p, g_p = long_params(i, r, contrast)
      for s in range(n_seeds):
        noise_ = {k: nz['sigma'] * (np.sqrt(nz['rho_x']) * common[(r, s, k)]
                                    + np.sqrt(1 - nz['rho_x']) * _ar1_unit(rng, nz['rho'], t.size))
                  for k in ('gen', 'dom')}
        gen = (synth._eq6(g_p, t) + offsets[s] * np.sqrt(t / 100.0) + noise_['gen'])
        dom = synth._eq6(d_p, t) + noise_['dom']
        for j, (tt, gg, dd) in enumerate(zip(np.r_[0.0, t], np.r_[0.0, gen], np.r_[0.0, dom])):
          for k, v in (('run_id', f'{name}_r{r:.4f}_s{s}'), ('size_name', name),
                       ('n_params', n), ('n_params_nonemb', n), ('ratio', r), ('step', 8 * j),
                       ('tokens_seen', int(round(tt * 1e5))), ('split', 'validation'),
                       ('general_loss', base[0] + gg), ('domain_loss', base[1] + dd),
                       ('lr', 1e-3), ('phase', 'cpt'), ('domain', 'synthetic'), ('cpt_seed', s)):
            rows[k].append(v)
  return {k: np.asarray(v) for k, v in rows.items()}


def _covers(lo, hi, truth):
  return bool(lo is not None and hi is not None and lo - 1e-9 <= truth <= hi + 1e-9)


def _long_modelfree(table, opts, rng):
  """The model-free paired analysis (seedwise.py) of one draw at T_max: per size the
  condition-A CMR with its absolute interval, and the size contrasts (offset held)."""
  from mixlaw.laws import cmr as cmr_lib
  from mixlaw.laws import curves
  from mixlaw.laws import seedwise
  cl = seedwise.cells(curves.load(table, opts), 1.0, opts)
  ratios = np.array(LONG_RATIOS)
  e = [cmr_lib.fit_exponent(ratios, cl.level_SxC.mean(0)[cl.of_size(i)])
       for i in range(len(cl.sizes))]
  a = seedwise.analyse(cl, e, opts, rng, n_draws=2000)
  z_level = 2 * __import__('statistics').NormalDist().cdf(opts.decision_z) - 1
  out = dict(cmr={r['size']: r['condition_A'] for r in a.rows},
             contrasts=seedwise.size_contrasts(a, 'condition_A', opts.ci_level),
             decision=seedwise.size_contrasts(a, 'condition_A', z_level))
  return out


def _verdict_b(rows):
  """(b) as decisions.py reads it: largest - smallest holds (its central interval above 0) and
  no consecutive step fails (below 0)."""
  whole = rows[-1]
  if any(r['hi'] < 0 for r in rows[:-1]) or whole['hi'] < 0:
    return 'fails'
  return 'holds' if whole['lo'] > 0 else 'undecided'


def run_long(contrast: str, draws: int, first_seed: int = 0) -> dict:
  """Item 7 of issue 23 on the cmr_long-shaped family: coverage of the paired size contrasts
  (condition-A CMR, base reference) at nominal ci_level, how often (b) holds, coverage of the
  absolute condition-A CMR, with the model-free paired analysis (seedwise.py)."""
  opts = options(0, 'shared')
  truth = long_truth(contrast, opts)
  names = list(LONG_SIZES)
  t_c = {(a, b): truth[b]['condition_A'] - truth[a]['condition_A']
         for a, b in zip(names, names[1:])}
  t_c[(names[0], names[-1])] = truth[names[-1]]['condition_A'] - truth[names[0]]['condition_A']
  hits_c, hits_whole, holds, hits_abs, widths, errors = [], [], [], [], [], []
  t0 = time.perf_counter()
  for d in range(first_seed, first_seed + draws):
    table = long_table(contrast, d)
    res = _long_modelfree(table, opts, np.random.default_rng([d, 5]))
    for r in res['contrasts']:
      ok = _covers(r['lo'], r['hi'], t_c[(r['smaller'], r['larger'])])
      hits_c.append(ok)
      if (r['smaller'], r['larger']) == (names[0], names[-1]):
        hits_whole.append(ok)
        widths.append(r['hi'] - r['lo'])
        errors.append(r['diff'] - t_c[(names[0], names[-1])])
    holds.append(_verdict_b(res['decision']) == 'holds')
    for name, c in res['cmr'].items():
      hits_abs.append(_covers(c['lo'], c['hi'], truth[name]['condition_A']))
  return dict(scenario=f'long_{contrast}', estimator='model_free (seedwise.py)',
              draws=draws, first_seed=first_seed,
              noise=LONG_NOISE, truth={k: round(v['condition_A'], 4) for k, v in truth.items()},
              true_contrast=round(t_c[(names[0], names[-1])], 4), level=opts.ci_level,
              contrast_coverage=float(np.mean(hits_c)), contrasts=len(hits_c),
              largest_minus_smallest_coverage=float(np.mean(hits_whole)),
              largest_minus_smallest_mean_width=float(np.mean(widths)),
              largest_minus_smallest_bias=float(np.mean(errors)),
              b_holds=float(np.mean(holds)), absolute_coverage=float(np.mean(hits_abs)),
              absolute_intervals=len(hits_abs), seconds=round(time.perf_counter() - t0, 1),
              load_average=round(os.getloadavg()[0], 2))


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--draws', type=int, default=50)
  ap.add_argument('--n-boot', type=int, default=100)
  ap.add_argument('--first-seed', type=int, default=0)
  ap.add_argument('--scenarios', default=','.join(SCENARIOS))
  ap.add_argument('--seed-resampling', default='wild_t', choices=('wild_t', 'runs'),
                  help='how the bootstrap varies the seeds (FitOptions.seed_resampling)')
  ap.add_argument('--long', action='store_true',
                  help='the cmr_long-shaped family (issue 23 item 7): long_contrast, long_none')
  ap.add_argument('--append', action='store_true',
                  help=f'append the JSON lines to {os.path.relpath(RESULTS, ROOT)}')
  args = ap.parse_args()
  if args.long:
    for c in ('contrast', 'none'):
      line = json.dumps(run_long(c, args.draws, args.first_seed))
      print(line, flush=True)
      if args.append:
        with open(RESULTS, 'a') as f:
          f.write(line + '\n')
    return
  for s in args.scenarios.split(','):
    line = json.dumps(run(s, args.draws, args.n_boot, args.first_seed,
                          seed_resampling=args.seed_resampling))
    print(line, flush=True)
    if args.append:
      with open(RESULTS, 'a') as f:
        f.write(line + '\n')


if __name__ == '__main__':
  main()
