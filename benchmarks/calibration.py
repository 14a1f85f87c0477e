"""Calibration: do the CMR intervals cover the truth at their nominal rate?

Draws synthetic sweeps with known noise from mixlaw.laws.synth's NOISY family (the demo's scale:
per-eval noise sigma ~ 0.01 nats, AR(1) correlated along each trajectory, optional seed-to-seed
variation of the curves' amplitudes), fits each with the laws (bootstrap intervals) and counts
how often the nominal 95% interval of each size's CMR covers the truth: the CMR the machinery
returns on the noise-free curves (synth.method_cmr), so interpolation between ratios is not
counted as noise. Prints one JSON line per scenario.

  python benchmarks/calibration.py [--draws 50] [--n-boot 100] [--scenarios one_seed,seeds]
"""

import argparse
import json
import os
import time

import numpy as np

from mixlaw import laws
from mixlaw.laws import api
from mixlaw.laws import synth

SIZES = {'S': 1e8, 'M': 4e8}
RATIOS = (0.125, 0.25, 0.5, 1.0)
N_EVALS, WARMUP = 25, 1  # as the demo: 25 evals, the first inside the lr warmup.
SCENARIOS = {  # name: synth.table noise options
    'one_seed': dict(n_seeds=1, rho=0.6, seed_sd=0.0),
    'seeds': dict(n_seeds=3, rho=0.6, seed_sd=0.1),
    'two_seeds': dict(n_seeds=2, rho=0.6, seed_sd=0.1),
}
NOISE = dict(sigma_gen=0.012, sigma_dom=0.008)


def truths(opts):
  t_lo = 100.0 * (WARMUP + 1) / N_EVALS
  out = {}
  for name, n in SIZES.items():
    cmr, censor = synth.method_cmr('noisy', n, RATIOS, t_lo, 100.0, opts.lam, opts.eps)
    out[name] = dict(cmr=cmr, censor=censor,
                     continuous=synth.family_cmr('noisy', n, RATIOS[0], RATIOS[-1], 100.0,
                                                 opts.lam, opts.eps))
  return out


def covered(row, truth):
  lo = -np.inf if row['lo'] is None else row['lo']
  hi = -np.inf if row['hi'] is None else row['hi']
  t = -np.inf if truth['censor'] == 2 else truth['cmr']
  return bool(lo - 1e-9 <= t <= hi + 1e-9)


def run(scenario, draws, n_boot, first_seed=0, n_starts=64):
  opts = laws.FitOptions(n_boot=n_boot, surface=False, n_starts=n_starts)
  truth = truths(opts)
  hits, hits_a, widths, errors, n_ok, widened = [], [], [], [], [], 0
  t0 = time.perf_counter()
  for d in range(first_seed, first_seed + draws):
    table = synth.table(sizes=SIZES, ratios=RATIOS, n_points=N_EVALS, family='noisy', seed=d,
                        warmup_evals=WARMUP, **NOISE, **SCENARIOS[scenario])
    fits = api.fit_table(table, opts, seed=d)
    for row in fits['cmr']:
      tr = truth[row['size']]
      hits.append(covered(row, tr))
      a = dict(lo=row['cmr_condition_A_lo'], hi=row['cmr_condition_A_hi'])
      hits_a.append(covered(a, tr))  # condition A decides this family's CMR.
      if row['lo'] is not None and row['hi'] is not None:
        widths.append(row['hi'] - row['lo'])
      if row['cmr'] is not None:
        errors.append(row['cmr'] - tr['cmr'])
      n_ok.append(row['n_ok'])
      widened += row['ci_widened']
  return dict(scenario=scenario, noise={**NOISE, **SCENARIOS[scenario]}, draws=draws,
              intervals=len(hits), n_boot=n_boot, level=opts.ci_level,
              coverage=float(np.mean(hits)), coverage_condition_A_only=float(np.mean(hits_a)),
              mean_width=float(np.mean(widths)) if widths else None,
              bias=float(np.mean(errors)), rmse=float(np.sqrt(np.mean(np.square(errors)))),
              min_n_ok=int(min(n_ok)), widened=int(widened),
              truth={k: round(v['cmr'], 4) for k, v in truth.items()},
              continuous_truth={k: round(v['continuous'], 4) for k, v in truth.items()},
              seconds=round(time.perf_counter() - t0, 1),
              load_average=round(os.getloadavg()[0], 2))


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--draws', type=int, default=50)
  ap.add_argument('--n-boot', type=int, default=100)
  ap.add_argument('--first-seed', type=int, default=0)
  ap.add_argument('--scenarios', default=','.join(SCENARIOS))
  args = ap.parse_args()
  for s in args.scenarios.split(','):
    print(json.dumps(run(s, args.draws, args.n_boot, args.first_seed)), flush=True)


if __name__ == '__main__':
  main()
