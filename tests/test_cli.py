"""The `mixlaw` command: bad input gets one clear line and exit status 2, nothing computed."""

import json
import os
import platform
import sys

import gin
import pytest

from mixlaw import cli

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
    (["fit", "--workdir", "W", "--gin.x=1"], "gin flags apply to train and sweep"),
])
def test_bad_input_is_one_clear_line(capsys, tmp_path, argv, message):
  argv = [str(tmp_path / "w") if a == "W" else a for a in argv]
  os.makedirs(tmp_path / "w", exist_ok=True)
  rc, _, err = _run(capsys, *argv)
  assert rc == 2
  assert err.startswith("mixlaw: error:") and message in err
  assert "Traceback" not in err
  assert not os.path.exists(tmp_path / "w" / "runs")  # Nothing was trained.


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

  def stop_before_running():  # main parses arguments after the restart check: run nothing
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
  assert args[1:3] == ['-m', 'mixlaw.cli'] and args[3:] == argv
  assert 'glibc.malloc.hugetlb=1' in env['GLIBC_TUNABLES']
  # Never twice (the restarted process has the tunable), never when turned off, never without
  # glibc, never for commands that do not train, never for in-process calls with arguments.
  assert not _restarts(monkeypatch, argv, GLIBC_TUNABLES='glibc.malloc.hugetlb=1')
  assert not _restarts(monkeypatch, argv, MIXLAW_HUGE_PAGES='0')
  assert not _restarts(monkeypatch, argv, libc=('', ''))
  assert not _restarts(monkeypatch, ['fit-form', '--list'])
  assert not _restarts(monkeypatch, argv, explicit=True)
