"""Calibration, small: nominal 95% CMR intervals cover the truth on synthetic sweeps with the
demo's noise (AR(1) eval noise along each trajectory). The full measurement, with seed-to-seed
variation, is benchmarks/calibration.py; this runs the same code on a few draws."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _calibration():
  spec = importlib.util.spec_from_file_location(
      'calibration', os.path.join(ROOT, 'benchmarks', 'calibration.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_cmr_intervals_cover_the_truth():
  # n_boot 30 and 64 starts: fitter shapes shared with the other laws tests (compiled once).
  out = _calibration().run('one_seed', draws=8, n_boot=30, first_seed=1000)
  assert out['intervals'] == 16 and out['min_n_ok'] == 30
  # At 95% coverage, 12 or fewer hits of 16 has probability < 1%; moving blocks (53% measured)
  # reach 13 with probability ~1%.
  assert out['coverage'] >= 13 / 16, out
  assert abs(out['bias']) < 0.03, out
