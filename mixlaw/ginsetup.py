"""gin at every stage: t5x-style flags, config search paths, the configurables a gin file names.

Every `mixlaw` command that has settings takes them from gin: `--gin_file=F` and
`--gin.NAME=VALUE` (both repeatable, t5x style; the CLI splits them off, `setup` parses them).
Importing this module registers every configurable (the trainer's, `sweep.plan` and the laws'
`FitOptions`), so it sits above the laws and below `demo` and `cli`, which both use it (and not
each other).
"""

from __future__ import annotations

import logging
import os
import re

import gin

from mixlaw import config  # noqa: F401  (DataConfig, PhaseConfig, MeshConfig, single)
from mixlaw import ensemble  # noqa: F401  (member_loop)
from mixlaw import model  # noqa: F401  (ModelConfig, get_config)
from mixlaw import optim  # noqa: F401  (make_optimizer)
from mixlaw import sweep  # noqa: F401  (plan)
from mixlaw.errors import MixlawError, one_line
from mixlaw.laws import options as fit_options_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The laws' settings as a gin configurable (mixlaw.laws stays free of gin): `FitOptions.n_boot =
# 200` in an experiment's gin file, or `--gin.FitOptions.n_boot=200` on the command line.
FitOptions = gin.external_configurable(fit_options_lib.FitOptions, name="FitOptions")


class GinError(MixlawError):
  """A gin file that cannot be found or parsed, or a binding of an unknown name."""


_INCLUDE = re.compile(r"""^\s*include\s+(['"])(.+?)\1""")


def find(path: str, where: str = "gin file") -> str:
  """A gin file as given, or relative to the working directory or the repository."""
  for p in ("", os.getcwd(), REPO_ROOT):
    if os.path.isfile(os.path.join(p, path)):
      return os.path.join(p, path)
  if os.path.isdir(path):
    raise GinError(f"{where} {path} is a directory: pass a .gin file")
  raise GinError(f"{where} not found: {path} (looked in {os.getcwd()} and {REPO_ROOT})")


def _read(path: str, seen: dict) -> None:
  """The text of a gin file and, recursively, of its includes into `seen` (path -> text);
  a missing include is named with its file and line."""
  if path in seen:
    return
  try:
    with open(path, encoding="utf-8") as f:
      seen[path] = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise GinError(f"gin file {path}: cannot read ({e})") from None
  for i, line in enumerate(seen[path].splitlines(), start=1):
    m = _INCLUDE.match(line)
    if m:
      _read(find(m[2], where=f"{path}:{i}: include"), seen)


def setup(files: list[str], bindings: list[str]) -> None:
  """Parses gin files then bindings (later ones win); not finalized, so callers may add more."""
  for path in (os.getcwd(), REPO_ROOT):
    gin.add_config_file_search_path(path)
  texts: dict = {}
  paths = [find(f) for f in files]
  for p in paths:
    _read(p, texts)
  if any("corpus" in t for t in list(texts.values()) + list(bindings)):
    import mixlaw.corpora  # noqa: F401  (user corpora configurables)
  quiet = logging.root.manager.disable
  logging.disable(logging.ERROR)  # gin logs each search path it missed an include in.
  try:
    gin.parse_config_files_and_bindings(paths, bindings, finalize_config=False)
  except (ValueError, SyntaxError, OSError, TypeError) as e:
    raise GinError(one_line(e)) from None
  finally:
    logging.disable(quiet)
