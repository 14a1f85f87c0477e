"""The `mixlaw` command: bad input gets one clear line and exit status 2, nothing computed."""

import dataclasses
import json
import os
import platform
import sys

import gin
import numpy as np
import pytest

from mixlaw import arrays, cli
from mixlaw.laws import FitOptions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(capsys, *argv):
  gin.clear_config()
  rc = cli.main(list(argv))
  out = capsys.readouterr()
  return rc, out.out, out.err


@pytest.mark.parametrize("argv, message", [
    (["train", "--workdir", "W", "--gin.single.size='cpu_huge'"], "unknown model size 'cpu_huge'"),
    (["train", "--workdir", "W", "--gin.single.size='cpu_xs'", "--gin.single.phase='cpt'",
      "--gin.single.ratio=1.5"], "[0, 1]"),
    (["train", "--workdir", "W", "--gin.single.size='cpu_xs'", "--gin.single.phase='cpt'",
      "--gin.single.ratio=0.5"], "base checkpoint"),
    (["sweep", "--workdir", "W", "--gin_file=experiments/nope.gin"], "gin file not found"),
    (["fit", "--workdir", "W"], "results.jsonl not found"),
    (["report", "--workdir", "W"], "run a sweep first"),
    (["fit-form", "--form", "nope", "--csv", "x.csv"], "nope"),
    (["fit-form", "--list", "--gin.x=1"], "gin flags do not apply to fit-form"),
    (["fit", "--workdir", "W", "--gin.nosuch.x=1"], "No configurable matching 'nosuch'"),
    (["fit", "--workdir", "W", "--gin.FitOptions.nboot=1"], "nboot"),
    (["data", "export", "--gin_file=experiments/nope.gin"], "gin file not found"),
    (["data", "export", "--gin.DataConfig.seq_len=1"], "DataConfig.seq_len must be"),
    (["corpora", "build", "--gin.DataConfig.backend='tf'"], "DataConfig.backend must be"),
])
def test_bad_input_is_one_clear_line(capsys, tmp_path, argv, message):
  argv = [str(tmp_path / "w") if a == "W" else a for a in argv]
  os.makedirs(tmp_path / "w", exist_ok=True)
  rc, _, err = _run(capsys, *argv)
  assert rc == 2
  assert err.startswith("mixlaw: error:") and message in err
  assert "Traceback" not in err
  assert not os.path.exists(tmp_path / "w" / "runs")  # Nothing was trained.


@pytest.fixture(scope="module")
def arrays_dir(tmp_path_factory):
  """Tiny exported arrays (two corpora of random rows) for runs that stop before training."""
  d = tmp_path_factory.mktemp("arrays")
  rng = np.random.default_rng(0)
  for name in ("gen", "dom"):
    os.makedirs(d / name)
    for split, n in (("train", 64), ("validation", 8)):
      np.save(arrays.split_path(str(d), name, split), rng.integers(3, 60, (n, 16)).astype(np.int32))
  (d / arrays.META_FILE).write_text(json.dumps({"vocab_size": 64, "seq_len": 16, "eos_id": 1,
                                                "corpora": {"gen": {}, "dom": {}}}))
  return str(d)


@pytest.mark.parametrize("binding, message", [
    # Optimizer values: a one-line OptimError, before any step.
    ("pretrain/make_optimizer.schedule='linear'", "make_optimizer.schedule must be one of"),
    ("pretrain/make_optimizer.peak_lr=-0.1", "make_optimizer.peak_lr must be a number > 0"),
    ("pretrain/make_optimizer.b2=1.5", "b2=1.5"),
    # Model values: ModelError (reported through the run spec's check).
    ("get_config.n_heads=5", "not divisible by n_heads=5"),
    ("get_config.dtype='float33'", "ModelConfig.dtype must be"),
    ("get_config.n_experts=4", "unknown ModelConfig field"),
    # Mesh values: MeshError from the mesh, RunError from MeshConfig and the batch split.
    ("MeshConfig.tensor=3", "devices do not split into mesh"),
    ("MeshConfig.fsdp=0", "MeshConfig.fsdp must be -1 or an integer >= 1"),
    ("MeshConfig.num_devices=99", "MeshConfig.num_devices = 99"),
    ("pretrain/PhaseConfig.batch_size=3", "must be a multiple of the mesh's data x fsdp"),
    # Phase values.
    ("pretrain/PhaseConfig.warmup_frac=1.5", "PhaseConfig.warmup_frac must lie in [0, 1)"),
])
def test_bad_values_are_one_line_errors_before_training(capsys, tmp_path, arrays_dir, binding,
                                                        message):
  rc, _, err = _run(capsys, "train", "--workdir", str(tmp_path / "w"),
                    f"--gin.DataConfig.arrays_dir='{arrays_dir}'", "--gin.DataConfig.seq_len=16",
                    "--gin.DataConfig.general='gen'", "--gin.DataConfig.domain='dom'",
                    "--gin.DataConfig.max_validation_rows=8", "--gin.single.size='cpu_2xs'",
                    "--gin.pretrain/make_optimizer.peak_lr=1e-3",
                    "--gin.pretrain/PhaseConfig.steps=4", "--gin.pretrain/PhaseConfig.batch_size=4",
                    "--gin.MeshConfig.num_devices=2", f"--gin.{binding}")
  assert rc == 2, err
  assert err.startswith("mixlaw: error:") and message in err, err
  assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
  assert not os.path.exists(tmp_path / "w" / "runs")  # Nothing was trained.


def test_fit_has_a_flag_for_every_fit_option():
  fit = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices.items()
             if a[0] == "fit")[1]
  dests = {a.dest for a in fit._actions}
  assert {f.name for f in dataclasses.fields(FitOptions)} <= dests
  args = cli.build_parser().parse_args(
      ["fit", "--workdir", "W", "--ci-level", "0.9", "--tokens_per_unit", "auto", "--n-boot", "7",
       "--surface", "false", "--domain", "finance", "--tokens-per-unit", "2e8"])
  assert (args.ci_level, args.tokens_per_unit, args.n_boot, args.surface, args.domain,
          args.eps) == (0.9, 2e8, 7, False, "finance", None)


def test_fit_form_list_and_csv(capsys, tmp_path):
  rc, out, _ = _run(capsys, "fit-form", "--list")
  forms = {json.loads(l)["name"] for l in out.splitlines()}
  assert rc == 0 and {"power", "eq6_dom", "eq6_gen", "ratio_law", "cmr_law", "dcpt", "dml_exp",
                      "bimix", "chinchilla"} <= forms
  csv = tmp_path / "points.csv"  # Paper Table 2, 460M: loss against R.
  csv.write_text("R,loss\n1.0,1.4628\n0.75,1.4844\n0.5,1.5122\n0.3333,1.5387\n0.25,1.5561\n")
  rc, out, _ = _run(capsys, "fit-form", "--form", "ratio_law", "--csv", str(csv))
  res = json.loads(out)
  assert rc == 0 and res["form"] == "ratio_law" and set(res["params"]) == {"a", "s", "b"}
  assert res["params"]["a"] < 0 and res["r2"] > 0.999 and res["converged"]


def _restarts(monkeypatch, argv, libc=('glibc', '2.36'), explicit=False, **env):
  """The execve calls `cli.main()` makes for a process started with argv and env on a Linux host
  with the given C library (main stops before running any command)."""
  calls = []

  def fake_execve(path, args, environ):
    calls.append((args, environ))
    raise SystemExit(0)

  def stop_before_running(**kw):  # main parses arguments after the restart check: run nothing
    raise SystemExit(0)

  monkeypatch.setattr(os, 'execve', fake_execve)
  monkeypatch.setattr(cli, 'build_parser', stop_before_running)
  monkeypatch.setattr(platform, 'libc_ver', lambda: libc)
  monkeypatch.setattr(sys, 'platform', 'linux')
  monkeypatch.setattr('sys.argv', ['mixlaw'] + argv)
  monkeypatch.delenv('GLIBC_TUNABLES', raising=False)
  monkeypatch.delenv('MIXLAW_HUGE_PAGES', raising=False)
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  try:
    cli.main(argv if explicit else None)
  except SystemExit:
    pass
  return calls


def test_training_commands_restart_once_on_huge_pages(monkeypatch):
  # A training command restarts itself with malloc on huge pages, same arguments.
  argv = ['sweep', '--workdir', '/nonexistent', '--gin.plan.sizes=["cpu_xs"]']
  (args, env), = _restarts(monkeypatch, argv)
  # -P: the current directory is not on sys.path, so a `mixlaw/` folder there is never run.
  assert args[1:4] == ['-P', '-m', 'mixlaw.cli'] and args[4:] == argv
  assert 'glibc.malloc.hugetlb=1' in env['GLIBC_TUNABLES']
  # Never twice (the restarted process has the tunable), never when turned off, never without
  # glibc, never for commands that do not train, never for in-process calls with arguments.
  assert not _restarts(monkeypatch, argv, GLIBC_TUNABLES='glibc.malloc.hugetlb=1')
  assert not _restarts(monkeypatch, argv, MIXLAW_HUGE_PAGES='0')
  assert not _restarts(monkeypatch, argv, libc=('', ''))
  assert not _restarts(monkeypatch, ['fit-form', '--list'])
  assert not _restarts(monkeypatch, argv, explicit=True)
