"""seqio side: vocabulary, one Task per corpus, the token-share Mixture, validation, export.

Task `mixlaw_{corpus}_{vocab}`: TfdsDataSource -> tokenize -> append EOS -> pack_rows. pack_rows
concatenates the documents and cuts the stream into rows of L tokens: a document crossing a row
end is chunked there (pieces of at most L tokens), never truncated, and rows are full but for
the last. A Mixture of two such tasks samples ROWS by the schedule of `arrays.row_indices`, so
the domain share of tokens is R and batch i is a function of (seed, i), exactly as the exported
arrays' `arrays.MixtureSampler` (both backends give the same batches).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import io
import json
import os
import re
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import seqio  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from mixlaw import arrays  # noqa: E402
from mixlaw import corpora  # noqa: E402
from mixlaw.corpora import DataError  # noqa: E402
from mixlaw.workdir import atomic_write  # noqa: E402

try:  # The data side never takes the accelerator from JAX.
  tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):
  pass

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
_ROW_CHUNK = 1024  # Mixture rows are scheduled and gathered this many at a time.

__all__ = ["DataError", "prepare_arrays", "data_export_main", "export", "register_tasks",
           "register_mixture", "get_mixture_dataset", "get_validation_batches", "get_vocabulary",
           "SeqioSampler", "vocab_size",
           "arrays_dir", "pack_rows", "batch_fields"]


# ---------------------------------------------------------------------------------- vocabulary
def parse_vocab_name(vocab_name: str) -> int | None:
  """'byte' -> None; 'spm8k' -> 8192; 'spm1000' -> 1000 (SentencePiece pieces)."""
  if vocab_name == "byte":
    return None
  m = re.fullmatch(r"spm(\d+)(k?)", vocab_name or "")
  if not m or int(m.group(1)) == 0:
    raise DataError(f"vocab_name must be 'byte' or 'spm<N>[k]' (e.g. spm8k), got {vocab_name!r}")
  size = int(m.group(1)) * (1024 if m.group(2) else 1)
  if size < 300:
    raise DataError(f"a SentencePiece vocabulary needs >= 300 pieces (256 byte pieces + "
                    f"specials + merges), got {vocab_name!r}")
  return size


def vocab_path(data_dir: str, vocab_name: str) -> str:
  return os.path.join(os.path.abspath(data_dir), "vocab", f"{vocab_name}.model")


def get_vocabulary(vocab_name: str = arrays.VOCAB_NAME, data_dir: str = arrays.DATA_DIR,
                   train_corpus: str = "general") -> seqio.Vocabulary:
  """seqio.ByteVocabulary, or the SentencePiece model at DATA_DIR/vocab/NAME.model (trained on
  `train_corpus`'s train split when missing, see NAME.json; pad=0, eos=1, unk=2)."""
  size = parse_vocab_name(vocab_name)
  if size is None:
    return seqio.ByteVocabulary()
  path = vocab_path(data_dir, vocab_name)
  if not os.path.exists(path):  # Trained once; later calls load it whatever train_corpus says.
    train_sentencepiece(path, size, train_corpus, data_dir)
  return seqio.SentencePieceVocabulary(path)


def _training_lines(corpus: str, data_dir: str, max_chars: int = 2000):
  """Lines of the train split (long lines cut at a space); SentencePiece sees no newline."""
  ds = _tfds_split(corpus, data_dir, "train")
  for text in tfds.as_numpy(ds):
    for line in text.decode("utf-8").split("\n"):
      while len(line) > max_chars:
        cut = line.rfind(" ", max_chars // 2, max_chars)
        cut = cut if cut > 0 else max_chars
        yield line[:cut]
        line = line[cut:]
      if line.strip():
        yield line


def _coverage(size: int) -> float:
  """SentencePiece character coverage: below 4k pieces the general corpus's CJK characters
  (2.6k distinct at 0.9995) would not fit, so rare characters go to byte fallback instead."""
  return 0.9995 if size >= 4096 else 0.99


def train_sentencepiece(path: str, size: int, corpus: str, data_dir: str) -> None:
  """BPE with byte fallback, identity normalization (code indentation kept), '\\n' a piece."""
  import sentencepiece as spm

  corpora.ensure_ready(corpus, data_dir)
  t0 = time.perf_counter()
  print(f"vocab: training SentencePiece BPE, {size} pieces, on {corpus}/train ...", flush=True)
  spm.set_random_generator_seed(0)
  buf = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=_training_lines(corpus, data_dir), model_writer=buf,
        vocab_size=size, model_type="bpe", character_coverage=_coverage(size), byte_fallback=True,
        pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
        normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
        allow_whitespace_only_pieces=True, user_defined_symbols=["\n"],
        input_sentence_size=0, max_sentence_length=8192, num_threads=os.cpu_count() or 1,
        minloglevel=2)
  except RuntimeError as e:  # E.g. "Vocabulary size too high" for a small corpus.
    raise DataError(f"SentencePiece training on {corpus!r} failed: {e}") from None
  os.makedirs(os.path.dirname(path), exist_ok=True)
  atomic_write(path, buf.getvalue())
  info = {"train_corpus": corpus, "vocab_size": size, "model_type": "bpe",
          "character_coverage": _coverage(size),
          "sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
          "seconds": round(time.perf_counter() - t0, 1)}
  atomic_write(path.replace(".model", ".json"), json.dumps(info, indent=1))
  print(f"vocab: {path} ({info['seconds']} s)", flush=True)


# ---------------------------------------------------------------------------------- tasks
def _tfds_split(corpus: str, data_dir: str, split: str) -> tf.data.Dataset:
  """The raw text strings of one split of a corpus, in file order."""
  name, tdir, splits, key = corpora.get(corpus).tfds_source(data_dir)
  ds = tfds.builder(name, data_dir=tdir).as_dataset(split=splits[split], shuffle_files=False)
  return ds.map(lambda ex: ex[key])


def pack_rows(dataset: tf.data.Dataset, sequence_length) -> tf.data.Dataset:
  """Tokenized documents (ending with EOS) -> rows {'targets': [L]}: concatenated, cut every L
  tokens (a document crossing a row end continues in the next row as a new segment)."""
  length = int(sequence_length["targets"])
  rows = dataset.map(lambda ex: ex["targets"]).rebatch(length)
  return rows.map(lambda t: {"targets": tf.ensure_shape(
      tf.pad(t, [[0, length - tf.shape(t)[0]]]), [length])})


def task_name(corpus: str, vocab_name: str) -> str:
  return f"mixlaw_{corpus}_{vocab_name}"


_TASK_KEYS: dict[str, tuple] = {}


def register_tasks(corpora_: list[str], *, data_dir: str = arrays.DATA_DIR,
                   vocab_name: str = arrays.VOCAB_NAME,
                   vocab_corpus: str = "general") -> dict[str, str]:
  """Registers one seqio Task per corpus (idempotent: re-registers only if its inputs changed).

  Returns {corpus: task name}.
  """
  names = {}
  for corpus in corpora_:
    spec = corpora.get(corpus)
    tfds_name, tdir, splits, key = spec.tfds_source(data_dir)
    vocab = get_vocabulary(vocab_name, data_dir, vocab_corpus)
    name = task_name(corpus, vocab_name)
    ident = (tfds_name, tdir, tuple(sorted(splits.items())), key,
             vocab_path(data_dir, vocab_name) if vocab_name != "byte" else "byte")
    if name in seqio.TaskRegistry.names() and _TASK_KEYS.get(name) == ident:
      names[corpus] = name
      continue
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name,
        source=seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=tdir, splits=splits),
        preprocessors=[functools.partial(seqio.preprocessors.rekey, key_map={"targets": key}),
                       seqio.preprocessors.tokenize, seqio.preprocessors.append_eos, pack_rows],
        output_features={"targets": seqio.Feature(vocab, add_eos=True, dtype=tf.int32)},
    )
    _TASK_KEYS[name] = ident
    names[corpus] = name
  return names


def _task_rows(task: str, split: str, seq_len: int) -> tf.data.Dataset:
  """One deterministic pass over a task's packed rows."""
  return seqio.get_mixture_or_task(task).get_dataset(
      {"targets": seq_len}, split=split, shuffle=False, num_epochs=1, use_cached=False)


def _materialize(ds: tf.data.Dataset) -> np.ndarray:
  """All rows of a dataset of {'targets': [L]} as one [N, L] int32 array."""
  parts = [b["targets"] for b in ds.batch(4096).as_numpy_iterator()]
  return np.concatenate(parts) if parts else np.zeros((0, 0), np.int32)


# ---------------------------------------------------------------------------------- batches
def batch_fields(ex: dict, eos_id: int = EOS_ID) -> dict:
  """TF twin of `arrays.batch_fields`: inputs/segment_ids/positions/weights from targets [B, L]."""
  t = tf.cast(ex["targets"], tf.int32)
  b, length = tf.shape(t)[0], tf.shape(t)[1]
  real = tf.not_equal(t, PAD_ID)
  prev = tf.pad(t[:, :-1], [[0, 0], [1, 0]], constant_values=eos_id)
  start = tf.equal(prev, eos_id)  # Row start, or right after an EOS.
  seg_all = tf.cumsum(tf.cast(start, tf.int32), axis=1)
  col = tf.broadcast_to(tf.range(length)[None, :], tf.shape(t))
  gid = tf.range(b)[:, None] * (length + 1) + seg_all
  first = tf.math.unsorted_segment_max(tf.where(start, col, 0), gid, b * (length + 1))
  positions = (col - tf.gather(first, gid)) * tf.cast(real, tf.int32)
  inputs = tf.where(start | ~real, 0, tf.pad(t[:, :-1], [[0, 0], [1, 0]]))
  out = {"inputs": inputs, "targets": t, "segment_ids": seg_all * tf.cast(real, tf.int32),
         "positions": positions, "weights": tf.cast(real, tf.float32)}
  if "source" in ex:
    out["source"] = tf.cast(ex["source"], tf.int32)
  return out


_ROWS_CACHE: dict[tuple, np.ndarray] = {}


def _cached_rows(task: str, ds: tf.data.Dataset) -> np.ndarray:
  """A task's packed train rows in memory, kept for the next mixture of this process."""
  key = (task, _TASK_KEYS.get(task), tuple(ds.element_spec["targets"].shape))
  if key not in _ROWS_CACHE:
    while len(_ROWS_CACHE) >= 4:
      _ROWS_CACHE.pop(next(iter(_ROWS_CACHE)))
    _ROWS_CACHE[key] = _materialize(ds)
    if not len(_ROWS_CACHE[key]):
      raise DataError(f"task {task} has no packed rows")
  return _ROWS_CACHE[key]


def _token_share_sample_fn(datasets, rates, seed, *, tasks, sources, ratio, start_row):
  """seqio.Mixture sample_fn: rows by the schedule of arrays.row_indices (token share R).

  `tasks`/`sources`: the task name and source id of each dataset (seqio sorts them by name).
  Each needed task's rows are materialized once (epochs are permutations of them).
  """
  del rates  # Documentation only: (1 - R, R). The exact R comes from `ratio`.
  if seed is None:
    raise DataError("the token-share mixture needs an explicit seed")
  need = [arrays.GENERAL] if ratio < 1 else []
  need += [arrays.DOMAIN] if ratio > 0 else []
  rows = {sources[i]: _cached_rows(tasks[i], ds) for i, ds in enumerate(datasets)
          if sources[i] in need}
  sizes = tuple(int(len(rows.get(s, ()))) for s in (arrays.GENERAL, arrays.DOMAIN))
  tables = {s: tf.constant(r) for s, r in rows.items()}

  def schedule(r0):
    src, idx = arrays.row_indices(ratio, sizes, int(seed), int(r0), _ROW_CHUNK)
    return src, idx

  def chunk(r0):
    src, idx = tf.numpy_function(schedule, [r0], (tf.int32, tf.int64), stateful=False)
    src.set_shape([_ROW_CHUNK])
    idx.set_shape([_ROW_CHUNK])
    picked = None
    for s, table in tables.items():
      rows_s = tf.gather(table, tf.where(src == s, idx, 0))
      picked = rows_s if picked is None else tf.where((src == s)[:, None], rows_s, picked)
    return {"targets": picked, "source": src}

  starts = tf.data.Dataset.range(start_row, np.iinfo(np.int64).max, _ROW_CHUNK)
  return starts.map(chunk).unbatch()


def mixture_name(general: str, domain: str | None, ratio: float, vocab_name: str) -> str:
  return f"mixlaw_{general}_{domain or 'none'}_{vocab_name}_r{ratio:.6f}".replace(".", "p")


def register_mixture(general: str, domain: str | None, ratio: float, *,
                     data_dir: str = arrays.DATA_DIR, vocab_name: str = arrays.VOCAB_NAME,
                     start_row: int = 0,
                     register: bool = True) -> seqio.Mixture:
  """seqio.Mixture of the two packed tasks, rates (1 - R, R), sampling by the token schedule."""
  ratio = _check_ratio(ratio)
  if domain is None and ratio > 0:
    raise DataError(f"ratio {ratio} > 0 needs a domain corpus")
  if domain == general:
    raise DataError(f"general and domain are the same corpus {general!r}")
  names = register_tasks([general] + ([domain] if domain else []), data_dir=data_dir,
                         vocab_name=vocab_name)
  tasks = [(names[general], 1.0 - ratio)] + ([(names[domain], ratio)] if domain else [])
  by_name = {names[general]: arrays.GENERAL}
  if domain:
    by_name[names[domain]] = arrays.DOMAIN
  order = sorted(by_name)  # seqio hands the task datasets to sample_fn sorted by name.
  sample_fn = functools.partial(_token_share_sample_fn, tasks=tuple(order),
                                sources=tuple(by_name[n] for n in order), ratio=ratio,
                                start_row=int(start_row))
  name = mixture_name(general, domain, ratio, vocab_name)
  if not register:
    return seqio.Mixture(name, tasks, sample_fn=sample_fn)
  seqio.MixtureRegistry.remove(name)
  return seqio.MixtureRegistry.add(name, tasks, sample_fn=sample_fn)


def _check_ratio(ratio: float) -> float:
  try:
    return arrays.check_ratio(ratio)
  except ValueError as e:
    raise DataError(str(e)) from None


def get_mixture_dataset(general: str, domain: str | None, ratio: float, *, seq_len: int,
                        batch_size: int, seed: int, start_step: int = 0,
                        data_dir: str = arrays.DATA_DIR, vocab_name: str = arrays.VOCAB_NAME):
  """The seqio backend: an iterator of numpy batch dicts from `start_step` on.

  Batch i equals `arrays.MixtureSampler(...).batch(i)` on the exported arrays.
  """
  ratio = _check_ratio(ratio)
  if batch_size < 1 or seed < 0 or start_step < 0:
    raise DataError(f"need batch_size >= 1, seed >= 0, start_step >= 0; got "
                    f"{batch_size}, {seed}, {start_step}")
  for c in [general] + ([domain] if domain else []):
    corpora.ensure_ready(c, data_dir)
  register_mixture(general, domain, ratio, data_dir=data_dir, vocab_name=vocab_name)
  mixture = register_mixture(general, domain, ratio, data_dir=data_dir, vocab_name=vocab_name,
                             start_row=start_step * batch_size, register=False)
  ds = mixture.get_dataset({"targets": seq_len}, split="train", shuffle=False, seed=seed,
                           num_epochs=1, use_cached=False)
  ds = ds.batch(batch_size, drop_remainder=True).map(batch_fields)
  return ds.prefetch(2).as_numpy_iterator()


def get_validation_batches(corpus: str, *, seq_len: int, batch_size: int, max_rows: int,
                           source_id: int, data_dir: str = arrays.DATA_DIR,
                           vocab_name: str = arrays.VOCAB_NAME) -> list[dict]:
  """The fixed validation set of one task: its first `max_rows` packed validation rows, in
  batches of B (the last padded with zero-weight rows). Same as `arrays.validation_batches`."""
  corpora.ensure_ready(corpus, data_dir)
  name = register_tasks([corpus], data_dir=data_dir, vocab_name=vocab_name)[corpus]
  ds = _task_rows(name, "validation", seq_len).take(max_rows)
  n = int(ds.reduce(0, lambda c, _: c + 1))
  pad = tf.data.Dataset.from_tensors({"targets": tf.zeros([seq_len], tf.int32)})
  ds = ds.concatenate(pad.repeat((-n) % batch_size)).batch(batch_size)
  ds = ds.map(lambda ex: batch_fields({**ex, "source": tf.fill([batch_size], source_id)}))
  return list(ds.as_numpy_iterator())


class SeqioSampler:
  """The seqio backend of the trainer: batch(step) from the weighted seqio Mixture.

  Same interface and same batches as `arrays.MixtureSampler` (batch i = f(seed, i)). Batches are
  read in order from one tf.data iterator; a step out of order (a resume) reopens it there.
  """

  def __init__(self, general: str, domain: str | None, ratio: float, *, batch_size: int,
               seq_len: int, seed: int, data_dir: str = arrays.DATA_DIR,
               vocab_name: str = arrays.VOCAB_NAME):
    self.kw = dict(general=general, domain=domain, ratio=ratio, seq_len=seq_len,
                   batch_size=batch_size, seed=seed, data_dir=data_dir, vocab_name=vocab_name)
    self.ratio = _check_ratio(ratio)
    self._it, self._next = None, None

  def batch(self, step: int) -> dict:
    if self._it is None or step != self._next:
      self._it = get_mixture_dataset(**self.kw, start_step=int(step))
    self._next = int(step) + 1
    return next(self._it)


def vocab_size(vocab_name: str, data_dir: str = arrays.DATA_DIR) -> int:
  """Vocabulary size the model needs for `vocab_name` (the vocabulary must exist or be trainable)."""
  return int(get_vocabulary(vocab_name, data_dir).vocab_size)


# ---------------------------------------------------------------------------------- export
def arrays_dir(data_dir: str, vocab_name: str, seq_len: int) -> str:
  return arrays.arrays_dir(os.path.abspath(data_dir), vocab_name, seq_len)


@contextlib.contextmanager
def _lock(path: str):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, ".lock"), "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _versions() -> dict:
  import sentencepiece
  return {"seqio": seqio.__version__ if hasattr(seqio, "__version__") else "0.0.20",
          "tensorflow_datasets": tfds.__version__, "tensorflow": tf.__version__,
          "sentencepiece": sentencepiece.__version__, "numpy": np.__version__}


def _corpus_fingerprint(corpus: str, meta: dict) -> str:
  if meta.get("status") == "external":
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
  return meta.get("sha256", "")


def prepare_arrays(corpora_: list[str], *, data_dir: str = arrays.DATA_DIR,
                   seq_len: int = arrays.SEQ_LEN, vocab_name: str = arrays.VOCAB_NAME,
                   max_validation_rows: int = arrays.VALIDATION_ROWS,
                   vocab_corpus: str = "general", force: bool = False) -> str:
  """Makes the exported arrays of `corpora_` (each task's packed train rows, and its first
  `max_validation_rows` validation rows); returns the arrays dir. Checks every input first."""
  corpora_ = list(dict.fromkeys(corpora_))
  if not corpora_:
    raise DataError("no corpora given")
  if not isinstance(seq_len, int) or seq_len < 2:
    raise DataError(f"seq_len must be an int >= 2, got {seq_len!r}")
  if max_validation_rows < 1:
    raise DataError(f"max_validation_rows must be >= 1, got {max_validation_rows}")
  vocab_size = parse_vocab_name(vocab_name)
  for c in corpora_:
    corpora.get(c)  # Unknown names fail before anything is built.
  metas = {c: corpora.ensure_ready(c, data_dir) for c in corpora_}
  if vocab_size is not None and not os.path.exists(vocab_path(data_dir, vocab_name)):
    corpora.ensure_ready(vocab_corpus, data_dir)
  vocab = get_vocabulary(vocab_name, data_dir, vocab_corpus)
  names = register_tasks(corpora_, data_dir=data_dir, vocab_name=vocab_name,
                         vocab_corpus=vocab_corpus)
  out = arrays_dir(data_dir, vocab_name, seq_len)
  vocab_sha = ("byte" if vocab_size is None else
               hashlib.sha256(open(vocab_path(data_dir, vocab_name), "rb").read()).hexdigest())
  with _lock(out):
    meta = arrays.read_meta(out)
    if meta.get("vocab_sha256") not in (None, vocab_sha) or meta.get("seq_len", seq_len) != seq_len:
      print(f"export: vocabulary changed: re-exporting everything in {out}", flush=True)
      meta = {}
    meta.update({"format": "mixlaw-packed-v1", "seq_len": seq_len, "vocab_name": vocab_name,
                 "vocab_size": int(vocab.vocab_size), "vocab_sha256": vocab_sha,
                 "vocab_path": vocab_path(data_dir, vocab_name) if vocab_size else None,
                 "pad_id": PAD_ID, "eos_id": int(vocab.eos_id), "unk_id": UNK_ID,
                 "dtype": "uint16" if vocab.vocab_size <= 65536 else "int32",
                 "versions": _versions()})
    meta.setdefault("corpora", {})
    for c in corpora_:
      have = meta["corpora"].get(c, {})
      same = have.get("corpus_sha256") == _corpus_fingerprint(c, metas[c]) and not force
      todo = [s for s in ("train", "validation")
              if not (same and os.path.exists(arrays.split_path(out, c, s)))
              or s == "validation" and have.get("max_validation_rows", 0) < max_validation_rows]
      if not todo:
        print(f"export: {c}: up to date", flush=True)
        continue
      meta["corpora"][c] = _export_corpus(c, names[c], out, seq_len, max_validation_rows,
                                          metas[c], meta["dtype"], todo, have if same else {})
      atomic_write(os.path.join(out, arrays.META_FILE), json.dumps(meta, indent=1))
    atomic_write(os.path.join(out, arrays.META_FILE), json.dumps(meta, indent=1))
  return out


def _export_corpus(corpus: str, task: str, out: str, seq_len: int, max_validation_rows: int,
                   cmeta: dict, dtype: str, splits: list[str], have: dict) -> dict:
  """Writes the packed rows of `splits`; keeps `have`'s entries for the other split."""
  entry = {k: (dict(v) if isinstance(v, dict) else v) for k, v in have.items()}
  entry.update({"task": task, "corpus_sha256": _corpus_fingerprint(corpus, cmeta),
                "bytes": dict(cmeta.get("bytes", {}))})
  if "validation" in splits:
    entry["max_validation_rows"] = max_validation_rows
  for k in ("rows", "tokens", "docs", "sha256", "fill"):
    entry.setdefault(k, {})
  os.makedirs(os.path.join(out, corpus), exist_ok=True)
  for split in splits:
    t0 = time.perf_counter()
    rows = _materialize(_task_rows(task, split, seq_len))
    if not len(rows):
      raise DataError(f"corpus {corpus!r} split {split!r} has no tokens")
    entry["tokens"][split] = int(np.count_nonzero(rows))
    entry["docs"][split] = int(np.count_nonzero(rows == EOS_ID))
    entry["fill"][split] = round(entry["tokens"][split] / rows.size, 5)
    keep = rows if split == "train" else rows[:max_validation_rows]
    entry["rows"][split] = int(len(keep))
    path = arrays.split_path(out, corpus, split)
    buf = io.BytesIO()
    np.save(buf, keep.astype(dtype))
    atomic_write(path, buf.getvalue())
    entry["sha256"][split] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    print(f"export: {corpus}/{split}: {entry['docs'][split]} docs -> {len(rows)} rows of "
          f"{seq_len} ({entry['tokens'][split]} tokens, fill {entry['fill'][split]:.4f}), kept "
          f"{len(keep)} ({time.perf_counter() - t0:.1f} s)", flush=True)
  nbytes = sum(entry["bytes"].values())
  text_tokens = sum(entry["tokens"].values()) - sum(entry["docs"].values())  # Without EOS.
  entry["bytes_per_token"] = round(nbytes / text_tokens, 4) if nbytes else None
  entry["language_shares"] = corpora.language_shares(cmeta) if cmeta.get("sources") else {}
  return entry


def data_export_main(corpora_: list[str], data_dir: str = arrays.DATA_DIR,
                     seq_len: int = arrays.SEQ_LEN, vocab_name: str = arrays.VOCAB_NAME,
                     max_validation_rows: int = arrays.VALIDATION_ROWS) -> dict:
  """`mixlaw data export`: prepare_arrays with progress and a summary table; returns it."""
  t0 = time.perf_counter()
  out = prepare_arrays(corpora_, data_dir=data_dir, seq_len=seq_len, vocab_name=vocab_name,
                       max_validation_rows=max_validation_rows)
  meta = arrays.read_meta(out)
  summary = {"arrays_dir": out, "vocab_size": meta["vocab_size"], "seq_len": seq_len,
             "seconds": round(time.perf_counter() - t0, 1), "corpora": {}}
  print(f"{'corpus':12s} {'MB':>7s} {'docs':>7s} {'tokens':>11s} {'bytes/tok':>9s} "
        f"{'train rows':>10s} {'val rows':>8s}")
  for c in corpora_:
    e = meta["corpora"][c]
    row = {"bytes": sum(e["bytes"].values()), "docs": sum(e["docs"].values()),
           "tokens": sum(e["tokens"].values()), "bytes_per_token": e["bytes_per_token"],
           "train_rows": e["rows"]["train"], "validation_rows": e["rows"]["validation"]}
    summary["corpora"][c] = row
    print(f"{c:12s} {row['bytes'] / 1e6:7.2f} {row['docs']:7d} {row['tokens']:11d} "
          f"{row['bytes_per_token'] or float('nan'):9.3f} {row['train_rows']:10d} "
          f"{row['validation_rows']:8d}")
  print(f"export: {out} ({summary['seconds']} s)", flush=True)
  return summary


export = data_export_main  # The `mixlaw data export` entry point under its CLI name.
