"""The numpy sampler: exact token share, determinism, resumption, batch fields, validation."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from mixlaw import arrays

EOS = 1


def _rows(n_rows, seq_len=32, vocab=50, seed=0, last_fill=0.5):
  """Packed rows from random documents (eos-terminated); the last row partly padded."""
  rng = np.random.default_rng(seed)
  total = n_rows * seq_len - int((1 - last_fill) * seq_len)
  stream = []
  while len(stream) < total:
    stream += list(rng.integers(3, vocab, size=rng.integers(1, 3 * seq_len))) + [EOS]
  t = np.zeros(n_rows * seq_len, np.int32)
  t[:total] = stream[:total]
  return arrays.PackedRows(t.reshape(n_rows, seq_len))


def _share(sampler, n_batches):
  w = dom = 0.0
  for i in range(n_batches):
    b = sampler.batch(i)
    tok = b["weights"].sum(1)
    w += tok.sum()
    dom += tok[b["source"] == arrays.DOMAIN].sum()
  return dom / w


@pytest.mark.parametrize("n", [1, 7, 32, 1000, 12345])
@pytest.mark.parametrize("r", [0.0, 0.125, 1 / 3, 0.5, 0.9, 1.0])
def test_schedule_counts(r, n):
  s = arrays.domain_row_schedule(r, n)
  assert s.dtype == bool and len(s) == n
  assert s.sum() == math.floor(r * n + 0.5)
  assert np.array_equal(arrays.domain_row_schedule(r, n - n // 2, start=n // 2), s[n // 2:])


@pytest.mark.parametrize("r", [0.0, 0.125, 0.5, 1.0])
def test_token_share_within_001_over_500_batches(r):
  general, domain = _rows(97, seed=1), _rows(41, seed=2)
  sampler = arrays.MixtureSampler(general, domain if r > 0 else None, r, batch_size=16, seed=3)
  assert abs(_share(sampler, 500) - r) <= 0.01


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan"), float("inf"), "half", None])
def test_bad_ratio(bad):
  with pytest.raises(ValueError, match="ratio"):
    arrays.MixtureSampler(_rows(4), _rows(4), bad, 2, 0)
  with pytest.raises(ValueError):
    arrays.domain_row_schedule(bad, 3)


def test_domain_needed_and_shapes_checked():
  with pytest.raises(ValueError, match="domain"):
    arrays.MixtureSampler(_rows(4), None, 0.25, 2, 0)
  with pytest.raises(ValueError, match="sequence lengths"):
    arrays.MixtureSampler(_rows(4, 32), _rows(4, 16), 0.5, 2, 0)


def test_batch_is_pure_function_of_seed_and_step():
  g, d = _rows(30, seed=1), _rows(20, seed=2)
  a = arrays.MixtureSampler(g, d, 0.3, 8, seed=5)
  b = arrays.MixtureSampler(g, d, 0.3, 8, seed=5)
  later = [a.batch(i) for i in range(40)]
  resumed = b.batch(37)  # A fresh sampler at step 37: the data position is the step.
  for k in resumed:
    assert resumed[k].shape[0] == 8
    assert np.array_equal(resumed[k], later[37][k])
  other = arrays.MixtureSampler(g, d, 0.3, 8, seed=6).batch(37)
  assert not np.array_equal(other["targets"], resumed["targets"])


def test_each_epoch_is_a_permutation():
  g = _rows(24, seed=4)
  s = arrays.MixtureSampler(g, None, 0.0, batch_size=8, seed=0)
  seen = np.concatenate([s.indices(i)[1] for i in range(6)])  # Two epochs of 24 rows.
  assert sorted(seen[:24]) == list(range(24)) and sorted(seen[24:]) == list(range(24))
  assert not np.array_equal(seen[:24], seen[24:])


def test_batch_fields_decoder_style():
  t = np.array([[5, 6, EOS, 7, EOS, 8, 9, 0, 0]], np.int32)
  f = arrays.batch_fields(t, EOS)
  assert f["segment_ids"].tolist() == [[1, 1, 1, 2, 2, 3, 3, 0, 0]]
  assert f["positions"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 0, 0]]
  assert f["inputs"].tolist() == [[0, 5, 6, 0, 7, 0, 8, 0, 0]]
  assert f["weights"].tolist() == [[1, 1, 1, 1, 1, 1, 1, 0, 0]]
  assert all(f[k].dtype == np.int32 for k in ("inputs", "targets", "segment_ids", "positions"))
  assert f["weights"].dtype == np.float32


def test_validation_batches_fixed_and_padded():
  rows = _rows(10, seed=7)
  v1 = arrays.validation_batches(rows, 4, source_id=1)
  v2 = arrays.validation_batches(rows, 4, source_id=1)
  assert len(v1) == 3 and all(b["targets"].shape == (4, 32) for b in v1)
  assert v1[-1]["weights"][2:].sum() == 0 and (v1[-1]["source"] == 1).all()
  assert np.array_equal(np.concatenate([b["targets"] for b in v1])[:10], rows.targets_NxL)
  assert all(np.array_equal(a[k], b[k]) for a, b in zip(v1, v2) for k in a)


def test_load_packed_and_meta(tmp_path):
  (tmp_path / "c").mkdir()
  np.save(tmp_path / "c" / "train.npy", _rows(5).targets_NxL.astype(np.uint16))
  (tmp_path / "meta.json").write_text(json.dumps({"eos_id": 1, "seq_len": 32}))
  rows = arrays.load_packed(str(tmp_path), "c", "train")
  assert isinstance(rows.targets_NxL, np.memmap) and rows.n_rows == 5 and rows.seq_len == 32
  assert arrays.read_meta(str(tmp_path))["seq_len"] == 32
  with pytest.raises(FileNotFoundError, match="mixlaw data export"):
    arrays.load_packed(str(tmp_path), "c", "validation")


def test_arrays_imports_no_tensorflow():
  code = ("import sys, mixlaw.arrays; bad = [m for m in sys.modules if m.split('.')[0] in "
          "('tensorflow', 'seqio', 'tensorflow_datasets', 'jax', 'sentencepiece')]; "
          "assert not bad, bad")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
