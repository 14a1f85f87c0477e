"""Runs and sweeps: the full results table, resumption after kill -9, clear errors before compute.

Trains tiny models on synthetic packed arrays (no TensorFlow): the trainer's TF-free path.
"""

import json
import math
import os
import signal
import subprocess
import sys
import re
import time

import gin
import jax
import numpy as np
import pytest

from mixlaw.errors import MixlawError
from mixlaw import arrays, checkpoint, model, optim, results, run, sharding, sweep, train

SEQ, VOCAB = 32, 64


def _markov_rows(rng, n_rows, vocab, shift):
  """Packed rows of synthetic 'documents' (eos = 1 ends each), two distinguishable sources."""
  flat, out = [], []
  while len(flat) < n_rows * SEQ:
    n = int(rng.integers(5, 60))
    doc = (rng.integers(3, vocab // 2, size=n) * 2 + shift) % (vocab - 3) + 3
    flat += doc.tolist() + [1]
  return np.asarray(flat[:n_rows * SEQ], np.int32).reshape(n_rows, SEQ)


@pytest.fixture(scope="module")
def arrays_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("arrays")
  rng = np.random.default_rng(0)
  corpora = {}
  for name, shift, n in (("gen", 0, 400), ("dom", 1, 400)):
    for split, rows in (("train", n), ("validation", 12)):
      os.makedirs(d / name, exist_ok=True)
      np.save(arrays.split_path(str(d), name, split), _markov_rows(rng, rows, VOCAB, shift))
    corpora[name] = {"train_rows": n, "validation_rows": 12}
  with open(d / arrays.META_FILE, "w") as f:
    json.dump({"vocab_size": VOCAB, "seq_len": SEQ, "eos_id": 1, "pad_id": 0,
               "corpora": corpora}, f)
  return str(d)


def _bindings(arrays_dir, sizes=("cpu_xs", "cpu_s"), ratios=(0.25, 1.0), base_steps=6,
              cpt_steps=4, extra=()):
  return [
      f"DataConfig.arrays_dir = '{arrays_dir}'", f"DataConfig.seq_len = {SEQ}",
      "DataConfig.general = 'gen'", "DataConfig.domain = 'dom'",
      "DataConfig.max_validation_rows = 8",
      f"plan.sizes = {list(sizes)}", f"plan.ratios = {list(ratios)}",
      "pretrain/make_optimizer.peak_lr = 3e-3", "cpt/make_optimizer.peak_lr = 1e-3",
      "cpt/make_optimizer.schedule = 'constant'",
      f"pretrain/PhaseConfig.steps = {base_steps}", f"cpt/PhaseConfig.steps = {cpt_steps}",
      "pretrain/PhaseConfig.batch_size = 8", "cpt/PhaseConfig.batch_size = 8",
      "pretrain/PhaseConfig.eval_every = 2", "cpt/PhaseConfig.eval_every = 2",
      "pretrain/PhaseConfig.checkpoint_every = 3", "cpt/PhaseConfig.checkpoint_every = 3",
      "MeshConfig.num_devices = 2", *extra,
  ]


def _configure(bindings):
  gin.clear_config()
  gin.parse_config_files_and_bindings([], bindings, finalize_config=False)


def _keys(rows):
  return [(r["run_id"], r["step"], r["split"]) for r in rows]


def _cpt_checkpointed(workdir, spec, step) -> bool:
  st = run.read_status(str(workdir), spec)
  return st["state"] == "partial" and st["step"] >= step


def _wait_for(proc, ready, timeout_s: float) -> None:
  """Polls until ready(); fails if the process ends first or nothing happens in timeout_s."""
  t0 = time.monotonic()
  while not ready():
    if proc.poll() is not None:
      pytest.fail("the sweep ended before it could be killed; make it longer")
    if time.monotonic() - t0 > timeout_s:
      pytest.fail(f"no CPT checkpoint after {timeout_s} s: the run hangs")
    time.sleep(0.02)


def test_tiny_sweep_produces_full_table_and_rerun_is_noop(arrays_dir, tmp_path):
  _configure(_bindings(arrays_dir))
  sweep.execute(str(tmp_path), show_progress=False)
  rows = results.read_rows(str(tmp_path))
  by_run = {}
  for r in rows:
    by_run.setdefault(r["run_id"], []).append(r)
  assert sorted(by_run) == sorted(["base_cpu_xs", "base_cpu_s", "cpt_cpu_xs_r0.2500_s0",
                                   "cpt_cpu_xs_r1.0000_s0", "cpt_cpu_s_r0.2500_s0",
                                   "cpt_cpu_s_r1.0000_s0"])
  for run_id, rs in by_run.items():
    steps = 6 if run_id.startswith("base") else 4
    train = sorted(r["step"] for r in rs if r["split"] == "train")
    val = sorted(r["step"] for r in rs if r["split"] == "validation")
    assert train == list(range(1, steps + 1)), run_id
    assert val == list(range(0, steps + 1, 2)), run_id
    for r in rs:
      assert r["tokens_seen"] == r["step"] * 8 * SEQ
      assert r["n_params_nonemb"] > 0 and r["n_params"] > r["n_params_nonemb"]
      if r["split"] == "validation":
        assert math.isfinite(r["general_loss"]) and math.isfinite(r["domain_loss"])
  # CPT starts from the base model: its step-0 validation losses equal the base's final ones.
  base_final = [r for r in by_run["base_cpu_s"] if r["split"] == "validation" and r["step"] == 6][0]
  for ratio in ("0.2500", "1.0000"):
    cpt0 = [r for r in by_run[f"cpt_cpu_s_r{ratio}_s0"] if r["split"] == "validation" and r["step"] == 0][0]
    assert cpt0["general_loss"] == pytest.approx(base_final["general_loss"], abs=1e-6)
    assert cpt0["domain_loss"] == pytest.approx(base_final["domain_loss"], abs=1e-6)
  # Run facts come from what the run wrote: every row carries its run's warmup length, and
  # train and validation rows of a step carry the same lr (the schedule's).
  for run_id, rs in by_run.items():
    info = json.load(open(tmp_path / "runs" / run_id / "run.json"))
    assert {r["warmup_steps"] for r in rs} == {info["warmup_steps"]} == {1}, run_id
    lr = {}
    for r in rs:
      assert lr.setdefault(r["step"], r["lr"]) == r["lr"], (run_id, r["step"])
    assert lr[0] == lr[1]  # step 0: the first update's lr
  # R = 1 trains on domain rows only: its train rows have no general loss.
  r1 = [r for r in by_run["cpt_cpu_xs_r1.0000_s0"] if r["split"] == "train"]
  assert all(math.isnan(r["general_loss"]) and math.isfinite(r["domain_loss"]) for r in r1)
  # Self-describing workdir, operative config and versions per run.
  assert all(s["state"] == "done" for s in sweep.status(str(tmp_path)))
  info = json.load(open(tmp_path / "runs" / "cpt_cpu_s_r0.2500_s0" / "run.json"))
  assert info["versions"]["jax"] and info["spec"]["seed"] == 0
  assert "cpt/make_optimizer.peak_lr = 0.001" in open(
      tmp_path / "runs" / "cpt_cpu_s_r0.2500_s0" / "config.gin").read()
  # Rerunning the finished sweep changes nothing.
  before = open(results.table_path(str(tmp_path))).read()
  sweep.execute(str(tmp_path), show_progress=False)
  assert open(results.table_path(str(tmp_path))).read() == before


@pytest.mark.slow
@pytest.mark.parametrize("ensemble", [False, True])
def test_kill_and_resume_matches_uninterrupted_run(arrays_dir, tmp_path, ensemble):
  """kill -9 in the middle of CPT (a single run, or a 2-member ensemble), then rerun: the same rows
  as an uninterrupted sweep, nothing duplicated or missing."""
  bindings = _bindings(arrays_dir, sizes=("cpu_xs",), ratios=(0.5,), base_steps=12, cpt_steps=30,
                       extra=(f"plan.ensemble = {ensemble}", "plan.cpt_seeds = [0, 1]"))
  clean, killed = tmp_path / "clean", tmp_path / "killed"
  _configure(bindings)
  sweep.execute(str(clean), show_progress=False)

  cmd = [sys.executable, "-m", "mixlaw.cli", "sweep", "--workdir", str(killed)]
  cmd += [f"--gin.{b.replace(' = ', '=', 1)}" for b in bindings]
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first = run.RunSpec("cpu_xs", "cpt", 0.5, cpt_seed=0)
  # Synchronised on the run's own progress: kill once its CPT checkpoint at step >= 6 is on disk
  # (the generous timeout only guards against a hung run; it never decides when to kill).
  try:
    _wait_for(proc, lambda: _cpt_checkpointed(killed, first, 6), timeout_s=3600)
  except Exception:
    proc.kill()
    raise
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  state = run.read_status(str(killed), first)
  assert state["state"] == "partial" and 0 < state["step"] < 30
  assert (state["group"] is not None) == ensemble
  status = sweep.format_status(sweep.status(str(killed)))
  assert re.search(r"cpt_cpu_xs_r0.5000_s1\s+0.5000\s+1\s", status), status

  rc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)  # (hung run)
  assert rc.returncode == 0, rc.stderr[-2000:]
  raw = [json.loads(l) for l in open(results.table_path(str(killed)))]
  assert len(_keys(raw)) == len(set(_keys(raw))), "duplicate rows in the results table"
  a, b = results.read_rows(str(clean)), results.read_rows(str(killed))
  assert _keys(a) == _keys(b)
  assert {r["cpt_seed"] for r in b if r["phase"] == "cpt"} == {0, 1}
  for x, y in zip(a, b):
    for c in ("general_loss", "domain_loss"):
      assert (math.isnan(x[c]) and math.isnan(y[c])) or abs(x[c] - y[c]) <= 1e-6, (x, y)


@pytest.mark.slow
def test_ensemble_member_equals_the_run_trained_alone(arrays_dir, tmp_path):
  """Same base, same batches: an ensemble member's losses equal the single run's within 1e-5
  for the first 20 steps and 1e-3 after 100; CPT seeds give different data orders."""
  rows = {}
  for ens in (True, False):
    _configure(_bindings(arrays_dir, sizes=("cpu_xs",), ratios=(0.25, 1.0), base_steps=6,
                         cpt_steps=100, extra=(f"plan.ensemble = {ens}", "plan.cpt_seeds = [0, 3]",
                                               "cpt/PhaseConfig.eval_every = 50",
                                               "cpt/PhaseConfig.checkpoint_every = 100")))
    sweep.execute(str(tmp_path / str(ens)), show_progress=False)
    rows[ens] = {(r["run_id"], r["step"], r["split"]): r for r in results.read_rows(
        str(tmp_path / str(ens)))}
  assert rows[True].keys() == rows[False].keys()
  groups = json.load(open(tmp_path / "True" / "sweep.json"))["groups"]
  assert [len(g) for g in groups] == [1, 4]
  for key, r in rows[True].items():
    tol = 1e-5 if key[1] <= 20 else 1e-3
    for c in ("general_loss", "domain_loss"):
      x, y = r[c], rows[False][key][c]
      assert (math.isnan(x) and math.isnan(y)) or abs(x - y) <= tol, (key, c, x, y)
  a = [rows[True][("cpt_cpu_xs_r0.2500_s0", s, "train")]["domain_loss"] for s in range(1, 21)]
  b = [rows[True][("cpt_cpu_xs_r0.2500_s3", s, "train")]["domain_loss"] for s in range(1, 21)]
  assert a != b  # Seeds 0 and 3 see different batches from the same base model.


def test_a_member_that_turns_nan_stops_only_itself(arrays_dir, tmp_path, monkeypatch):
  from mixlaw import ensemble
  real = ensemble.state_from_params

  def poisoned(*args, **kwargs):  # Member 1 starts from non-finite parameters.
    state = real(*args, **kwargs)
    return state._replace(params=jax.tree.map(lambda x: x.at[1].set(np.nan), state.params))

  monkeypatch.setattr(ensemble, "state_from_params", poisoned)
  _configure(_bindings(arrays_dir, sizes=("cpu_xs",), ratios=(0.25, 0.5, 1.0), cpt_steps=6))
  sweep.execute(str(tmp_path), show_progress=False)
  status = {s["run_id"]: s["state"] for s in sweep.status(str(tmp_path))}
  assert status == {"base_cpu_xs": "done", "cpt_cpu_xs_r0.2500_s0": "done",
                    "cpt_cpu_xs_r0.5000_s0": "failed", "cpt_cpu_xs_r1.0000_s0": "done"}
  info = json.load(open(tmp_path / "runs" / "cpt_cpu_xs_r0.5000_s0" / "run.json"))
  assert "non-finite" in info["error"]
  rows = results.read_rows(str(tmp_path))
  assert not [r for r in rows if r["run_id"] == "cpt_cpu_xs_r0.5000_s0" and r["split"] == "train"]
  for rid in ("cpt_cpu_xs_r0.2500_s0", "cpt_cpu_xs_r1.0000_s0"):
    train_rows = [r for r in rows if r["run_id"] == rid and r["split"] == "train"]
    assert len(train_rows) == 6 and all(math.isfinite(r["domain_loss"]) for r in train_rows)
  # Rerunning skips the finished group; the failed member stays failed.
  before = open(results.table_path(str(tmp_path))).read()
  sweep.execute(str(tmp_path), show_progress=False)
  assert open(results.table_path(str(tmp_path))).read() == before


def test_bad_inputs_fail_before_compute(arrays_dir, tmp_path):
  _configure(_bindings(arrays_dir, sizes=("cpu_huge",)))
  with pytest.raises(run.RunError, match="unknown model size 'cpu_huge'"):
    sweep.execute(str(tmp_path), show_progress=False)
  _configure(_bindings(arrays_dir, ratios=(0.5, 1.5)))
  with pytest.raises(run.RunError, match=r"\[0, 1\]"):
    sweep.execute(str(tmp_path), show_progress=False)
  _configure(_bindings(arrays_dir, extra=("plan.cpt_seeds = [0, 0]",)))
  with pytest.raises(run.RunError, match="cpt_seeds"):
    sweep.execute(str(tmp_path), show_progress=False)
  _configure(_bindings(arrays_dir))
  with pytest.raises(run.RunError, match="base checkpoint"):
    run.execute(run.RunSpec("cpu_xs", "cpt", 0.5), str(tmp_path))
  _configure(_bindings(arrays_dir, extra=("member_loop.loop = 'pmap'",)))
  with pytest.raises(MixlawError, match="member_loop.loop must be"):
    sweep.execute(str(tmp_path), show_progress=False)
  _configure(_bindings(arrays_dir) + ["DataConfig.domain = 'nope'"])
  with pytest.raises(run.RunError, match="nope"):
    sweep.execute(str(tmp_path), show_progress=False)
  assert not os.path.exists(tmp_path / "runs")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(arrays_dir, tmp_path):
  _configure(_bindings(arrays_dir, base_steps=40, extra=(
      "pretrain/make_optimizer.peak_lr = 1e12", "pretrain/make_optimizer.clip_norm = None",
      "pretrain/PhaseConfig.checkpoint_every = 1", "pretrain/PhaseConfig.keep_checkpoints = 1")))
  spec = run.RunSpec("cpu_xs", "base")
  with pytest.raises(train.NonFiniteLossError, match=r"at step (\d+)") as err:
    run.execute(spec, str(tmp_path))
  failed_at = int(re.search(r"at step (\d+)", str(err.value)).group(1))
  # run.json says the run failed, why, and where its last good checkpoint is; a rerun does not
  # retry it (the same settings would fail the same way).
  state = run.read_status(str(tmp_path), spec)
  assert state["state"] == "failed" and "non-finite" in state["error"]
  assert 0 < state["step"] < failed_at
  assert run.execute(spec, str(tmp_path))["state"] == "failed"
  # The kept checkpoint restores, with finite parameters and its data position.
  cfg = model.get_config("cpu_xs", vocab_size=VOCAB)
  tx, _ = optim.make_optimizer(peak_lr=1.0, total_steps=40, warmup_steps=1, clip_norm=None)
  mesh = sharding.make_mesh(devices=jax.devices()[:2])
  ckpt = checkpoint.Checkpointer(tmp_path / "runs" / spec.run_id / "checkpoints")
  restored, position = ckpt.restore(train.abstract_state(cfg, tx, mesh))
  ckpt.close()
  assert position["step"] == state["step"]
  assert all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree.leaves(restored.params))
