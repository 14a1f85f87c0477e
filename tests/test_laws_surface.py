"""The joint surface on a synthetic sweep drawn from a known turning surface: CMR recovered,
the general loss turns, the R = 0 control changes, predict() with intervals and flags."""

import json

import numpy as np
import pytest

from mixlaw.laws import forms as forms_lib
from mixlaw.laws import surface
from mixlaw.laws import curves as curves_lib
from mixlaw.laws.options import FitOptions

LAM, EPS = 1000.0, 0.05
SIZES = {'xs': 4e4, 's': 1.3e5, 'm': 5e5, 'l': 1e6}
RATIOS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0)
# Close to the surface fitted to experiments/results/cmr_cpu: replay lowers the general loss at
# R = 0; small R rise, turn and fall; large R keep rising.
TRUE_GEN = dict(A2=-0.02, nu2=-0.24, s2=0.4, A3=0.027, rho3=1.0, nu3=-0.07, s3=-0.2, k3=0.55,
                eps=0.5, Ta=1.2)
TRUE_DOM = dict(C=-0.11, eps=0.001, rho=0.5, nu=-0.1, sigma=0.5)
SIGMA, RHO = 0.002, 0.5


def _ar1(rng, n):
  e = np.empty(n)
  e[0] = rng.normal(0, SIGMA)
  for i in range(1, n):
    e[i] = RHO * e[i - 1] + np.sqrt(1 - RHO ** 2) * rng.normal(0, SIGMA)
  return e


def _table(seed=0, n_evals=20, n_seeds=2):
  rng = np.random.default_rng(seed)
  cols = {k: [] for k in ('run_id', 'size_name', 'n_params', 'n_params_nonemb', 'ratio', 'step',
                          'tokens_seen', 'split', 'phase', 'general_loss', 'domain_loss',
                          'cpt_seed')}
  t = np.linspace(100 / n_evals, 100, n_evals)
  for name, n in SIZES.items():
    base = 3.0 - 0.2 * np.log10(n / 1e5)
    for r in RATIOS:
      for s in range(n_seeds):
        v = dict(R=np.full_like(t, r), N=np.full_like(t, n), T=t)
        gen = forms_lib.evaluate(surface.GEN, TRUE_GEN, **v) + _ar1(rng, t.size)
        dom = forms_lib.evaluate(surface.DOM, TRUE_DOM, **v) + _ar1(rng, t.size)
        for i, (tt, g, d) in enumerate(zip(np.r_[0.0, t], np.r_[0.0, gen], np.r_[0.0, dom])):
          for k, x in (('run_id', f'{name}_r{r}_s{s}'), ('size_name', name), ('n_params', n),
                       ('n_params_nonemb', n), ('ratio', r), ('step', 10 * i),
                       ('tokens_seen', int(round(tt * 1000))), ('split', 'validation'),
                       ('phase', 'cpt'), ('general_loss', base + g), ('domain_loss', base + d),
                       ('cpt_seed', s)):
            cols[k].append(x)
  return {k: np.asarray(v) for k, v in cols.items()}


def _truth(sweep):
  f = lambda form, p: [p[k] for k in forms_lib.get_form(form).params]
  return [surface.surface_cmrs([f(surface.GEN, TRUE_GEN)], [f(surface.DOM, TRUE_DOM)], s.n,
                               lam=LAM, eps=EPS, r_lo=s.ratios.min(), r_hi=s.ratios.max(),
                               t=s.t_max) for s in sweep.sizes]


@pytest.fixture(scope='module')
def sweep():
  return curves_lib.load(_table(), FitOptions())


@pytest.fixture(scope='module')
def fitted(sweep):
  out = surface.fit(sweep, huber_delta=1.345 * SIGMA, lam=LAM, eps=EPS,
                    observed_cmr=np.full(len(SIZES), np.nan), n_starts=64, loso=False,
                    n_boot=8, seed=0)
  return out


def test_the_true_surface_turns_and_decides_by_the_turn(sweep):
  for s, o in zip(sweep.sizes, _truth(sweep)):
    assert o['censor'][0] == 0 and 0.2 < o['cmr'][0] < o['cmr_a'][0] - 0.05, s.name


def test_fit_recovers_the_cmr_and_stores_what_predict_needs(sweep, fitted):
  assert fitted['reason'] is None and fitted['converged']
  assert fitted['general']['r2'] > 0.99 and not fitted['general']['at_bound']
  assert len(fitted['boot']['general_params']) == 8
  assert fitted['trained']['N'] == [4e4, 1e6] and fitted['trained']['T'][1] == pytest.approx(100)
  assert fitted['loso'] == [] and fitted['loso_reason'] == 'not requested'
  json.dumps(fitted, allow_nan=False)
  for row, o in zip(fitted['cmr'], _truth(sweep)):
    assert row['censored'] is None
    assert abs(row['cmr_surface'] - o['cmr'][0]) < 0.05, (row, o)
    assert abs(row['cmr_condition_A'] - o['cmr_a'][0]) < 0.05, (row, o)
    assert row['lo'] <= row['cmr_surface'] <= row['hi']
    assert row['inside_observed'] is None


def test_fitted_general_surface_rises_then_falls_and_moves_at_r0(sweep, fitted):
  p = fitted['general']['params']
  t = np.linspace(10, 100, 200)
  turns = 0
  for s in sweep.sizes:
    for r in (0.125, 0.25):
      v = dict(R=np.full_like(t, r), N=np.full_like(t, s.n), T=t)
      y, y0 = forms_lib.evaluate(surface.GEN, p, **v), forms_lib.evaluate(surface.GEN, TRUE_GEN, **v)
      k, k0 = int(np.argmax(y)), int(np.argmax(y0))
      if 0 < k0 < t.size - 1 and y0[k0] - y0[-1] > 0.002:  # the truth peaks inside, then falls.
        turns += 1
        assert 0 < k < t.size - 1 and y[k] - y[-1] > 0.5 * (y0[k0] - y0[-1]), (s.name, r)
        assert 0.5 < t[k] / t[k0] < 2.0, (s.name, r, t[k], t[k0])
  assert turns >= 4
  for row, s in zip(fitted['cmr'], sweep.sizes):
    true = float(forms_lib.evaluate(surface.GEN, TRUE_GEN, R=0.0, N=s.n, T=s.t_max))
    assert abs(row['control_dL_general'] - true) < 0.004, (s.name, row, true)
    assert abs(row['control_dL_general_measured'] - true) < 0.004
  assert fitted['cmr'][-1]['control_dL_general'] < -0.01  # replay alone lowers the general loss.


def test_predict_matches_in_sample_and_flags_extrapolation(sweep, fitted):
  s = sweep.sizes[1]
  kw = dict(lam=LAM, eps=EPS, r_lo=0.0, r_hi=1.0)
  p = surface.predict(fitted, s.n, s.t_max, **kw)
  row = fitted['cmr'][1]
  assert p['cmr'] == pytest.approx(row['cmr_surface'], abs=1e-6)
  assert p['cmr_condition_A'] == pytest.approx(row['cmr_condition_A'], abs=1e-6)
  assert (p['lo'], p['hi']) == pytest.approx((row['lo'], row['hi']), abs=1e-6)
  assert not p['extrapolated_size'] and not p['extrapolated_budget']
  assert p['lo'] <= p['cmr'] <= p['hi'] and p['n_ok'] == 8
  json.dumps(p, allow_nan=False)
  q = surface.predict(fitted, 3e6, 200.0, **kw)
  assert q['extrapolated_size'] and q['extrapolated_budget'] and q['cmr'] is not None
  assert not surface.predict(fitted, 2e5, 50.0, **kw)['extrapolated_size']
  none = surface.predict(dict(reason='one size'), 1e6, 10.0, **kw)
  assert none['cmr'] is None and none['reason'] == 'one size'
