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


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--draws', type=int, default=50)
  ap.add_argument('--n-boot', type=int, default=100)
  ap.add_argument('--first-seed', type=int, default=0)
  ap.add_argument('--scenarios', default=','.join(SCENARIOS))
  ap.add_argument('--seed-resampling', default='wild_t', choices=('wild_t', 'runs'),
                  help='how the bootstrap varies the seeds (FitOptions.seed_resampling)')
  ap.add_argument('--append', action='store_true',
                  help=f'append the JSON lines to {os.path.relpath(RESULTS, ROOT)}')
  args = ap.parse_args()
  for s in args.scenarios.split(','):
    line = json.dumps(run(s, args.draws, args.n_boot, args.first_seed,
                          seed_resampling=args.seed_resampling))
    print(line, flush=True)
    if args.append:
      with open(RESULTS, 'a') as f:
        f.write(line + '\n')


if __name__ == '__main__':
  main()
