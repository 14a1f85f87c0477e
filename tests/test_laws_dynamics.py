"""The CPT learning-dynamics law (mixlaw/laws/dynamics.py) and its schedules (schedules.py).

Reference: Wang et al., "Learning Dynamics in Continual Pre-Training for Large Language Models"
(ICML 2025, arXiv 2505.07796). The paper publishes its fits as closed forms in figure captions
and no table of curve points, so the reference test reproduces published curves from published
parameters: its constant-LR distribution-shift fits in CPT steps (Fig. 2: D_pt
0.368 (1 - (0.008 t + 1)^-0.173), D_cpt 0.702 (1 - (1.345 t + 1)^-0.131)) from its Eq. 4 fits
in the forward area (Fig. 3: D_pt B = 0.366, E = 28, beta = 0.189; D_cpt B = -0.666,
E = 5662, beta = 0.146) with S1 accumulated at Setting A's peak LR of 2e-4 (Appendix B,
Table 1). The two are separate fits (Fig. 2 on constant-LR runs, Fig. 3 on WSD and cosine
runs), so they agree only to the precision of a fit; the law is read in raw learning-rate
units, as the paper's E values imply.
"""

import json

import numpy as np
import pytest

from mixlaw import optim
from mixlaw import workdir as workdir_lib
from mixlaw.laws import curves
from mixlaw.laws import dynamics as dyn
from mixlaw.laws import schedules as sch
from mixlaw.laws.options import FitError, FitOptions

BASE = sch.Schedule('cosine', 3e-3, 10, 400, 0.1)
CPT = sch.Schedule('constant', 3e-4, 2, 160, 0.1)
TPS = 1024.0  # tokens per CPT step of the synthetic runs.
RATIOS = (0.0, 0.25, 0.5, 0.75)
TRUTH = dict(  # PARAMS order; E as log10.
    general=np.array([2.5, 0.5, 0.6, 0.1, 0.05, 0.0, 0.3, 2.0, 0.5, -1.0]),
    domain=np.array([2.8, 0.6, 0.5, 0.1, 0.1, 0.0, -0.8, 2.5, 0.4, 2.0]))


def named(v):
  return dict(zip(dyn.PARAMS, v))


# ----------------------------------------------------------------------------- reference
def test_published_shift_in_forward_area_reproduces_the_published_step_form():
  """Fig. 3's S1-form shift under a constant 2e-4 LR gives Fig. 2's step-form curves."""
  s = sch.Schedule('constant', 2e-4, 0, 60000, 0.1)
  base = sch.Schedule('constant', 2e-4, 0, 10000, 0.1)
  steps = np.array([5000, 10000, 20000, 30000, 50000])
  x = dyn.grid_x(sch.RunSchedule(base, s, 1.0), steps, [1.0])
  np.testing.assert_allclose(x['s1_cpt'], 2e-4 * steps, rtol=1e-10)
  for which, fig3, fig2 in (('general', (0.366, 28.0, 0.189), (0.368, 0.008, 0.173)),
                            ('domain', (-0.666, 5662.0, 0.146), (0.702, 1.345, 0.131))):
    v = np.zeros(len(dyn.PARAMS))
    v[[6, 7, 8, 9]] = fig3[0], np.log10(fig3[1]), fig3[2], 1.0
    v[1], v[2] = 1.0, 0.5  # any hidden curve: it cancels below.
    v0 = v.copy()
    v0[6] = 0.0
    shift = dyn.losses({which: v}, x, which) - dyn.losses({which: v0}, x, which)
    step_form = fig2[0] * (1 - (fig2[1] * steps + 1.0) ** -fig2[2])
    np.testing.assert_allclose(np.abs(shift), step_form, atol=0.008)


def test_law_at_no_replay_is_eq4_with_the_published_fig3_parameters():
  """Wang et al. Eq. 4 (Fig. 3 D_pt fit: L0 3.057, A 0.490, alpha 0.497, B 0.366, E 28,
  beta 0.189, C1 0.299, C2 0.298), written out, equals the law at R = 1 with a1 = 0."""
  rng = np.random.default_rng(0)
  x = dict(s1_pt=rng.uniform(5, 12, 7), s2_pt=rng.uniform(0, 1, 7), s1_cpt=rng.uniform(0, 3, 7),
           s2_cpt=rng.uniform(-0.1, 1, 7), r=np.ones(7))
  eq4 = (3.057 + 0.490 * (x['s1_pt'] + x['s1_cpt']) ** -0.497 - 0.299 * x['s2_pt']
         - 0.298 * x['s2_cpt'] + 0.366 * (1 - (1 + 28 * x['s1_cpt']) ** -0.189))
  v = np.array([3.057, 0.490, 0.497, 0.299, 0.298, 0.0, 0.366, np.log10(28.0), 0.189, 2.0])
  np.testing.assert_allclose(dyn.losses({'general': v}, x, 'general'), eq4, rtol=1e-13)


def test_annealing_area_is_the_papers_double_sum():
  """S2 = sum_i sum_(k<=i) (eta_(k-1) - eta_k) lam^(i-k) (Wang et al. Sec. 3.1, after Tissue et
  al. Eq. 1), over the base's updates after its warmup and the CPT's (re-warmup included)."""
  base = sch.Schedule('cosine', 1e-3, 5, 60, 0.1)
  cpt = sch.Schedule('constant', 4e-4, 4, 30, 0.1)
  a = sch.areas(base, cpt.lrs(), lam=0.99)
  eta = np.concatenate([base.lrs(), cpt.lrs()])
  d = np.concatenate([[0.0], eta[:-1] - eta[1:]])
  d[:base.warmup + 1] = 0.0
  s2 = [sum(d[k] * 0.99 ** (i - k) for i in range(n) for k in range(i + 1))
        for n in range(eta.size + 1)]
  np.testing.assert_allclose(np.concatenate([a['s2_pt'], a['s2_pt'][-1] + a['s2_cpt'][1:]]), s2,
                             atol=1e-15)
  np.testing.assert_allclose(a['s1_cpt'][-1] + a['s1_pt'][-1], eta.sum(), rtol=1e-13)


# ----------------------------------------------------------------------------- schedules
@pytest.mark.parametrize('kind', sch.KINDS)
def test_schedule_is_the_trainers(kind):
  s = sch.Schedule(kind, 2e-3, 7, 90, 0.2)
  f = optim.make_schedule(s.peak, s.steps, s.warmup, s.kind, s.min_ratio)
  np.testing.assert_allclose(s.lrs(), np.asarray(f(np.arange(s.steps)), np.float64), rtol=2e-7)


GIN = """# Parameters for cpt/make_optimizer:
cpt/make_optimizer.min_lr_ratio = 0.1
cpt/make_optimizer.peak_lr = 0.0003
cpt/make_optimizer.schedule = 'constant'
pretrain/make_optimizer.peak_lr = 0.003
pretrain/make_optimizer.schedule = 'cosine'
"""


def _write_runs(tmp_path, cpt_gin=GIN):
  w = str(tmp_path)
  workdir_lib.write_run(w, 'base_cpu_2xs', dict(run_id='base_cpu_2xs', steps=400, warmup_steps=10,
                                                batch_size=4, seq_len=256), GIN)
  rid = workdir_lib.cpt_run_id('cpu_2xs', 0.25, 0)
  workdir_lib.write_run(w, rid, dict(run_id=rid, spec=dict(size='cpu_2xs'), steps=160,
                                     warmup_steps=2, batch_size=4, seq_len=256), cpt_gin)
  return w, rid


def _read(w, rid):
  text = open(workdir_lib.run_config_path(w, rid)).read()
  return workdir_lib.read_run(w, rid), text


def test_schedules_read_from_run_json_and_config_gin(tmp_path):
  w, rid = _write_runs(tmp_path)
  got, why = sch.from_runs({rid: _read(w, rid)}, {'cpu_2xs': _read(w, 'base_cpu_2xs')})
  assert why is None
  assert got[rid] == sch.RunSchedule(BASE, CPT, TPS)
  assert sch.RunSchedule.from_json(json.loads(json.dumps(got[rid].to_json()))) == got[rid]
  missing, why = sch.from_runs({rid: _read(w, rid)}, {})
  assert missing == {} and 'no run.json' in why


def test_schedule_disagreeing_with_the_logged_lr_is_an_error(tmp_path):
  w, rid = _write_runs(tmp_path, GIN.replace('0.0003', '0.0006'))
  got, _ = sch.from_runs({rid: _read(w, rid)}, {'cpu_2xs': _read(w, 'base_cpu_2xs')})
  logged = CPT.lrs()
  sch.check_logged(CPT, np.arange(1, 161), logged, rid)
  with pytest.raises(FitError, match='differs from the schedule'):
    sch.check_logged(got[rid].cpt, np.arange(1, 161), logged, rid)


# ----------------------------------------------------------------------------- synthetic
def synth_rows(seed=0, sigma=0.002, seed_sd=0.004, truth=TRUTH):
  """Results rows of a synthetic sweep following the law (schedules as columns, a CSV's)."""
  rng = np.random.default_rng(seed)
  rs = sch.RunSchedule(BASE, CPT, TPS)
  cols = dict(tokens_per_step=TPS, cpt_schedule=CPT.kind, cpt_peak_lr=CPT.peak,
              cpt_warmup_steps=CPT.warmup, cpt_steps=CPT.steps, cpt_min_lr_ratio=CPT.min_ratio,
              base_schedule=BASE.kind, base_peak_lr=BASE.peak, base_warmup_steps=BASE.warmup,
              base_steps=BASE.steps, base_min_lr_ratio=BASE.min_ratio)
  common = dict(size_name='s', n_params=1e6, n_params_nonemb=5e5, domain='d', **cols)
  a = sch.areas(BASE, np.zeros(0))
  rows = []
  st = np.arange(40, BASE.steps + 1, 40)
  z = np.zeros(st.size)
  x = dict(s1_pt=a['s1_pt'][st], s2_pt=a['s2_pt'][st], s1_cpt=z, s2_cpt=z, r=z)
  loss = {k: dyn.losses(truth, x, k) + sigma * rng.standard_normal(st.size) for k in truth}
  for i, s in enumerate(st):
    rows.append(dict(run_id='base_s', phase='base', ratio=0.0, step=int(s), tokens_seen=s * TPS,
                     split='validation', general_loss=float(loss['general'][i]),
                     domain_loss=float(loss['domain'][i]), cpt_seed=0,
                     warmup_steps=BASE.warmup, **common))
  steps = np.arange(0, CPT.steps + 1, 8)
  for r in RATIOS:
    for s in (0, 1):
      x = dyn.grid_x(rs, steps, [r])
      off = {k: seed_sd * rng.standard_normal() * steps / steps[-1] for k in truth}
      loss = {k: dyn.losses(truth, x, k) + off[k] + sigma * rng.standard_normal(steps.size)
              for k in truth}
      for i, st in enumerate(steps):
        rows.append(dict(run_id=f'cpt_s_r{r:.4f}_s{s}', phase='cpt', ratio=r, step=int(st),
                         tokens_seen=int(st) * TPS, split='validation',
                         general_loss=float(loss['general'][i]),
                         domain_loss=float(loss['domain'][i]), cpt_seed=s,
                         warmup_steps=CPT.warmup, **common))
  return rows


def synth_problem(rows):
  sweep = curves.load(rows, FitOptions())
  c = curves.columns(rows)
  run_ids = c['run_id'].astype(str)
  got, why = sch.from_columns(c, c['phase'].astype(str) == 'cpt', run_ids,
                              c['phase'].astype(str) == 'base')
  assert why is None
  return sweep.sizes[0], dyn.problem(sweep.sizes[0], got, sweep.tokens_per_unit)


def test_schedule_columns_missing_is_a_note_not_a_fit():
  rows = synth_rows()
  for r in rows:
    del r['cpt_peak_lr']
  c = curves.columns(rows)
  got, why = sch.from_columns(c, c['phase'].astype(str) == 'cpt', c['run_id'].astype(str),
                              c['phase'].astype(str) == 'base')
  assert got == {} and 'cpt_peak_lr' in why


def test_readings_base_and_control_are_one_fit():
  """With the hidden curve falling through CPT (replay alone lowers the general loss), the
  control reading of dL_gen is the base reading minus the R = 0 drift, so its condition-A CMR
  is at most the base reading's, and it sits where the control increment reaches eps."""
  _, prob = synth_problem(synth_rows(sigma=0.0, seed_sd=0.0))
  truth = {k: v for k, v in TRUTH.items()}
  inc = dyn.increments(truth, prob.base_loss, prob.schedule, [CPT.steps], [0.0, 0.5])
  drift = inc['general'][0, 0]
  assert drift < -0.01
  rd = dyn.readings(truth, prob.base_loss, prob.schedule, CPT.steps, eps=0.05, lam=100.0,
                    r_lo=0.0, r_hi=0.75)
  assert rd['control']['cmr_condition_A'] <= rd['base']['cmr_condition_A']
  eps = inc['general'][0, 1] - drift
  ctrl = dyn.readings(truth, prob.base_loss, prob.schedule, CPT.steps, eps=eps, lam=100.0,
                      r_lo=0.0, r_hi=0.75)['control']['cmr_condition_A']
  assert abs(ctrl - 0.5) < 1e-3  # control dL_gen(0.5) = base dL_gen(0.5) - drift.


@pytest.fixture(scope='module')
def fitted():
  size, prob = synth_problem(synth_rows())
  return size, prob, dyn.fit(prob, n_starts=8)


@pytest.mark.slow
def test_synthetic_recovery_with_noise(fitted):
  """A sweep drawn from the law with eval noise and seed offsets: both fits converge and
  predict the true increments at the last step within the noise."""
  size, prob, f = fitted
  assert all(f.converged(k) for k in dyn.WHICH), [f.flags(k) for k in dyn.WHICH]
  want = dyn.predicted_final(dataclasses_replace(f, TRUTH))
  got = dyn.predicted_final(f)
  for k in dyn.WHICH:
    np.testing.assert_allclose(got[k], want[k], atol=0.006)
    assert f.rmse[k] < 0.004


def dataclasses_replace(f, params):
  import dataclasses
  return dataclasses.replace(f, params=params)


@pytest.mark.slow
def test_leave_future_out_sees_no_future(fitted):
  """The cut fit uses the base evals and the CPT evals up to the cut only: changing every
  later eval changes nothing."""
  size, prob, _ = fitted
  w = dyn.cut_weights(prob, 0.5)
  assert np.all(w[prob.run < 0] == 1)
  assert np.all((w == 0) == (prob.cpt & (prob.step > 80)))
  f1 = dyn.fit(prob, w, n_starts=8)
  moved = dataclasses_y(prob, w)
  f2 = dyn.fit(moved, w, n_starts=8)
  for k in dyn.WHICH:
    np.testing.assert_array_equal(f1.params[k], f2.params[k])
  full = dyn.fit(moved, n_starts=8)
  assert not np.allclose(full.params['general'], f1.params['general'])


def dataclasses_y(prob, w):
  import dataclasses
  y = {k: np.where(w > 0, v, v + 0.3) for k, v in prob.y.items()}
  return dataclasses.replace(prob, y=y)


def _section(boot_sd=0.0, n_boot=0):
  rng = np.random.default_rng(1)
  rs = sch.RunSchedule(BASE, CPT, TPS)
  _, prob = synth_problem(synth_rows(sigma=0.0, seed_sd=0.0))
  boot = {k: (v + boot_sd * rng.standard_normal((n_boot, v.size)) * np.abs(v)).tolist()
          for k, v in TRUTH.items()}
  size = dict(size='s', N=5e5, schedule=rs.to_json(), base_general_loss=prob.base_loss['general'],
              base_domain_loss=prob.base_loss['domain'], ratios=list(RATIOS),
              t_max_step=CPT.steps, vector={k: v.tolist() for k, v in TRUTH.items()}, boot=boot)
  return dict(reason=None, eps=0.05, lam=1000.0, level=0.95, sizes=[size]), prob


def test_predict_answers_at_another_cpt_learning_rate():
  """`mixlaw predict --cpt-lr`: the stored fit at the trained LR gives the fit's own reading;
  another LR is a different schedule (flagged as an extrapolation); a size not fitted is a
  reason, not a number."""
  from mixlaw.laws import dynjson
  sec, prob = _section(boot_sd=0.02, n_boot=20)
  same = dynjson.predict(sec, 5e5, CPT.steps * TPS)
  want = dyn.readings(TRUTH, prob.base_loss, prob.schedule, CPT.steps, 0.05, 1000.0, 0.0, 0.75)
  assert same['base']['cmr_condition_A'] == pytest.approx(float(want['base']['cmr_condition_A']))
  assert not same['extrapolated_lr'] and not same['extrapolated_budget']
  assert same['base']['n_ok'] == 20 and same['base']['condition_A_lo'] is not None
  half = dynjson.predict(sec, 5e5, CPT.steps * TPS, cpt_lr=CPT.peak / 2)
  assert half['extrapolated_lr'] and half['cpt_lr'] == CPT.peak / 2
  assert half['base']['cmr_condition_A'] != same['base']['cmr_condition_A']
  longer = dynjson.predict(sec, 5e5, 2 * CPT.steps * TPS)
  assert longer['extrapolated_budget'] and longer['step'] == 2 * CPT.steps
  assert 'EXTRAPOLATES in budget' in dynjson.format_lines(longer)[0]
  other = dynjson.predict(sec, 1e9, CPT.steps * TPS)
  assert other['cmr'] is None and 'trained size' in other['reason']
