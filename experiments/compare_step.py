"""Compare two experiments' validation losses of the same runs at one step.

cmr_long's first 104 CPT steps repeat cmr_cpu's runs (same bases config, data seeds, warmup and
LR; batches are f(data seed, step)), so their step-104 evals should agree to float rounding:

  python experiments/compare_step.py experiments/results/cmr_cpu experiments/results/cmr_long \
      --step 104
prints one line per run present in both and the largest differences, as JSON at the end.
"""

import argparse
import json

from mixlaw import results


def at_step(workdir, step):
  out = {}
  for r in results.read_rows(workdir):
    if r.get('split') == 'validation' and int(r.get('step', -1)) == step:
      out[(r['run_id'], r.get('domain'))] = (r['general_loss'], r['domain_loss'])
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('a')
  p.add_argument('b')
  p.add_argument('--step', type=int, default=104)
  args = p.parse_args()
  a, b = at_step(args.a, args.step), at_step(args.b, args.step)
  common = sorted(set(a) & set(b))
  diffs = []
  for k in common:
    dg, dd = b[k][0] - a[k][0], b[k][1] - a[k][1]
    diffs.append((k[0], dg, dd))
    print(f'{k[0]:28s} general {a[k][0]:.5f} -> {b[k][0]:.5f} ({dg:+.5f})   '
          f'domain {a[k][1]:.5f} -> {b[k][1]:.5f} ({dd:+.5f})')
  summary = dict(step=args.step, runs=len(common),
                 max_abs_general=max((abs(d[1]) for d in diffs), default=None),
                 max_abs_domain=max((abs(d[2]) for d in diffs), default=None),
                 mean_general=sum(d[1] for d in diffs) / len(diffs) if diffs else None,
                 mean_domain=sum(d[2] for d in diffs) / len(diffs) if diffs else None)
  print(json.dumps(summary))


if __name__ == '__main__':
  main()
