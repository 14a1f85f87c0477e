"""Calibration, small: nominal 95% CMR intervals cover the truth on synthetic sweeps with
realistic noise (AR(1) eval noise along each trajectory, seed-to-seed variation). The full
measurement is benchmarks/calibration.py; this runs the same code on a few draws."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _calibration():
  spec = importlib.util.spec_from_file_location(
      'calibration', os.path.join(ROOT, 'benchmarks', 'calibration.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.mark.slow  # minutes on 2 cores: many fits of synthetic sweeps.
def test_cmr_intervals_cover_the_truth():
  # n_boot 30 and 64 starts: fitter shapes shared with the other laws tests (compiled once).
  out = _calibration().run('one_seed', draws=8, n_boot=30, first_seed=1000)
  assert out['intervals'] == 16 and out['min_n_ok'] == 30
  # At 95% coverage, 12 or fewer hits of 16 has probability < 1%; moving blocks (53% measured)
  # reach 13 with probability ~1%.
  assert out['coverage'] >= 13 / 16, out
  # Point estimates within 0.03 of the truth on average: not significantly worse (z = 2
  # against the bias's standard error across draws; benchmarks/calibration.py measures it on
  # more draws).
  assert abs(out['bias']) - 2 * out['bias_se'] <= 0.03, out


@pytest.mark.slow
def test_late_turns_paired_seeds_cover_the_truth():
  # Issue 17's criterion: late turns (synth's TURN family: the general loss peaks at 0.6-0.75
  # T_max below the CMR), 2 seeds sharing one data order per seed index (paired, fitted with
  # data_orders = 'shared'), cmr_cpu's noise scale. 6 draws x 2 sizes = 12 intervals (~3-4 min
  # on an idle 2-core machine).
  out = _calibration().run('turn_paired', draws=6, n_boot=30, first_seed=2000)
  assert out['intervals'] == 12 and out['min_n_ok'] == 30
  assert out['data_orders_used'] == ['shared']
  # Coverage: at a true 95%, 8 or fewer hits of 12 has probability 0.2% (9 or fewer 2%), so
  # >= 9 of 12 fails a calibrated method < 1% of the time; it still passes one that covers 85%
  # 9 times in 10: 12 intervals cannot certify the criterion's 90%, the benchmark measures it
  # on more draws. The two sizes of a draw share their seeds' data orders, so their hits are
  # positively correlated: the real tail is wider than this binomial one.
  assert out['coverage'] >= 9 / 12, out
  # Point estimates within 0.03 of the truth on average (mean bias over the 12 estimates):
  # not significantly worse, at z = 2 against the standard error across the 6 draws. A draw's
  # two sizes share its seeds' deviations (paired), which move both CMRs together: at seed_sd
  # 0.1 the model-free CMR moves by up to ~0.08 with them, so 6 draws measure the bias to
  # ~+-0.02. benchmarks/calibration.py measures it on more draws.
  assert out['n_estimates'] == 12 and abs(out['bias']) - 2 * out['bias_se'] <= 0.03, out
