"""The paper's numbers (shared docs/method.md), reproduced by mixlaw.laws."""

import subprocess
import sys

import numpy as np
import pytest

from mixlaw import laws

# Paper v2 Table 5 (Finance): R_CMR(T) = a T^s + b, T in 0.2B-token units.
TABLE5 = {
    "460M": (0.22524761, 0.26944345, -0.48139982, 0.2976),
    "940M": (0.7520627, 0.13720245, -1.06581937, 0.3489),
    "1.6B": (-2.36384831, -0.15125569, 1.59223649, 0.4143),
    "3.1B": (-2.5368197, -0.42071423, 0.84375368, 0.4783),
}
# Paper Table 2 (Finance domain loss at T_max) by R, per size.
TABLE2_R = np.array([1.0, 0.75, 0.5, 1 / 3])
TABLE2 = {
    "460M": ([1.4628, 1.4844, 1.5122, 1.5387], 1.5561),
    "940M": ([1.3723, 1.3910, 1.4155, 1.4385], 1.4538),
    "1.6B": ([1.3242, 1.3416, 1.3643, 1.3854], 1.3994),
    "3.1B": ([1.2585, 1.2750, 1.2965, 1.3170], 1.3305),
}


@pytest.mark.parametrize("size", list(TABLE5))
def test_table5_cmr_law_at_t100(size):
  a, s, b, expected = TABLE5[size]
  got = float(laws.evaluate("cmr_law", {"a": a, "s": s, "b": b}, T=100.0))
  assert got == pytest.approx(expected, abs=6e-5)


def test_published_cmrs_make_quarter_feasible_everywhere_and_third_all_but_460m():
  cmr = {k: float(laws.evaluate("cmr_law", dict(zip("asb", v[:3])), T=100.0))
         for k, v in TABLE5.items()}
  assert all(c >= 0.25 for c in cmr.values())
  assert [k for k, c in cmr.items() if c < 1 / 3] == ["460M"]


@pytest.mark.parametrize("size", list(TABLE2))
def test_ratio_law_predicts_held_out_25_percent_row(size):
  train, held = TABLE2[size]
  res = laws.fit_one("ratio_law", {"R": TABLE2_R}, np.array(train))
  p = res.params(0)
  pred = float(laws.evaluate("ratio_law", p, R=0.25))
  assert abs(pred - held) / held <= 5e-4  # The paper: 0.02-0.05%.
  assert p["a"] < 0 and 0.1 < p["s"] < 0.3 and bool(res.converged_C[0])


def _eq6(lam):
  dom = {"a1": -0.3, "s1": 0.35, "b1": 0.0}
  gen = {"a2": 0.02, "s2": 0.5, "a3": -0.004, "s3": 0.8, "b2": 0.0}  # rise, then turn down
  return dom, gen


def test_eq7_root_satisfies_its_closed_form():
  dom, gen = _eq6(1000.0)
  for lam in (100.0, 1000.0, 7000.0):
    t0, kind = laws.eq7_root(dom, gen, lam=lam, t_lo=1e-3, t_hi=1e4)
    assert kind == 0
    g = (dom["a1"] * dom["s1"] * t0 ** (dom["s1"] - 1) + lam * (
        gen["a2"] * gen["s2"] * t0 ** (gen["s2"] - 1) + gen["a3"] * gen["s3"] * t0 ** (gen["s3"] - 1)))
    scale = abs(dom["a1"] * dom["s1"] * t0 ** (dom["s1"] - 1))
    assert abs(g) <= 1e-6 * scale


def test_t0_tends_to_the_turning_point_of_general_loss_as_lambda_grows():
  dom, gen = _eq6(0)
  # Turning point of dL_gen: a2 s2 T^(s2-1) + a3 s3 T^(s3-1) = 0.
  turn = (-(gen["a2"] * gen["s2"]) / (gen["a3"] * gen["s3"])) ** (1 / (gen["s3"] - gen["s2"]))
  gaps = []
  for lam in (1e2, 1e3, 1e4, 1e6):
    t0, _ = laws.eq7_root(dom, gen, lam=lam, t_lo=1e-3, t_hi=1e6)
    gaps.append(abs(t0 - turn) / turn)
  assert all(b < a for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 1e-3


def test_bad_inputs_are_fit_errors():
  with pytest.raises(laws.FitError):
    laws.fit_one("ratio_law", {"R": np.array([0.25, 0.5, np.nan, 1.0])},
                 np.array([1.0, 0.9, 0.8, 0.7]))
  with pytest.raises(laws.FitError):  # Fewer points than parameters.
    laws.fit_one("eq6_gen", {"T": np.array([1.0, 2.0, 3.0])}, np.array([0.1, 0.2, 0.25]))
  with pytest.raises(laws.FitError):
    laws.fit_table({"run_id": []})


def test_laws_import_no_model_trainer_data_or_tensorflow():
  code = ("import sys, mixlaw.laws; bad = [m for m in sys.modules if m.startswith(("
          "'tensorflow', 'flax', 'seqio', 'orbax', 'mixlaw.model', 'mixlaw.train', 'mixlaw.data', "
          "'mixlaw.run', 'pandas'))]; print(bad); sys.exit(1 if bad else 0)")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout + proc.stderr
