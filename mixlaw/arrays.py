"""Packed token arrays and the mixture sampler: what a TensorFlow-free host trains from.

Only numpy. An exported corpus split is targets_NxL (0 = padding; every document ends with
eos): documents are concatenated and cut into rows of L tokens, so a segment starts at the row
start and after each eos, and every other batch field follows from the targets.

Ratio semantics: R is the domain share of TOKENS. Rows are mixed by a deterministic schedule:
among the first n rows, round(R * n) are domain rows (`domain_row_schedule`); batch i holds rows
[i*B, (i+1)*B). The k-th row drawn from source s is row perm(seed, s, k // N_s)[k % N_s] (a fresh
seeded permutation per epoch), so batch i is a pure function of (seed, i): data position = step.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os

import numpy as np

GENERAL, DOMAIN = 0, 1
META_FILE = "meta.json"

# Data defaults, in one place (`config.DataConfig` and the export stage take them from here).
DATA_DIR = "data"
VOCAB_NAME = "spm8k"
SEQ_LEN = 256
VALIDATION_ROWS = 64  # Held-out rows per corpus: the fixed set every run evaluates.


@dataclasses.dataclass(frozen=True)
class PackedRows:
  """The packed rows of one corpus split (memory-mapped); 0 = pad, documents end with eos_id."""
  targets_NxL: np.ndarray
  eos_id: int = 1
  name: str = ""

  @property
  def n_rows(self) -> int:
    return int(self.targets_NxL.shape[0])

  @property
  def seq_len(self) -> int:
    return int(self.targets_NxL.shape[1])


def arrays_dir(data_dir: str, vocab_name: str, seq_len: int) -> str:
  """Where the export stage writes the arrays of one vocabulary and sequence length."""
  return os.path.join(data_dir, "arrays", f"{vocab_name}_L{seq_len}")


def split_path(arrays_dir: str, corpus: str, split: str) -> str:
  return os.path.join(arrays_dir, corpus, f"{split}.npy")


def read_meta(arrays_dir: str) -> dict:
  """meta.json of an arrays dir ({} if absent): vocab, seq_len, ids, per-corpus counts."""
  path = os.path.join(arrays_dir, META_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def load_packed(arrays_dir: str, corpus: str, split: str) -> PackedRows:
  """Memory-maps ARRAYS_DIR/CORPUS/SPLIT.npy ([N, L] uint16 or int32)."""
  path = split_path(arrays_dir, corpus, split)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no exported arrays for corpus {corpus!r} split {split!r} at {path} "
                            "(run `mixlaw data export`)")
  targets = np.load(path, mmap_mode="r")
  if targets.ndim != 2 or targets.shape[0] == 0:
    raise ValueError(f"{path}: expected a non-empty [N, L] array, got shape {targets.shape}")
  eos = int(read_meta(arrays_dir).get("eos_id", 1))
  return PackedRows(targets, eos, f"{corpus}/{split}")


def check_ratio(ratio: float) -> float:
  """R must be a number in [0, 1] (not NaN)."""
  try:
    r = float(ratio)
  except (TypeError, ValueError):
    raise ValueError(f"ratio R must be a number in [0, 1], got {ratio!r}") from None
  if math.isnan(r) or not 0.0 <= r <= 1.0:
    raise ValueError(f"ratio R must be a domain token share in [0, 1], got {ratio!r}")
  return r


def _domain_before(ratio: float, rows: np.ndarray) -> np.ndarray:
  """Number of domain rows among the first `rows` rows: round(R * rows), halves rounded up."""
  return np.floor(ratio * rows.astype(np.float64) + 0.5).astype(np.int64)


def domain_row_schedule(ratio: float, n_rows: int, start: int = 0) -> np.ndarray:
  """is_domain_N for rows [start, start + n_rows) of the schedule (bool)."""
  r = check_ratio(ratio)
  rows = np.arange(start, start + n_rows, dtype=np.int64)
  return _domain_before(r, rows + 1) > _domain_before(r, rows)


@functools.lru_cache(maxsize=8)
def _epoch_permutation(seed: int, source: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([seed, source, epoch]).permutation(n)


def row_indices(ratio: float, n_rows_per_source: tuple[int, int], seed: int, start: int,
                n: int) -> tuple[np.ndarray, np.ndarray]:
  """(source_N int32, row_N int64): which row of which source schedule rows [start, start+n) are."""
  r = check_ratio(ratio)
  rows = np.arange(start, start + n, dtype=np.int64)
  before = _domain_before(r, rows)
  source = (_domain_before(r, rows + 1) > before).astype(np.int32)
  k = np.where(source == DOMAIN, before, rows - before)  # k-th row drawn from its source.
  sizes = np.asarray(n_rows_per_source, dtype=np.int64)[source]
  epoch, pos = k // np.maximum(sizes, 1), k % np.maximum(sizes, 1)
  index = np.empty(n, dtype=np.int64)
  for s, e in sorted(set(zip(source.tolist(), epoch.tolist()))):
    m = (source == s) & (epoch == e)
    index[m] = _epoch_permutation(seed, s, e, int(n_rows_per_source[s]))[pos[m]]
  return source, index


def batch_fields(targets_BxL: np.ndarray, eos_id: int = 1) -> dict[str, np.ndarray]:
  """inputs/targets/segment_ids/positions/weights of packed rows (seqio decoder-style)."""
  t = np.asarray(targets_BxL, dtype=np.int32)
  real = t != 0
  start = np.zeros_like(real)
  start[:, 0] = True
  start[:, 1:] = t[:, :-1] == eos_id
  segment_ids = np.cumsum(start, axis=1, dtype=np.int32) * real
  col = np.broadcast_to(np.arange(t.shape[1], dtype=np.int32), t.shape)
  positions = (col - np.maximum.accumulate(np.where(start, col, 0), axis=1)) * real
  inputs = np.zeros_like(t)
  inputs[:, 1:] = t[:, :-1]
  inputs[start | ~real] = 0
  return {"inputs": inputs, "targets": t, "segment_ids": segment_ids.astype(np.int32),
          "positions": positions.astype(np.int32), "weights": real.astype(np.float32)}


class MixtureSampler:
  """Batches of general + domain rows at domain token share R; batch(step) is a pure function."""

  def __init__(self, general: PackedRows, domain: PackedRows | None, ratio: float,
               batch_size: int, seed: int = 0):
    self.ratio = check_ratio(ratio)
    if domain is None and self.ratio > 0:
      raise ValueError(f"ratio {self.ratio} > 0 needs domain rows")
    if general is None or general.n_rows == 0:
      raise ValueError("general rows are empty")
    if domain is not None and domain.seq_len != general.seq_len:
      raise ValueError(f"sequence lengths differ: {general.seq_len} vs {domain.seq_len}")
    if batch_size < 1 or seed < 0:
      raise ValueError(f"need batch_size >= 1 and seed >= 0, got {batch_size}, {seed}")
    self.sources = (general, domain)
    self.batch_size, self.seed = int(batch_size), int(seed)
    self.seq_len = general.seq_len

  def indices(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(source_B, row_B) of batch `step`."""
    sizes = tuple(s.n_rows if s is not None else 0 for s in self.sources)
    return row_indices(self.ratio, sizes, self.seed, int(step) * self.batch_size, self.batch_size)

  def batch(self, step: int, rows: slice | None = None) -> dict[str, np.ndarray]:
    """The batch at `step`: [B, L] fields + source_B (0 general, 1 domain); with `rows`, only
    those rows of it (a process's slice of the global batch; nothing else is read)."""
    source, index = self.indices(step)
    if rows is not None:
      source, index = source[rows], index[rows]
    targets = np.empty((len(source), self.seq_len), dtype=np.int32)
    for s, rows in enumerate(self.sources):
      m = source == s
      if m.any():
        order = np.argsort(index[m], kind="stable")  # Sorted reads from the memory map.
        picked = np.empty((int(m.sum()), self.seq_len), dtype=np.int32)
        picked[order] = rows.targets_NxL[index[m][order]]
        targets[m] = picked
    out = batch_fields(targets, self.sources[0].eos_id)
    out["source"] = source.astype(np.int32)
    return out


def validation_batches(rows: PackedRows, batch_size: int, source_id: int) -> list[dict]:
  """All rows in order, in batches of B; the last is padded with zero-weight rows."""
  out = []
  for i in range(0, rows.n_rows, batch_size):
    t = np.zeros((batch_size, rows.seq_len), dtype=np.int32)
    chunk = np.asarray(rows.targets_NxL[i:i + batch_size], dtype=np.int32)
    t[:len(chunk)] = chunk
    b = batch_fields(t, rows.eos_id)
    b["source"] = np.full((batch_size,), source_id, dtype=np.int32)
    out.append(b)
  return out
