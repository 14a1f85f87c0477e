"""seqio tasks, the token-share mixture and the export, on small corpora made here (no network)."""

import json
import os

import numpy as np
import pytest

from mixlaw import arrays
from mixlaw import corpora

data = pytest.importorskip("mixlaw.data")  # TensorFlow side.
import seqio  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

L, B = 64, 8
WORDS = ("the market rate of interest fell while bonds rallied and equity traders sold shares in "
         "banks as central policy makers met on inflation growth output forecasts revised").split()
SCI = ("the telescope image of the galaxy was convolved with a kernel and the noise in each pixel "
       "estimated from the sky background before fitting a profile with least squares").split()


def _doc(rng, words, n):
  return " ".join(rng.choice(words, size=n)).capitalize() + "."


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """Two user corpora: 'tgen' from a .jsonl file, 'tdom' from .txt files (some docs > L)."""
  root = tmp_path_factory.mktemp("data")
  rng = np.random.default_rng(0)
  gen = root / "gen.jsonl"
  with open(gen, "w") as f:
    for i in range(260):
      text = _doc(rng, WORDS, int(rng.integers(3, 120)))
      if i % 10 == 0:
        text += "\n    indented line\n中文 句子。"  # Newlines, indentation, non-ASCII survive.
      f.write(json.dumps({"text": text}) + "\n")
  (root / "dom").mkdir()
  for i in range(240):
    (root / "dom" / f"{i:03d}.txt").write_text(_doc(rng, SCI, int(rng.integers(3, 150))))
  corpora.user_corpus("tgen", files=[str(gen)])
  corpora.user_corpus("tdom", files=[str(root / "dom" / "*.txt")])
  out = corpora.build(["tgen", "tdom"], str(root))
  assert out["tgen"]["status"] == "built" and out["tdom"]["docs"]["validation"] >= 1
  return str(root)


@pytest.fixture(scope="module")
def byte_arrays(data_dir):
  return data.prepare_arrays(["tgen", "tdom"], data_dir=data_dir, seq_len=L, vocab_name="byte",
                             max_validation_rows=20)


def _docs(corpus, data_dir, split):
  name, tdir, splits, key = corpora.get(corpus).tfds_source(data_dir)
  ds = tfds.builder(name, data_dir=tdir).as_dataset(split=splits[split], shuffle_files=False)
  return [ex[key].decode() for ex in tfds.as_numpy(ds)]


@pytest.mark.parametrize("vocab_name", ["byte", "spm400"])
def test_no_document_truncated(data_dir, vocab_name):
  """Packed rows = the concatenation of every document's tokens + EOS, in order."""
  out = data.prepare_arrays(["tgen", "tdom"], data_dir=data_dir, seq_len=L,
                            vocab_name=vocab_name, vocab_corpus="tgen")
  vocab = data.get_vocabulary(vocab_name, data_dir, "tgen")
  meta = arrays.read_meta(out)
  for corpus in ("tgen", "tdom"):
    docs = _docs(corpus, data_dir, "train")
    stream = np.concatenate([np.asarray(list(vocab.encode(d)) + [1]) for d in docs])
    rows = arrays.load_packed(out, corpus, "train").targets_NxL.reshape(-1)
    assert len(stream) == meta["corpora"][corpus]["tokens"]["train"]  # Tokens in = tokens out.
    assert np.array_equal(rows[:len(stream)], stream) and not rows[len(stream):].any()
    assert len(rows) - len(stream) < L  # Only the last row has padding.
    assert meta["corpora"][corpus]["docs"]["train"] == len(docs)
  assert vocab.decode(list(vocab.encode("x\n    y 中文"))) == "x\n    y 中文"


def test_spm_ids_and_paths(data_dir):
  data.prepare_arrays(["tgen"], data_dir=data_dir, seq_len=L, vocab_name="spm400",
                      vocab_corpus="tgen")
  path = os.path.join(data_dir, "vocab", "spm400.model")
  vocab = data.get_vocabulary("spm400", data_dir)
  assert os.path.exists(path) and vocab.vocab_size == 400
  assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
  meta = arrays.read_meta(data.arrays_dir(data_dir, "spm400", L))
  assert meta["vocab_size"] == 400 and meta["eos_id"] == 1 and meta["dtype"] == "uint16"
  assert 1.0 < meta["corpora"]["tgen"]["bytes_per_token"] < 6.0


def test_export_meta_and_idempotent(data_dir, byte_arrays):
  meta = arrays.read_meta(byte_arrays)
  assert meta["seq_len"] == L and meta["vocab_size"] == 259 and meta["pad_id"] == 0
  assert set(meta["versions"]) >= {"seqio", "tensorflow_datasets", "tensorflow"}
  c = meta["corpora"]["tdom"]
  assert c["rows"]["validation"] <= c["max_validation_rows"] and c["rows"]["train"] > 100
  assert c["fill"]["train"] > 0.99 and abs(c["bytes_per_token"] - 1.0) < 0.01
  path = arrays.split_path(byte_arrays, "tdom", "train")
  before = os.stat(path).st_mtime_ns
  assert data.prepare_arrays(["tdom"], data_dir=data_dir, seq_len=L, vocab_name="byte",
                             max_validation_rows=20) == byte_arrays
  assert os.stat(path).st_mtime_ns == before  # Up to date: not rewritten.
  vpath = arrays.split_path(byte_arrays, "tdom", "validation")
  vbefore = os.stat(vpath).st_mtime_ns
  data.prepare_arrays(["tdom"], data_dir=data_dir, seq_len=L, vocab_name="byte",
                      max_validation_rows=1000)  # More validation rows: only those re-exported.
  assert os.stat(path).st_mtime_ns == before and os.stat(vpath).st_mtime_ns != vbefore
  c = arrays.read_meta(byte_arrays)["corpora"]["tdom"]
  assert c["max_validation_rows"] == 1000 and c["rows"]["train"] > 100
  assert c["rows"]["validation"] == arrays.load_packed(byte_arrays, "tdom", "validation").n_rows


def test_seqio_backend_equals_arrays_backend_and_resumes(data_dir, byte_arrays):
  it = data.get_mixture_dataset("tgen", "tdom", 0.3, seq_len=L, batch_size=B, seed=7,
                                data_dir=data_dir, vocab_name="byte")
  seq = [next(it) for _ in range(30)]
  sampler = arrays.MixtureSampler(arrays.load_packed(byte_arrays, "tgen", "train"),
                                  arrays.load_packed(byte_arrays, "tdom", "train"), 0.3, B, 7)
  for i, b in enumerate(seq):
    a = sampler.batch(i)
    assert set(a) == set(b) == {"inputs", "targets", "segment_ids", "positions", "weights",
                                "source"}
    for k in a:
      assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), (i, k)
  resumed = next(data.get_mixture_dataset("tgen", "tdom", 0.3, seq_len=L, batch_size=B, seed=7,
                                          start_step=23, data_dir=data_dir, vocab_name="byte"))
  assert all(np.array_equal(resumed[k], seq[23][k]) for k in resumed)
  again = data.get_mixture_dataset("tgen", "tdom", 0.3, seq_len=L, batch_size=B, seed=8,
                                   data_dir=data_dir, vocab_name="byte")
  assert not np.array_equal(next(again)["targets"], seq[0]["targets"])


@pytest.mark.parametrize("r", [0.0, 0.125, 0.5, 1.0])
def test_token_share_both_backends(data_dir, byte_arrays, r):
  it = data.get_mixture_dataset("tgen", "tdom" if r > 0 else None, r, seq_len=L, batch_size=B,
                                seed=1, data_dir=data_dir, vocab_name="byte")
  sampler = arrays.MixtureSampler(arrays.load_packed(byte_arrays, "tgen", "train"),
                                  arrays.load_packed(byte_arrays, "tdom", "train"), r, B, 1)
  for batches in ([next(it) for _ in range(500)], [sampler.batch(i) for i in range(500)]):
    tok = np.stack([b["weights"].sum(1) for b in batches])
    src = np.stack([b["source"] for b in batches])
    assert abs(tok[src == 1].sum() / tok.sum() - r) <= 0.01
    assert all(b["targets"].shape == (B, L) and b["source"].shape == (B,) for b in batches)


def test_validation_fixed_per_task(data_dir, byte_arrays):
  v1 = data.get_validation_batches("tdom", seq_len=L, batch_size=B, max_rows=20, source_id=1,
                                   data_dir=data_dir, vocab_name="byte")
  v2 = data.get_validation_batches("tdom", seq_len=L, batch_size=B, max_rows=20, source_id=1,
                                   data_dir=data_dir, vocab_name="byte")
  rows = arrays.load_packed(byte_arrays, "tdom", "validation")
  ref = arrays.validation_batches(arrays.PackedRows(rows.targets_NxL[:20]), B, 1)
  assert len(v1) == len(ref) == 3 and v1[-1]["weights"][4:].sum() == 0
  for a, b, c in zip(v1, v2, ref):
    assert all(np.array_equal(a[k], b[k]) and np.array_equal(a[k], c[k]) for k in c)


def test_registration_idempotent(data_dir):
  a = data.register_tasks(["tgen", "tdom"], data_dir=data_dir, vocab_name="byte")
  b = data.register_tasks(["tgen", "tdom"], data_dir=data_dir, vocab_name="byte")
  assert a == b and all(n in seqio.TaskRegistry.names() for n in a.values())
  m1 = data.register_mixture("tgen", "tdom", 0.25, data_dir=data_dir, vocab_name="byte")
  m2 = data.register_mixture("tgen", "tdom", 0.25, data_dir=data_dir, vocab_name="byte")
  assert m1.name == m2.name and seqio.get_mixture_or_task(m1.name) is m2
  assert sorted(m2.get_rate(t) for t in m2.tasks) == [0.25, 0.75]


@pytest.mark.parametrize("bad", [-0.5, 1.5, float("nan")])
def test_bad_ratio_is_clear_error(data_dir, bad):
  with pytest.raises(data.DataError, match="ratio"):
    data.get_mixture_dataset("tgen", "tdom", bad, seq_len=L, batch_size=B, seed=0,
                             data_dir=data_dir, vocab_name="byte")


def test_clear_errors_before_work(tmp_path, data_dir):
  empty = tmp_path / "empty.txt"
  empty.write_text("   \n")
  with pytest.raises(corpora.DataError, match="no file matches"):
    corpora.user_corpus("tmissing", files=[str(tmp_path / "nope.jsonl")])
  corpora.user_corpus("tempty", files=[str(empty)])
  with pytest.raises(data.DataError, match="empty"):
    data.prepare_arrays(["tempty"], data_dir=str(tmp_path), seq_len=L, vocab_name="byte")
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"body": "no text field"}) + "\n")
  corpora.user_corpus("tbadjsonl", files=[str(bad)])
  with pytest.raises(data.DataError, match="bad.jsonl:1: each JSONL line needs a string field"):
    data.prepare_arrays(["tbadjsonl"], data_dir=str(tmp_path), seq_len=L, vocab_name="byte")
  with pytest.raises(data.DataError, match="not built.*mixlaw corpora build"):
    data.prepare_arrays(["finance"], data_dir=str(tmp_path), seq_len=L, vocab_name="byte")
  with pytest.raises(data.DataError, match="unknown corpus"):
    data.prepare_arrays(["tgen", "nosuch"], data_dir=str(tmp_path), seq_len=L, vocab_name="byte")
  with pytest.raises(data.DataError, match="vocab_name"):
    data.prepare_arrays(["tgen"], data_dir=data_dir, seq_len=L, vocab_name="spm")
  assert not os.path.exists(os.path.join(tmp_path, "arrays"))  # Nothing was written.
  assert not os.path.exists(os.path.join(corpora.tfds_dir(str(tmp_path)), "mixlaw_text", "tgen"))


def test_tfds_corpora(tmp_path, data_dir):
  corpora.tfds_corpus("tnotfound", tfds_name="no_such_dataset_xyz")
  with pytest.raises(data.DataError, match="not available"):
    data.prepare_arrays(["tnotfound"], data_dir=data_dir, seq_len=L, vocab_name="byte")
  corpora.tfds_corpus("tmnist", tfds_name="mnist", data_dir=str(tmp_path))
  with pytest.raises(data.DataError, match="not available offline"):
    data.prepare_arrays(["tmnist"], data_dir=data_dir, seq_len=L, vocab_name="byte")
  # Any prepared TFDS dataset with a text feature works (here: tgen's own TFDS dataset).
  corpora.tfds_corpus("text", tfds_name=f"mixlaw_text/tgen:{corpora.TFDS_VERSION}",
                      data_dir=corpora.tfds_dir(data_dir))
  corpora.tfds_corpus("tbadkey", tfds_name=f"mixlaw_text/tgen:{corpora.TFDS_VERSION}",
                      data_dir=corpora.tfds_dir(data_dir), text_key="body")
  with pytest.raises(data.DataError, match="no text feature 'body'"):
    data.prepare_arrays(["tbadkey"], data_dir=data_dir, seq_len=L, vocab_name="byte")
  out = data.prepare_arrays(["text", "tgen"], data_dir=data_dir, seq_len=L, vocab_name="byte")
  a, b = (arrays.load_packed(out, c, "train").targets_NxL for c in ("text", "tgen"))
  assert np.array_equal(a, b)


def test_trainer_trains_from_the_seqio_mixture(data_dir, byte_arrays, tmp_path):
  """DataConfig.backend = 'seqio': a base run and an ensemble of CPT runs train from the seqio
  Mixture and give the rows the arrays backend gives."""
  import gin

  from mixlaw import results, sweep

  def run_sweep(backend, workdir):
    gin.clear_config()
    gin.parse_config_files_and_bindings([], [
        f"DataConfig.data_dir = '{data_dir}'", f"DataConfig.arrays_dir = '{byte_arrays}'",
        f"DataConfig.seq_len = {L}", "DataConfig.vocab_name = 'byte'",
        "DataConfig.general = 'tgen'", "DataConfig.domain = 'tdom'",
        "DataConfig.max_validation_rows = 8", f"DataConfig.backend = '{backend}'",
        "plan.sizes = ['cpu_xs']", "plan.ratios = [0.5, 1.0]",
        "pretrain/PhaseConfig.steps = 4", "cpt/PhaseConfig.steps = 3",
        "pretrain/PhaseConfig.batch_size = 4", "cpt/PhaseConfig.batch_size = 4",
        "pretrain/PhaseConfig.eval_every = 2", "cpt/PhaseConfig.eval_every = 1",
        "MeshConfig.num_devices = 2", "pretrain/make_optimizer.peak_lr = 3e-3",
        "cpt/make_optimizer.peak_lr = 1e-3", "cpt/make_optimizer.schedule = 'constant'"],
        finalize_config=False)
    sweep.execute(str(workdir), show_progress=False)
    return results.read_rows(str(workdir))

  a = run_sweep("arrays", tmp_path / "arrays")
  b = run_sweep("seqio", tmp_path / "seqio")
  gin.clear_config()
  assert [(r["run_id"], r["step"], r["split"]) for r in a] == [
      (r["run_id"], r["step"], r["split"]) for r in b]
  assert any(r["run_id"] == "cpt_cpu_xs_r0.5000_s0" for r in b)
  for x, y in zip(a, b):
    for c in ("general_loss", "domain_loss"):
      assert np.isnan(x[c]) == np.isnan(y[c])
      assert np.isnan(x[c]) or abs(x[c] - y[c]) <= 1e-6, (x, y)
