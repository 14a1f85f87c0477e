"""Benchmark: mixlaw.laws' vmapped multi-start fitter vs scipy.optimize.curve_fit in a loop.

A sweep-sized table (4 sizes x 6 ratios = 24 curves x 100 points, the synthetic family of
mixlaw.laws.synth with the paper's noise), Eq. 6 general and domain, 64 starts per curve. Both
get the same starting points (the fitter's grid, linear parameters set by least squares). JAX:
wall time of one fit_curves call per form after compilation (median of --repeats), with the
forms' bounds enforced (exponents in [-3, 3], bounded amplitudes; forms.py). scipy: a loop of
curve_fit calls over every curve and start, unbounded, keeping the best per curve. Objectives
are the summed Huber loss (delta 1e-3, passed to fit_curves explicitly: its default is now each
form's noise-scaled delta) of each method's best parameters per curve. The fitter's safe start
(the projected least-squares scan) is included in its time; scipy gets the grid only.

  python benchmarks/fit.py [--repeats 3] [--scipy-method lm|trf-huber] [--curves 24]
"""

import argparse
import os
import time
import warnings

import numpy as np
from scipy import optimize

from mixlaw import laws
from mixlaw.laws import fit as fit_lib
from mixlaw.laws import synth
from mixlaw.laws import curves as curves_lib

DELTA = 1e-3
EQ6 = {
    'eq6_gen': lambda t, a2, s2, a3, s3, b2: a2 * t ** s2 + a3 * t ** s3 + b2,
    'eq6_dom': lambda t, a1, s1, b1: a1 * t ** s1 + b1,
}


def huber_sum(r):
  a = np.abs(r)
  return float(np.sum(np.where(a <= DELTA, 0.5 * r * r, DELTA * (a - 0.5 * DELTA))))


def curves(n_curves):
  sweep = curves_lib.load(synth.table(n_points=100, seed=0))
  cs = [c for _, c in sweep.curves()][:n_curves]
  t = np.stack([c.t_N for c in cs])
  return t, {'eq6_gen': np.stack([c.gen_N for c in cs]),
             'eq6_dom': np.stack([c.dom_N for c in cs])}


def ls_starts(form, t, y, starts):
  """The fitter's grid with the linear parameters set by least squares (as its phase 1)."""
  out = starts.copy()
  lin = [i for i, k in enumerate(form.params) if form.kinds[k] == 'linear']
  for s in out:
    cols = []
    for i in lin:
      e = np.zeros(len(form.params))
      e[i] = 1.0
      p = np.where(np.isin(np.arange(len(e)), lin), e, s)
      cols.append(EQ6[form.name](t, *p) - EQ6[form.name](t, *np.where(
          np.isin(np.arange(len(e)), lin), 0.0, s)))
    f0 = EQ6[form.name](t, *np.where(np.isin(np.arange(len(s)), lin), 0.0, s))
    s[lin] = np.linalg.lstsq(np.stack(cols, 1), y - f0, rcond=None)[0]
  return out


def run_scipy(name, t, y_CxN, method):
  form = laws.get_form(name)
  grid = fit_lib.start_grid(form, 64)
  best = np.full(len(y_CxN), np.inf)
  fails = 0
  kw = dict(method='trf', loss='huber', f_scale=DELTA) if method == 'trf-huber' else {}
  t0 = time.perf_counter()
  for c, (tt, y) in enumerate(zip(t, y_CxN)):
    for p0 in ls_starts(form, tt, y, grid):
      try:
        with warnings.catch_warnings():
          warnings.simplefilter('ignore')
          p, _ = optimize.curve_fit(EQ6[name], tt, y, p0=p0, maxfev=20000, **kw)
      except (RuntimeError, ValueError, optimize.OptimizeWarning):
        fails += 1
        continue
      with np.errstate(all='ignore'):
        obj = huber_sum(EQ6[name](tt, *p) - y)
      if np.isfinite(obj):
        best[c] = min(best[c], obj)
  return time.perf_counter() - t0, best, fails


def run_jax(name, t, y_CxN, repeats):
  fit = lambda: laws.fit_curves(name, {'T': t}, y_CxN, n_starts=64, huber_delta=DELTA)
  res = fit()  # compiles
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    res = fit()
    times.append(time.perf_counter() - t0)
  obj = np.array([huber_sum(laws.evaluate(name, res.params(c), T=t[c]) - y_CxN[c])
                  for c in range(len(y_CxN))])
  return float(np.median(times)), obj, res


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--curves', type=int, default=24)
  ap.add_argument('--scipy-method', choices=('lm', 'trf-huber'), default='lm',
                  help="curve_fit's default Levenberg-Marquardt (least squares; the Huber "
                       "objective is evaluated on its result), or trf with loss='huber' (the "
                       'same objective; much slower)')
  args = ap.parse_args()
  t, ys = curves(args.curves)
  print(f'{args.curves} curves x {t.shape[1]} points, 64 starts, Huber delta {DELTA}; '
        f'load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs')
  total = {'jax': 0.0, 'scipy': 0.0}
  for name, y in ys.items():
    jt, jobj, res = run_jax(name, t, y, args.repeats)
    st, sobj, fails = run_scipy(name, t, y, args.scipy_method)
    total['jax'] += jt
    total['scipy'] += st
    ratio = jobj / sobj
    print(f'{name}: jax {jt:.2f} s (converged {int(res.converged_C.sum())}/{len(y)}, '
          f'min R2 {res.r2_C.min():.5f}) | scipy curve_fit[{args.scipy_method}] {st:.2f} s '
          f'({fails} failed fits of {len(y) * 64}) | speed-up {st / jt:.1f}x')
    print(f'  summed Huber objective over curves: jax {jobj.sum():.6e}  scipy {sobj.sum():.6e}; '
          f'jax <= scipy (1e-9 rel) on {int(np.sum(jobj <= sobj * (1 + 1e-9)))}/{len(y)} '
          f'curves; worst jax/scipy {ratio.max():.9f}, best {ratio.min():.9f}')
  print(f'total: jax {total["jax"]:.2f} s, scipy {total["scipy"]:.2f} s, '
        f'speed-up {total["scipy"] / total["jax"]:.1f}x')


if __name__ == '__main__':
  main()
