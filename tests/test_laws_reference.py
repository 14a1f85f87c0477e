"""Reference numbers of the CMR paper (docs method.md) and the Eq. 7 critical point."""

import jax
import numpy as np
import pytest

import mixlaw.laws as L
from mixlaw.laws import synth

# Gu et al. 2024 (arXiv 2407.17467) v2 Table 5, Finance: R_CMR(T) = a4 T^s4 + b3.
TABLE5 = {
    '460M': (0.22524761, 0.26944345, -0.48139982, 0.2976),
    '940M': (0.7520627, 0.13720245, -1.06581937, 0.3489),
    '1.6B': (-2.36384831, -0.15125569, 1.59223649, 0.4143),
    '3.1B': (-2.5368197, -0.42071423, 0.84375368, 0.4783),
}
# Table 2: Finance domain loss at T_max by ratio (100, 75, 50, 33 %; then 25 % measured).
TABLE2 = {
    '460M': (1.4628, 1.4844, 1.5122, 1.5387, 1.5561),
    '940M': (1.3723, 1.3910, 1.4155, 1.4385, 1.4538),
    '1.6B': (1.3242, 1.3416, 1.3643, 1.3854, 1.3994),
    '3.1B': (1.2585, 1.2750, 1.2965, 1.3170, 1.3305),
}


def _published_cmr(size):
  a, s, b, _ = TABLE5[size]
  return float(L.evaluate('cmr_law', dict(a=a, s=s, b=b), T=100.0))


@pytest.mark.parametrize('size', list(TABLE5))
def test_table5_cmr_at_t100(size):
  assert _published_cmr(size) == pytest.approx(TABLE5[size][3], abs=1e-4)


def test_table5_feasible_ratios():
  # R is feasible iff R <= CMR: 1/4 for every size, 1/3 for all but 460M.
  cmr = {k: _published_cmr(k) for k in TABLE5}
  assert all(0.25 <= c for c in cmr.values())
  assert [k for k, c in cmr.items() if 1 / 3 > c] == ['460M']


def test_table2_ratio_law_predicts_25_percent():
  ratios = np.array([1.0, 0.75, 0.5, 1 / 3])
  y = np.array([v[:4] for v in TABLE2.values()])
  res = L.fit_curves('ratio_law', {'R': np.broadcast_to(ratios, y.shape)}, y)
  assert res.converged_C.all()
  for i, (size, row) in enumerate(TABLE2.items()):
    p = res.params(i)
    pred = float(L.evaluate('ratio_law', p, R=0.25))
    assert abs(pred - row[4]) / row[4] < 5e-4, (size, pred)  # the paper: within 0.05 %
    assert abs(pred - row[4]) / row[4] < 1e-4, (size, pred)  # a careful fit: <= 0.01 %
    assert p['a'] < 0 and 0.15 < p['s'] < 0.21, (size, p)


def test_eq7_root_closed_form_two_terms():
  # With a3 = 0, g(T) = a1 s1 T^(s1-1) + lam a2 s2 T^(s2-1) vanishes at
  # T0 = (-a1 s1 / (lam a2 s2))^(1 / (s2 - s1)).
  dom = dict(a1=-0.1, s1=0.3, b1=0.0)
  gen = dict(a2=-0.01, s2=-0.5, a3=0.0, s3=0.2, b2=0.01)
  for lam in (20.0, 50.0, 100.0):
    want = (-dom['a1'] * dom['s1'] / (lam * gen['a2'] * gen['s2'])) ** (1 / (gen['s2'] - dom['s1']))
    t0, kind = L.eq7_root(dom, gen, lam=lam, t_lo=0.5, t_hi=100.0)
    assert kind == 0
    assert t0 == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize('ratio', [0.125, 0.3, 0.7])
def test_eq7_root_closed_form_synthetic_family(ratio):
  # The synthetic family has s2 - s3 = s1 - s3 = 1, so Eq. 7 is linear in T.
  dom, gen = synth.params(460e6, ratio)
  for lam in (100.0, 1000.0, 7000.0):
    t0, kind = L.eq7_root(dom, gen, lam=lam, t_lo=1.0, t_hi=1e4)
    assert kind == 0
    assert t0 == pytest.approx(synth.true_t0(460e6, ratio, lam), rel=1e-9)


def test_eq7_root_tends_to_turning_point():
  dom, gen = synth.params(940e6, 0.5)
  t = np.geomspace(1, 1e4, 200001)
  g = L.evaluate('eq6_gen', gen, T=t)
  turning = t[np.argmax(g)]
  t0 = [L.eq7_root(dom, gen, lam=lam, t_lo=1.0, t_hi=1e4)[0]
        for lam in (100.0, 1e3, 1e4, 1e6, 1e9)]
  assert np.all(np.diff(t0) > 0)
  assert t0[0] < 0.5 * turning
  assert t0[-1] == pytest.approx(turning, rel=1e-4)


def test_eq7_root_kinds():
  dom, gen = synth.params(460e6, 0.5)
  t_true = synth.true_t0(460e6, 0.5, 1000.0)
  assert L.eq7_root(dom, gen, lam=1000.0, t_lo=1.0, t_hi=t_true / 2) == (float('inf'), 2)
  assert L.eq7_root(dom, gen, lam=1000.0, t_lo=2 * t_true, t_hi=4 * t_true) == (2 * t_true, 1)


def test_t0_is_the_last_sign_change_before_the_budget():
  """Definition 2: T0 is where g = dF/dT last turns from > 0 to <= 0 before T_b, with g <= 0
  on [T0, T_b]; g > 0 at T_b means no critical point yet."""
  from mixlaw.laws import cmr
  with jax.enable_x64(True):
    g = lambda t: -(t - 2.0) * (t - 5.0) * (t - 9.0)  # + on (1,2), - (2,5), + (5,9), - > 9
    t0, kind = cmr.last_crossing(g, 1.0, 12.0)
    assert int(kind) == 0 and float(t0) == pytest.approx(9.0, rel=1e-6)
    assert int(cmr.last_crossing(g, 1.0, 7.0)[1]) == 2  # g(7) > 0: not (yet) feasible
    t0, kind = cmr.last_crossing(g, 1.0, 4.0)
    assert int(kind) == 0 and float(t0) == pytest.approx(2.0, rel=1e-6)
    t0, kind = cmr.last_crossing(g, 2.5, 4.5)  # g <= 0 throughout: passed before the first T
    assert int(kind) == 1 and float(t0) == 2.5
    # A dip at T_min, then a rise to T_b: the old first-crossing rule called this T0 = T_min.
    assert int(cmr.last_crossing(lambda t: t - 3.0, 1.0, 10.0)[1]) == 2


def test_eq6_curve_that_dips_then_rises_has_no_critical_point():
  """The committed demo's cpu_s R = 1 pattern: the general-loss fit dips below its first value,
  then climbs through T_max, so g < 0 at T_min but g > 0 from just after it to T_max."""
  dom = dict(a1=-0.05, s1=0.4, b1=0.0)
  gen = dict(a2=0.05, s2=0.3, a3=0.5, s3=-2.0, b2=-0.1)  # slope < 0 below T ~ 4.3, then > 0
  t = np.geomspace(1.0, 100.0, 2001)
  slope = np.gradient(L.evaluate('eq6_gen', gen, T=t), t)
  assert slope[0] < 0 < slope[-1] and np.all(np.diff(np.sign(slope)) >= 0)
  t0, kind = L.eq7_root(dom, gen, lam=1000.0, t_lo=1.0, t_hi=100.0)
  assert (t0, kind) == (float('inf'), 2)
  # ... and a rise that turns down before the budget: T0 is that (real) turn.
  gen_turn = dict(a2=-0.02, s2=0.5, a3=-0.5, s3=-0.5, b2=0.52)
  t0, kind = L.eq7_root(dom, gen_turn, lam=1000.0, t_lo=1.0, t_hi=100.0)
  assert kind == 0 and 1.0 < t0 < 100.0
