"""The CPT learning-dynamics law (mixlaw/laws/dynamics.py) against Eq. 6 on committed runs.

  python benchmarks/dynamics_lfo.py [--workdir experiments/results/cmr_long] [--fraction 0.5]

Per size of the workdir:
  - leave-future-out: the law fitted to the base run's late evals and every CPT eval at step
    <= fraction x the last step predicts dL_gen (and dL_dom) at the last step; beside it the
    committed Eq. 6 refit at the same fraction (fits.json leave_future_out) and the "no change"
    guess (the smoothed measured value at the cut); measured = the smoothed value at the end
    (mean of each run's last smooth_k evals, over runs), as fits.json's leave-future-out uses;
  - the CMR at the last step from that cut fit, base- and control-referenced, against the full
    fit's (and the committed Eq. 6 ones);
  - leave-one-ratio-out at the last step, beside the committed ratio law's held-out ratios.
Prints the tables; wall times with the load average (the machine is shared).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mixlaw import workdir as workdir_lib  # noqa: E402
from mixlaw.laws import curves  # noqa: E402
from mixlaw.laws import dynamics  # noqa: E402
from mixlaw.laws import schedules  # noqa: E402
from mixlaw.laws.options import FitOptions  # noqa: E402


def load_avg() -> str:
  return ' '.join(f'{x:.2f}' for x in os.getloadavg())


def f3(x, d=3):
  return '-' if x is None or not np.isfinite(x) else f'{x:+.{d}f}'


def pct(x):
  if x is None:
    return '-'
  return 'below' if np.isneginf(x) else f'{100 * x:.1f}%'


def read_schedules(workdir: str, run_ids) -> tuple[dict, str | None]:
  """schedules.from_runs on the workdir's runs/*/run.json and config.gin."""
  def rec(rid):
    path = workdir_lib.run_config_path(workdir, rid)
    text = open(path).read() if os.path.exists(path) else ''
    return workdir_lib.read_run(workdir, rid), text
  cpt = {rid: rec(rid) for rid in run_ids}
  sizes = {workdir_lib.parse_run_id(rid).get('size') for rid in run_ids}
  return schedules.from_runs(cpt, {s: rec(workdir_lib.base_run_id(s)) for s in sizes})


def committed(fits: dict, frac: float) -> dict:
  """From the committed fits.json: Eq. 6 LFO rows at frac, finals, CMR rows, held-out ratios."""
  lfo = {r['size']: r for r in fits['leave_future_out'] if abs(r['fraction'] - frac) < 1e-9}
  final = {(r['size'], r['ratio']): r for r in fits['final']}
  cmr = {r['size']: r for r in fits['cmr']}
  held = {(r['size'], r['which'], r['heldout_ratio']): r for r in fits['ratio_heldout']}
  rho = {s['size']: s['rho'] for s in fits['sizes']}
  return dict(lfo=lfo, final=final, cmr=cmr, held=held, rho=rho)


def one_size(size, prob, ref, opts, args):
  """Fits and predictions of one size; returns its rows (dicts)."""
  t0 = time.perf_counter()
  full = dynamics.fit(prob, huber_c=opts.huber_c)
  cut = dynamics.fit(prob, dynamics.cut_weights(prob, args.fraction), huber_c=opts.huber_c)
  t_fit = time.perf_counter() - t0
  t_max = prob.t_max_step()
  pred = dynamics.predicted_final(cut)
  meas = dynamics.measured(size, size.t_max, opts.smooth_k, ref['rho'][size.name])
  half = dynamics.measured(size, args.fraction * size.t_max, opts.smooth_k, ref['rho'][size.name])
  eq6 = ref['lfo'].get(size.name)
  eq6_by_r = {c['ratio']: c for c in eq6['curves']} if eq6 else {}
  rows = []
  for k, c in enumerate(size.curves):
    m, se = meas['general'][k]
    e6 = eq6_by_r.get(c.ratio, {}).get('dL_general_predicted')
    rows.append(dict(ratio=c.ratio, measured=m, se=se, dyn=pred['general'][k] - m,
                     eq6=None if e6 is None else e6 - m, none=half['general'][k][0] - m,
                     dom_dyn=pred['domain'][k] - meas['domain'][k][0]))
  r_lo, r_hi = min(prob.run_ratio), max(prob.run_ratio)
  rd = lambda f: dynamics.readings(f.params, prob.base_loss, prob.schedule, t_max, opts.eps,
                                   opts.lam, r_lo, r_hi)
  loro = dynamics.leave_one_ratio_out(prob, huber_c=opts.huber_c) if args.loro else []
  return dict(size=size.name, full=full, cut=cut, rows=rows, cmr_cut=rd(cut), cmr_full=rd(full),
              eq6=eq6, loro=loro, meas=meas, t_fit=time.perf_counter() - t0, t_two=t_fit)


def print_fits(res, prob_of):
  print('\n## Fits (status 1/2 = converged; rmse over CPT evals against the eval noise sigma)')
  print('| size | fit | loss | converged | iters | CPT rmse | sigma | base rmse | flags |')
  print('|---|---|---|---|---|---|---|---|---|')
  for r in res:
    p = prob_of[r['size']]
    for tag in ('full', 'cut'):
      f = r[tag]
      for k in dynamics.WHICH:
        e = dynamics.losses(f.params, p.x, k) - p.y[k]
        cpt = (f.w > 0) & p.cpt
        base = p.run < 0
        print(f'| {r["size"]} | {tag} | {k} | {f.converged(k)} | {int(f.iters[k])} | '
              f'{np.sqrt(np.mean(e[cpt] ** 2)):.4f} | {dynamics.sigma(p, f.w, k):.4f} | '
              f'{np.sqrt(np.mean(e[base] ** 2)):.4f} | {"; ".join(f.flags(k)) or "-"} |')


def print_lfo(res, frac):
  print(f'\n## Leave-future-out: fit CPT steps <= {frac:g} x last, predict dL_gen at the last '
        'step (errors = predicted - measured, nats)')
  print('| size | largest abs error: dynamics | Eq. 6 | no change | RMSE over R: dynamics | '
        'Eq. 6 | no change | better at the largest error |')
  print('|---|---|---|---|---|---|---|---|')
  for r in res:
    cols = {}
    for key in ('dyn', 'eq6', 'none'):
      v = np.array([x[key] for x in r['rows'] if x[key] is not None], np.float64)
      cols[key] = (np.max(np.abs(v)), np.sqrt(np.mean(v * v))) if v.size else (np.nan, np.nan)
    best = min(cols, key=lambda k: cols[k][0])
    name = dict(dyn='dynamics', eq6='Eq. 6', none='no change')[best]
    print(f'| {r["size"]} | {cols["dyn"][0]:.3f} | {cols["eq6"][0]:.3f} | {cols["none"][0]:.3f} '
          f'| {cols["dyn"][1]:.3f} | {cols["eq6"][1]:.3f} | {cols["none"][1]:.3f} | {name} |')
  print('\n| size | R | measured dL_gen (se) | dynamics error | Eq. 6 error | no-change error '
        '| dynamics dL_dom error |')
  print('|---|---|---|---|---|---|---|')
  for r in res:
    for x in r['rows']:
      print(f'| {r["size"]} | {x["ratio"]:g} | {x["measured"]:+.4f} ({x["se"]:.4f}) | '
            f'{f3(x["dyn"], 4)} | {f3(x["eq6"], 4)} | {f3(x["none"], 4)} | '
            f'{f3(x["dom_dyn"], 4)} |')


def print_cmr(res, ref):
  print('\n## CMR at the last step: the cut fit (predicted) against the full fit; Eq. 6 '
        '(committed) beside it. Def. 2 / condition A; base- and control-referenced dL_gen')
  print('| size | dynamics base: cut -> full (error) | cond. A: cut -> full | dynamics control: '
        'cut -> full | cond. A: cut -> full | Eq. 6: cut -> full (error) |')
  print('|---|---|---|---|---|---|')
  for r in res:
    cells = []
    for ref_ in ('base', 'control'):
      for key in ('cmr', 'cmr_condition_A'):
        a, b = float(r['cmr_cut'][ref_][key]), float(r['cmr_full'][ref_][key])
        err = a - b if np.isfinite(a) and np.isfinite(b) else None
        cells.append(f'{pct(a)} -> {pct(b)} ({f3(None if err is None else 100 * err, 1)})')
    e = r['eq6'] or {}
    err = e.get('cmr_error')
    cells.append(f'{pct(e.get("cmr_predicted"))} -> {pct(e.get("cmr_measured"))} '
                 f'({f3(None if err is None else 100 * err, 1)})')
    print(f'| {r["size"]} | ' + ' | '.join(cells) + ' |')


def print_loro(res, ref):
  if not any(r['loro'] for r in res):
    return
  print('\n## Leave-one-ratio-out at the last step: held-out dL error (nats); the committed '
        'ratio law (fits.json ratio_heldout, loss at the last eval) beside it')
  print('| size | held-out R | dynamics dL_gen error | ratio law dL_gen error | dynamics dL_dom '
        'error | ratio law dL_dom error | converged |')
  print('|---|---|---|---|---|---|---|')
  for r in res:
    ratios = [x['ratio'] for x in r['rows']]
    for lo in r['loro']:
      k = ratios.index(lo['ratio'])
      errs = [lo['predicted'][w] - r['meas'][w][k][0] for w in dynamics.WHICH]
      held = [ref['held'].get((r['size'], w, lo['ratio']), {}).get('abs_error')
              for w in dynamics.WHICH]
      conv = all(lo['fit'].converged(w) for w in dynamics.WHICH)
      print(f'| {r["size"]} | {lo["ratio"]:g} | {errs[0]:+.4f} | {f3(held[0], 4)} | '
            f'{errs[1]:+.4f} | {f3(held[1], 4)} | {conv} |')


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--workdir', default='experiments/results/cmr_long')
  ap.add_argument('--fraction', type=float, default=0.5)
  ap.add_argument('--base-from', type=float, default=0.5)
  ap.add_argument('--sizes', nargs='*', default=None)
  ap.add_argument('--no-loro', dest='loro', action='store_false')
  args = ap.parse_args(argv)
  fits = workdir_lib.read_fits(args.workdir)
  with open(workdir_lib.results_path(args.workdir)) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  opts = FitOptions.make(None, **{k: v for k, v in fits['options'].items()
                                  if k in ('eps', 'lam', 'huber_c', 'smooth_k')})
  sweep = curves.load(rows, opts)
  ids = [r.run_id for s in sweep.sizes for c in s.curves for r in c.runs]
  sch, why = read_schedules(args.workdir, ids)
  if why:
    raise SystemExit(f'no schedules: {why}')
  ref = committed(fits, args.fraction)
  print(f'# dynamics law vs Eq. 6 on {args.workdir} (load average at start: {load_avg()})')
  res, prob_of = [], {}
  for size in sweep.sizes:
    if args.sizes and size.name not in args.sizes:
      continue
    prob = dynamics.problem(size, sch, sweep.tokens_per_unit, base_from=args.base_from)
    prob_of[size.name] = prob
    r = one_size(size, prob, ref, opts, args)
    print(f'{size.name}: full + cut fits {r["t_two"]:.1f} s, with leave-one-ratio-out '
          f'{r["t_fit"]:.1f} s wall (load average now {load_avg()})', flush=True)
    res.append(r)
  print_fits(res, prob_of)
  print_lfo(res, args.fraction)
  print_cmr(res, ref)
  print_loro(res, ref)


if __name__ == '__main__':
  main()
