"""Multi-process JAX on localhost: 2 processes x 2 CPU devices give the rows of 1 process x 4.

A sweep of one size (base run, then a K = 2 CPT ensemble) runs once in one process over 4 host
devices, and once as 2 processes (jax.distributed with a local coordinator) of 2 devices each,
killed with SIGKILL in the middle of CPT and started again. Batch = f(seed, step) holds for the
global batch, so both give the same results table to float tolerance; only process 0 writes it.
"""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from mixlaw import arrays, results, run

SEQ, VOCAB = 32, 64


def _rows(rng, n_rows, shift):
  flat = []
  while len(flat) < n_rows * SEQ:
    doc = (rng.integers(3, VOCAB // 2, size=int(rng.integers(5, 40))) * 2 + shift) % (VOCAB - 3)
    flat += (doc + 3).tolist() + [1]
  return np.asarray(flat[:n_rows * SEQ], np.int32).reshape(n_rows, SEQ)


@pytest.fixture(scope="module")
def arrays_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("arrays")
  rng, corpora = np.random.default_rng(0), {}
  for name, shift in (("gen", 0), ("dom", 1)):
    os.makedirs(d / name)
    for split, n in (("train", 200), ("validation", 8)):
      np.save(arrays.split_path(str(d), name, split), _rows(rng, n, shift))
    corpora[name] = {"train_rows": 200, "validation_rows": 8}
  (d / arrays.META_FILE).write_text(json.dumps(
      {"vocab_size": VOCAB, "seq_len": SEQ, "eos_id": 1, "pad_id": 0, "corpora": corpora}))
  return str(d)


def _command(arrays_dir, workdir):
  bindings = [
      f"DataConfig.arrays_dir='{arrays_dir}'", f"DataConfig.seq_len={SEQ}",
      "DataConfig.general='gen'", "DataConfig.domain='dom'", "DataConfig.max_validation_rows=8",
      "plan.sizes=['cpu_xs']", "plan.ratios=[0.5, 1.0]", "plan.ensemble=True",
      "pretrain/make_optimizer.peak_lr=3e-3", "cpt/make_optimizer.peak_lr=1e-3",
      "pretrain/PhaseConfig.steps=6", "cpt/PhaseConfig.steps=12",
      "pretrain/PhaseConfig.batch_size=8", "cpt/PhaseConfig.batch_size=8",
      "pretrain/PhaseConfig.eval_every=3", "cpt/PhaseConfig.eval_every=4",
      "pretrain/PhaseConfig.checkpoint_every=3", "cpt/PhaseConfig.checkpoint_every=3",
  ]
  return ([sys.executable, "-m", "mixlaw.cli", "sweep", "--workdir", str(workdir)]
          + [f"--gin.{b}" for b in bindings])


def _env(tmp_path, devices, process=None, port=None):
  env = dict(os.environ, MIXLAW_HUGE_PAGES="0", MIXLAW_XLA_CACHE=str(tmp_path / "xla"),
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(key, None)
  if process is not None:
    env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID=str(process))
  return env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start_pair(cmd, tmp_path, logs):
  port = _free_port()
  return [subprocess.Popen(cmd, env=_env(tmp_path, 2, i, port), stdout=subprocess.DEVNULL,
                           stderr=open(logs[i], "w")) for i in range(2)]


def _cpt_checkpointed(workdir, step) -> bool:
  st = run.read_status(str(workdir), run.RunSpec("cpu_xs", "cpt", 0.5))
  return st["state"] == "partial" and st.get("group") is not None and st["step"] >= step


@pytest.mark.slow
def test_two_processes_equal_one_process_through_kill_and_resume(arrays_dir, tmp_path):
  one, two = tmp_path / "one", tmp_path / "two"
  ref = subprocess.run(_command(arrays_dir, one), env=_env(tmp_path, 4), capture_output=True,
                       text=True, timeout=1800)
  assert ref.returncode == 0, ref.stderr[-3000:]

  cmd = _command(arrays_dir, two)
  logs = [tmp_path / f"p{i}.log" for i in range(2)]
  procs = _start_pair(cmd, tmp_path, logs)
  t0 = time.monotonic()
  try:
    while not _cpt_checkpointed(two, 3):  # Killed mid-CPT, after a group checkpoint.
      assert all(p.poll() is None for p in procs), [open(f).read()[-2000:] for f in logs]
      assert time.monotonic() - t0 < 1800, "no CPT checkpoint: the processes hang"
      time.sleep(0.05)
  finally:
    for p in procs:
      if p.poll() is None:
        os.kill(p.pid, signal.SIGKILL)
      p.wait()
  assert _cpt_checkpointed(two, 3) and not _cpt_checkpointed(two, 12)

  logs = [tmp_path / f"q{i}.log" for i in range(2)]
  procs = _start_pair(cmd, tmp_path, logs)
  for p, log in zip(procs, logs):
    assert p.wait(timeout=1800) == 0, open(log).read()[-3000:]
  resumed = [line for line in open(logs[0]) if line.startswith("resuming ")]
  assert len(resumed) == 1 and "rows after the checkpoint" in resumed[0], open(logs[0]).read()
  assert not any(line.startswith("resuming ") for line in open(logs[1]))

  raw = [json.loads(line) for line in open(results.table_path(str(two)))]
  keys = [(r["run_id"], r["step"], r["split"]) for r in raw]
  assert len(keys) == len(set(keys)), "rows written twice (by both processes?)"
  a, b = results.read_rows(str(one)), results.read_rows(str(two))
  assert [(r["run_id"], r["step"], r["split"]) for r in a] == \
         [(r["run_id"], r["step"], r["split"]) for r in b]
  assert {r["run_id"] for r in b} == {"base_cpu_xs", "cpt_cpu_xs_r0.5000_s0",
                                      "cpt_cpu_xs_r1.0000_s0"}
  for x, y in zip(a, b):
    for c in ("general_loss", "domain_loss"):
      assert (math.isnan(x[c]) and math.isnan(y[c])) or abs(x[c] - y[c]) <= 1e-5, (x, y)
  for r in ("base_cpu_xs", "cpt_cpu_xs_r0.5000_s0"):
    info = json.load(open(two / "runs" / r / "run.json"))
    assert info["state"] == "done" and info["versions"]["processes"] == 2
  leftovers = [f for _, _, fs in os.walk(two) for f in fs if ".tmp" in f]
  assert not leftovers, leftovers
