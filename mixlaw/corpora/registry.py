"""Corpus names -> where their text is: the built-in corpora, user files, any TFDS dataset.

A user corpus is registered by calling `user_corpus` or `tfds_corpus` (both gin-configurable and
both returning the name), so a gin file can write `DataConfig.domain = @legal/user_corpus()`.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re

import gin

from mixlaw.corpora.sources import KNOWN_CORPORA, Source, sources_of
from mixlaw.errors import MixlawError

TFDS_BUILDER = "mixlaw_text"  # The TFDS builder holding built-in and user-file corpora.
TFDS_VERSION = "1.0.0"


class DataError(MixlawError, ValueError):
  """A bad data input (unknown/empty/unbuilt corpus, missing file, bad ratio...): nothing ran."""


CorpusError = DataError  # The name the CLI also recognises.


@dataclasses.dataclass(frozen=True)
class Corpus:
  """Where a corpus's documents come from; `kind` is 'builtin', 'files' or 'tfds'."""
  name: str
  kind: str
  sources: tuple[Source, ...] = ()
  tfds_name: str = ""
  tfds_data_dir: str | None = None
  split_train: str = "train"
  split_validation: str = "validation"
  text_key: str = "text"

  def tfds_source(self, data_dir: str) -> tuple[str, str | None, dict[str, str], str]:
    """(tfds name, tfds data dir, {split: tfds split}, text feature) to read it with seqio."""
    if self.kind == "tfds":
      splits = {"train": self.split_train, "validation": self.split_validation}
      return self.tfds_name, self.tfds_data_dir, splits, self.text_key
    return (f"{TFDS_BUILDER}/{self.name}:{TFDS_VERSION}", tfds_dir(data_dir),
            {"train": "train", "validation": "validation"}, "text")


_USER: dict[str, Corpus] = {}


def tfds_dir(data_dir: str) -> str:
  return os.path.join(os.path.abspath(data_dir), "tfds")


def _check_name(name: str) -> None:
  if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name or ""):
    raise DataError(f"corpus name must match [a-z][a-z0-9_]*, got {name!r}")
  if name in KNOWN_CORPORA:
    raise DataError(f"corpus name {name!r} is a built-in corpus; choose another name")


@gin.configurable
def user_corpus(name: str, files=()) -> str:
  """Registers a corpus made of local .txt files (one document each) and/or .jsonl files
  (one document per line, field `text`); globs allowed. Returns `name`."""
  _check_name(name)
  files = (files,) if isinstance(files, str) else tuple(files)
  if not files:
    raise DataError(f"user corpus {name!r}: no files given")
  for pattern in files:
    if not pattern.endswith((".txt", ".jsonl")):
      raise DataError(f"user corpus {name!r}: {pattern!r} is neither .txt nor .jsonl")
    if not glob.glob(os.path.expanduser(pattern), recursive=True):
      raise DataError(f"user corpus {name!r}: no file matches {pattern!r}")
  paths = tuple(os.path.abspath(os.path.expanduser(p)) for p in files)
  src = Source(name, name, "files", (), paths, "user_files", lang="user")
  _USER[name] = Corpus(name, "files", sources=(src,))
  return name


@gin.configurable
def tfds_corpus(name: str, tfds_name: str, split_train: str = "train",
                split_validation: str = "validation", text_key: str = "text",
                data_dir: str | None = None) -> str:
  """Registers any TFDS dataset with a text feature, already prepared on disk. Returns `name`."""
  _check_name(name)
  _USER[name] = Corpus(name, "tfds", tfds_name=tfds_name, tfds_data_dir=data_dir,
                       split_train=split_train, split_validation=split_validation,
                       text_key=text_key)
  return name


def get(name: str) -> Corpus:
  if name in KNOWN_CORPORA:
    return Corpus(name, "builtin", sources=sources_of(name))
  if name in _USER:
    return _USER[name]
  known = list(KNOWN_CORPORA) + sorted(_USER)
  raise DataError(f"unknown corpus {name!r}; known: {known} (register others with "
                  "user_corpus(name, files) or tfds_corpus(name, tfds_name))")


def names() -> list[str]:
  return list(KNOWN_CORPORA) + sorted(_USER)
