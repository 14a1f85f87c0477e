"""Packed tokens/s of the general+domain mixture (arrays and seqio backends) vs the train step.

  python benchmarks/data_pipeline.py --data-dir data            # built + exported corpora
  python benchmarks/data_pipeline.py --data-dir data --no-train-step

Prints one JSON line per measurement: the corpus sizes (bytes, documents, tokens, bytes/token),
each backend's packed tokens/s at seq 256 x batch 32 (seqio: also the cold start, i.e. reading,
tokenizing and packing the corpora), and the CPU ladder's train-step consumption measured with
benchmarks/train_step.py's `make_bench` on the same vocabulary, with pipeline/consumption ratios.
The pipeline must stay >= 20x the fastest consumer (the smallest model).
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
LADDER = {"cpu_xs": (64, 2), "cpu_s": (128, 2), "cpu_m": (128, 4), "cpu_l": (192, 4)}


def emit(**kw):
  print(json.dumps(kw), flush=True)
  return kw


def corpus_sizes(arrays_dir, names):
  from mixlaw import arrays
  meta = arrays.read_meta(arrays_dir)
  for c in names:
    e = meta["corpora"][c]
    emit(what="corpus", corpus=c, bytes=sum(e["bytes"].values()), docs=sum(e["docs"].values()),
         tokens=sum(e["tokens"].values()), bytes_per_token=e["bytes_per_token"],
         train_rows=e["rows"]["train"], shares_by_bytes=e.get("language_shares"))
  return meta


def bench_arrays(arrays_dir, general, domain, ratio, seq, batch, n):
  from mixlaw import arrays
  s = arrays.MixtureSampler(arrays.load_packed(arrays_dir, general, "train"),
                            arrays.load_packed(arrays_dir, domain, "train"), ratio, batch, seed=0)
  s.batch(0)
  t = time.perf_counter()
  real = sum(float(s.batch(i)["weights"].sum()) for i in range(1, n + 1))
  dt = time.perf_counter() - t
  return emit(what="pipeline", backend="arrays", seq=seq, batch=batch, ratio=ratio,
              tokens_per_s=round(n * batch * seq / dt), real_tokens_per_s=round(real / dt))


def bench_seqio(data_dir, vocab, general, domain, ratio, seq, batch, n):
  from mixlaw import data
  t = time.perf_counter()
  it = data.get_mixture_dataset(general, domain, ratio, seq_len=seq, batch_size=batch, seed=0,
                                data_dir=data_dir, vocab_name=vocab)
  next(it)
  cold = time.perf_counter() - t
  t = time.perf_counter()
  real = sum(float(next(it)["weights"].sum()) for _ in range(n))
  dt = time.perf_counter() - t
  return emit(what="pipeline", backend="seqio", seq=seq, batch=batch, ratio=ratio,
              tokens_per_s=round(n * batch * seq / dt), real_tokens_per_s=round(real / dt),
              cold_start_s=round(cold, 1))


def bench_train_step(sizes, seq, batch, vocab_size, steps):
  import train_step  # benchmarks/train_step.py: the foundation benchmark.
  out = []
  for name in sizes:
    d, layers = LADDER[name]
    run, _ = train_step.make_bench(d, layers, seq, batch, vocab_size, (-1, 1, 1))
    run(1)
    tps = max(batch * seq / run(steps) for _ in range(2))
    out.append(emit(what="train_step", size=name, d_model=d, layers=layers, seq=seq, batch=batch,
                    vocab=vocab_size, tokens_per_s=round(tps)))
  return out


def main():
  from mixlaw import arrays
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data-dir", default=arrays.DATA_DIR)
  p.add_argument("--vocab", default=arrays.VOCAB_NAME)
  p.add_argument("--general", default="general")
  p.add_argument("--domains", default="finance,science")
  p.add_argument("--ratio", type=float, default=0.5)
  p.add_argument("--seq", type=int, default=256)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--batches", type=int, default=300)
  p.add_argument("--sizes", default=",".join(LADDER))
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--no-seqio", action="store_true")
  p.add_argument("--no-train-step", action="store_true")
  a = p.parse_args()
  sys.path.insert(0, HERE)
  domains = a.domains.split(",")
  from mixlaw import data
  arrays_dir = data.prepare_arrays([a.general] + domains, data_dir=a.data_dir, seq_len=a.seq,
                                   vocab_name=a.vocab)
  meta = corpus_sizes(arrays_dir, [a.general] + domains)
  pipes = [bench_arrays(arrays_dir, a.general, d, a.ratio, a.seq, a.batch, a.batches)
           for d in domains]
  if not a.no_seqio:
    pipes += [bench_seqio(a.data_dir, a.vocab, a.general, d, a.ratio, a.seq, a.batch, a.batches)
              for d in domains]
  if a.no_train_step:
    return
  steps = bench_train_step(a.sizes.split(","), a.seq, a.batch, int(meta["vocab_size"]), a.steps)
  fastest = max(s["tokens_per_s"] for s in steps)
  for backend in ("arrays", "seqio"):
    got = [p["tokens_per_s"] for p in pipes if p["backend"] == backend]
    if got:
      emit(what="headroom", backend=backend, pipeline_tokens_per_s=min(got),
           fastest_train_step_tokens_per_s=fastest, ratio=round(min(got) / fastest, 1),
           ok=min(got) >= 20 * fastest)


if __name__ == "__main__":
  main()
