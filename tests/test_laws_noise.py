"""Noise estimates and resampling: known answers on synthetic noise."""

import numpy as np
import pytest

from mixlaw.laws import bootstrap
from mixlaw.laws import noise


def _ar1(rng, rho, sigma, n, runs):
  e = np.zeros((runs, n))
  z = rng.normal(0, sigma, (runs, n))
  e[:, 0] = z[:, 0]
  for i in range(1, n):
    e[:, i] = rho * e[:, i - 1] + np.sqrt(1 - rho ** 2) * z[:, i]
  return e


def test_sigma_from_second_differences_ignores_a_smooth_trend():
  rng = np.random.default_rng(0)
  t = np.linspace(8, 100, 24)
  trend = 0.1 - 0.05 * np.log(t) - 0.002 * np.sqrt(t)
  runs = [trend + rng.normal(0, 0.013, t.size) for _ in range(40)]
  assert noise.sigma_2nd(runs) == pytest.approx(0.013, rel=0.1)
  # Serially correlated noise: second differences read its fast part only (documented).
  ar = _ar1(rng, 0.6, 0.013, 24, 200)
  fast = 0.013 * np.sqrt((1 - 0.6) * (3 - 0.6) / 3)
  assert noise.sigma_2nd(list(trend + ar)) == pytest.approx(fast, rel=0.1)


@pytest.mark.parametrize('rho', [0.0, 0.3, 0.6])
def test_lag1_is_corrected_for_short_fitted_series(rho):
  """Residuals of a 3-parameter fit to 24 evals: the raw lag-1 estimate is biased low by
  ~(p + 1 + 3 rho) / m; the corrected one is close to the truth on average."""
  rng = np.random.default_rng(1)
  t = np.linspace(8, 100, 24)
  x = np.stack([np.ones_like(t), 1 / t, np.sqrt(t)], 1)
  est = []
  for _ in range(60):
    y = _ar1(rng, rho, 0.01, t.size, 4)
    res = [yy - x @ np.linalg.lstsq(x, yy, rcond=None)[0] for yy in y]
    est.append(noise.lag1(res, 3))
  assert np.mean(est) == pytest.approx(rho, abs=0.1)


def test_ar_factor_and_smoothed_standard_error():
  assert noise.ar_factor(0.0, 5) == 1.0
  assert noise.ar_factor(0.5, 5) == pytest.approx(1 + 2 * (0.8 * .5 + 0.6 * .25 + 0.4 * .125
                                                           + 0.2 * .0625))
  rng = np.random.default_rng(2)
  t = np.arange(1, 25, dtype=float)
  # One run: the se of the last-k mean matches the spread of that mean over many runs.
  ys = _ar1(rng, 0.5, 0.01, t.size, 4000)
  means = ys[:, -5:].mean(axis=1)
  ses = [noise.smoothed([t], [y], 24.0, 5, 0.5)[1] for y in ys[:400]]
  assert np.mean(ses) == pytest.approx(means.std(), rel=0.2)
  # Several runs: the se is across runs.
  m, se, n = noise.smoothed([t, t, t], [ys[0], ys[1], ys[2]], 20.0, 5, 0.5)
  assert n == 3 and m == pytest.approx(np.mean([y[15:20].mean() for y in ys[:3]]))
  assert se == pytest.approx(np.std([y[15:20].mean() for y in ys[:3]], ddof=1) / np.sqrt(3))


def test_blocks_are_contiguous_and_circular():
  rng = np.random.default_rng(3)
  idx = noise.block_indices(rng, 10, 4)
  assert idx.shape == (10,)
  for start in range(0, 8, 4):
    block = idx[start:start + 4]
    assert np.all(np.diff(block) % 10 == 1)
  assert noise.block_length(0.0, 24) == 1
  assert 3 <= noise.block_length(0.6, 24) <= 8


def test_two_stage_replicates_resample_runs_and_redraw_residuals():
  rng = np.random.default_rng(4)
  n = 12
  run = np.r_[np.zeros(n), np.ones(n)][None].astype(int)
  w = np.ones((1, 2 * n))
  fit = {k: np.zeros((1, 2 * n)) for k in ('general', 'domain')}
  y = {k: rng.normal(0, 1, (1, 2 * n)) for k in fit}
  for mode in ('blocks', 'ar1'):
    seeds = bootstrap.seed_draws([[0, 1]], 200, 0, False, 'runs')
    reps = bootstrap.draw(run, w, fit, fit, y, 200, 0, rho_C=np.array([0.5]),
                          n_params=dict(general=3, domain=3), blocks_C=np.array([3]), mode=mode,
                          seeds=seeds)
    assert reps.w_BxCxN.shape == (200, 1, 2 * n)
    mult = reps.w_BxCxN[:, 0, [0, n]]  # each run's weight is its multiplicity
    assert set(map(tuple, mult)) <= {(2, 0), (1, 1), (0, 2)} and len(set(map(tuple, mult))) == 3
    if mode == 'blocks':  # residuals stay within their run, general and domain together
      g, d = reps.y_BxCxN['general'][:, 0], reps.y_BxCxN['domain'][:, 0]
      for b in range(5):
        for lo in (0, n):
          src = [int(np.flatnonzero(y['general'][0] == v)[0]) for v in g[b, lo:lo + n]]
          assert all(lo <= s < lo + n for s in src)
          np.testing.assert_array_equal(d[b, lo:lo + n], y['domain'][0][src])


@pytest.mark.parametrize('n_seeds', [2, 3])
def test_wild_t_seed_draws_cover_a_seed_effect_at_the_nominal_rate(n_seeds):
  """A seed effect known only from n seeds: the replicate seed mean's 95% percentile interval
  covers the true mean at ~95% with 'wild_t' (s / sqrt(n) t_{n-1}); 'runs' (whole runs with
  replacement) covers (2 / pi) arctan(sqrt 2) = 61% with two seeds."""
  rng = np.random.default_rng(11)
  n_data, n_boot = 400, 400
  hits = {'wild_t': 0, 'runs': 0}
  for i in range(n_data):
    x = rng.normal(0.0, 1.0, n_seeds)  # the runs' deviations; the true mean is 0.
    for mode in hits:
      wt, sc = bootstrap.seed_draws([list(range(n_seeds))], n_boot, i, False, mode)[0]
      reps = x.mean() + (wt * sc * (x - x.mean())).sum(axis=1) / wt.sum(axis=1)
      lo, hi = np.percentile(reps, [2.5, 97.5])
      hits[mode] += lo <= 0.0 <= hi
  cover = {k: v / n_data for k, v in hits.items()}
  assert abs(cover['wild_t'] - 0.95) < 0.035
  if n_seeds == 2:
    assert abs(cover['runs'] - 2 / np.pi * np.arctan(np.sqrt(2))) < 0.06


def test_interval_respects_censoring_and_contains_the_estimate():
  x = np.r_[np.full(10, bootstrap.BELOW), np.linspace(0.3, 0.5, 90), np.full(5, np.nan)]
  lo, hi, n_ok, widened = bootstrap.interval(x, 0.4, 0.95)
  assert lo == -np.inf and hi == pytest.approx(np.percentile(np.linspace(0.3, 0.5, 90), 97.5),
                                               abs=0.01)
  assert n_ok == 100 and not widened
  lo, hi, _, widened = bootstrap.interval(np.linspace(0.3, 0.5, 100), 0.7, 0.95)
  assert widened and lo < hi == 0.7
  # 5 of 200 censored: the 2.5th percentile falls between a censored replicate and the smallest
  # finite one, which is "below", never an interpolated (here negative) ratio.
  x = np.r_[np.full(5, bootstrap.BELOW), np.linspace(0.0, 0.5, 195)]
  lo, hi, _, _ = bootstrap.interval(x, 0.3, 0.95)
  assert lo == -np.inf and 0.45 < hi <= 0.5
  lo, _, _, _ = bootstrap.interval(np.r_[np.full(4, bootstrap.BELOW), np.linspace(0, 0.5, 196)],
                                   0.3, 0.95)
  assert lo >= 0.0


def test_model_free_draws_share_seed_weights_across_ratios_when_orders_are_shared():
  """The model-free Monte Carlo draws a seed's deviation as one data order's at every ratio
  (paired) or per ratio (independent), t-scaled; a curve with one run gets normal draws."""
  from mixlaw.laws import modelfree  # pylint: disable=g-import-not-at-top
  runs = [[0.010, 0.020], [0.030, 0.040], [0.05]]  # per ratio: per-seed values (seeds 0, 1)
  mean = np.array([np.mean(r) for r in runs])
  se = np.array([0.005, 0.005, 0.002])
  z = np.random.default_rng(0).standard_normal((4000, 3))
  labels = [[0, 1], [0, 1], [0]]
  paired = modelfree._draws(mean, se, runs, bootstrap.seed_draws(labels, 4000, 1, True), z)
  alone = modelfree._draws(mean, se, runs, bootstrap.seed_draws(labels, 4000, 1, False), z)
  # Equal deviations at both ratios, seed by seed: paired draws move together exactly.
  np.testing.assert_allclose(paired[:, 1] - mean[1], paired[:, 0] - mean[0], atol=1e-12)
  assert abs(np.corrcoef(alone[:, 0], alone[:, 1])[0, 1]) < 0.1
  np.testing.assert_allclose(paired[:, 2], mean[2] + 0.002 * z[:, 2])
  # t_1: the 97.5th percentile of the seed mean's deviation is ~12.7 s / sqrt(2), s / sqrt(2)
  # = 0.005 here, where a normal draw would give 1.96 x 0.005.
  q = np.percentile(np.abs(paired[:, 0] - mean[0]), 95) / 0.005
  assert 9 < q < 17
