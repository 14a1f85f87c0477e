"""Every gin file in configs/ and experiments/ parses and builds what it describes."""

import glob
import os

import gin
import pytest

from mixlaw import ginsetup, model, optim, run, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.gin"), recursive=True)
                   + glob.glob(os.path.join(ROOT, "experiments", "*.gin")))
EXPERIMENTS = [f for f in GIN_FILES if "/experiments/" in f]


def _parse(path, bindings=()):
  gin.clear_config()
  ginsetup.setup([os.path.relpath(path, ROOT) if os.getcwd() == ROOT else path], list(bindings))


@pytest.mark.parametrize("path", GIN_FILES, ids=lambda p: os.path.relpath(p, ROOT))
def test_gin_file_parses(path):
  _parse(path)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: os.path.basename(p))
def test_experiment_builds_its_runs(path):
  _parse(path)
  specs = sweep.plan()
  assert specs and (specs[0].phase == "base") == (specs.base_workdir is None)
  data = run.DataConfig()
  for spec in specs:
    cfg = model.get_config(spec.size, vocab_size=8192)
    n = model.count_params(cfg)["non_embedding"]
    with gin.config_scope(run.scope_of(spec.phase)):
      phase = run.PhaseConfig()
      steps = phase.num_steps(n, data.seq_len)
      optimizer, schedule = optim.make_optimizer(total_steps=steps,
                                                 warmup_steps=phase.warmup_steps(steps))
    assert steps >= 1 and float(schedule(0)) > 0
    if spec.phase == "cpt" and "demo" not in path:  # >= 20 validation points per CPT run.
      assert steps // phase.eval_interval(steps) >= 20


def test_the_powered_cpu_experiment_meets_its_design_gates():
  """experiments/cmr_cpu.gin: >= 4 sizes over >= 16x non-embedding parameters, one base token
  budget for all, CPT >= 10% of it per run, the 7 ratios with R = 0, >= 2 CPT seeds, >= 20
  validation points per run; its pilot reuses its bases."""
  _parse(os.path.join(ROOT, "experiments", "cmr_cpu.gin"))
  specs, data = sweep.plan(), run.DataConfig()
  vocab = 1024
  sizes = list(dict.fromkeys(s.size for s in specs))
  n = [model.count_params(model.get_config(s, vocab_size=vocab))["non_embedding"] for s in sizes]
  assert len(sizes) >= 4 and max(n) / min(n) >= 16 and n == sorted(n)
  tokens = lambda s: run.phase_steps(s, data, vocab) * run.phase_config(s.phase).batch_size
  (base,) = {tokens(s) for s in specs if s.phase == "base"}
  cpt = [s for s in specs if s.phase == "cpt"]
  (cpt_tokens,) = {tokens(s) for s in cpt}
  assert cpt_tokens >= 0.1 * base
  assert sorted({s.ratio for s in cpt}) == [0.0, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0]
  assert {s.cpt_seed for s in cpt} == {0, 1} and specs.ensemble
  steps = run.phase_steps(cpt[0], data, vocab)
  assert steps // run.phase_config("cpt").eval_interval(steps) >= 20
  _parse(os.path.join(ROOT, "experiments", "cmr_cpu_pilot.gin"))
  pilot = sweep.plan()
  assert pilot.base_workdir and all(s.phase == "cpt" for s in pilot)
  assert {s.ratio for s in pilot} == {0.0, 1.0}


def test_default_eval_cadence_gives_50_to_99_validation_points():
  """The trainer evaluates at every multiple of the interval and at the last step (run.py): by
  default at least 50 evals per phase (the laws want >= 20 fitted ones) and never twice that
  (evals cost ~1/3 of a CPU run); an explicit eval_every wins."""
  gin.clear_config()
  for steps in (50, 120, 1000, 1049, 10_000):
    every = run.PhaseConfig(steps=steps).eval_interval(steps)
    evals = [t for t in range(1, steps + 1) if t % every == 0 or t == steps]
    assert 50 <= len(evals) < 100, (steps, every, len(evals))
  assert run.PhaseConfig(steps=1000, eval_every=7).eval_interval(1000) == 7
  assert run.PhaseConfig(steps=10).eval_interval(10) == 1  # every step of a short phase.


@pytest.mark.parametrize("domain", [None, "science"])
def test_paper_experiments_match_the_paper(domain):
  """experiments/paper.gin: Finance as is, Academic papers with the documented domain binding."""
  _parse(os.path.join(ROOT, "experiments", "paper.gin"),
         [f"DataConfig.domain = '{domain}'"] if domain else [])
  assert run.DataConfig().domain == (domain or "finance")
  assert sweep.fit_options()["tokens_per_unit"] == 2e8
  specs = sweep.plan()
  assert {s.size for s in specs} == {"paper_460m", "paper_940m", "paper_1.6b", "paper_3.1b"}
  ratios = sorted({s.ratio for s in specs if s.phase == "cpt"})
  assert ratios == pytest.approx([1 / 8, 1 / 4, 1 / 3, 1 / 2, 3 / 4, 1.0], abs=1e-4)
  with gin.config_scope("cpt"):
    phase = run.PhaseConfig()
    _, schedule = optim.make_optimizer(total_steps=10_000, warmup_steps=phase.warmup_steps(10_000))
  assert phase.steps == 10_000 and phase.batch_size == 512 and run.DataConfig().seq_len == 4096
  assert float(schedule(9_999)) == pytest.approx(3e-5)
  with gin.config_scope("pretrain"):
    assert run.PhaseConfig().steps == 100_000


@pytest.mark.parametrize("domain", [None, "science"])
def test_cpu_ladder_takes_its_domain_from_one_binding(domain):
  _parse(os.path.join(ROOT, "experiments", "cpu_ladder.gin"),
         [f"DataConfig.domain = '{domain}'"] if domain else [])
  data = run.DataConfig()
  assert (data.general, data.domain, data.vocab_name) == ("general", domain or "finance", "spm4k")
  assert {s.size for s in sweep.plan()} == {"cpu_xs", "cpu_s", "cpu_m", "cpu_l"}


def test_experiments_store_their_fit_options_as_gin_bindings():
  _parse(os.path.join(ROOT, "experiments", "demo_quick.gin"))
  assert sweep.fit_options() == {"n_boot": 20, "budget_fractions": (0.5, 1.0),
                                 "lfo_fractions": (0.5,)}
