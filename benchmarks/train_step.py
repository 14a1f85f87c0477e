"""Train-step throughput of mixlaw's model vs the PyTorch eager yardstick, same shapes, same run.

Prints one JSON line per shape for mixlaw (tokens/s, GFLOP/s, fraction of a matmul peak measured
in this run) and, with --torch-python, the reference's line and the ratio. mixlaw and torch are
timed alternately (--repeats rounds) and the best of each is compared: the CPUs are shared.

  python benchmarks/train_step.py --torch-python /work/torchvenv/bin/python

The benchmarked model is the stack of benchmarks/torch_reference.py: ffn = 4 d, heads = d // 64,
vocab 512, but untied (mixlaw's head is its own matrix); FLOPs per token use the reference's
formula, 6 * (params doing matmuls: all but the input embedding) + 12 * layers * seq * d, which
is the reference's own count for its tied model.

Default process setup (`hostenv.cpu_host_env`; the mixlaw CLI applies it without huge pages):
one XLA host device per core, each running its ops on one thread (--xla_cpu_multi_thread_eigen=
false), the batch split over them (data parallel, gradients all-reduced), and glibc malloc on
transparent huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1). The script re-executes itself
with that environment; the torch reference inherits it. --plain gives a plain single-device
jitted step in the environment as found.
"""
import argparse
import json
import os
import statistics
import sys
import time

import common

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPES = ((128, 4), (256, 4))


def matmul_peak(n=1024, reps=20):
  """Best GFLOP/s of n x n float32 matmuls, one per device, all devices at once (the machine's
  matmul peak as the train step can use it: with one single-threaded host device per core, a
  matmul on one device alone would only show one core)."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec as P
  devices = jax.devices()
  mesh = jax.make_mesh((len(devices),), ('d',), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)
  a = jax.device_put(jnp.ones((len(devices), n, n), jnp.float32), NamedSharding(mesh, P('d')))
  f = jax.jit(lambda a: jnp.einsum('bij,bjk->bik', a, a))
  f(a).block_until_ready()
  best = float('inf')
  for _ in range(reps):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return len(devices) * 2 * n ** 3 / best / 1e9


# --settings: the accelerator path's gin settings, each timed against 'base' in the same rounds.
SETTINGS = {'base': {}, 'bf16': {'dtype': 'bfloat16'}, 'remat_full': {'remat': 'full'},
            'remat_dots': {'remat': 'dots'}, 'scan': {'scan_layers': True},
            'loss_chunk64': {'loss_chunk': 64}, 'micro2': {'microbatches': 2},
            'micro4': {'microbatches': 4}}


def make_bench(d_model, layers, seq, batch, vocab, mesh_shape, setting=None):
  """(run(steps) -> seconds per step, flops per token)."""
  import jax
  import numpy as np
  from mixlaw import model, optim, sharding, train
  overrides = dict(setting or {})
  microbatches = overrides.pop('microbatches', 1)
  cfg = model.ModelConfig(d_model=d_model, n_layers=layers, n_heads=max(1, d_model // 64),
                          d_ff=4 * d_model, vocab_size=vocab, **overrides)
  counts = model.count_params(cfg)
  flops_per_token = 6 * (counts['total'] - vocab * d_model) + 12 * layers * seq * d_model
  tx, _ = optim.make_optimizer(1e-3, 1000, 10)
  mesh = sharding.make_mesh(*mesh_shape)
  state = train.init_state(cfg, tx, mesh, seed=0)
  step = train.make_train_step(cfg, tx, mesh, microbatches=microbatches)
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, vocab, (batch, seq + 1)).astype(np.int32)
  batch_np = dict(inputs=tokens[:, :-1], targets=tokens[:, 1:],
                  segment_ids=np.ones((batch, seq), np.int32),
                  positions=np.tile(np.arange(seq, dtype=np.int32), (batch, 1)),
                  weights=np.ones((batch, seq), np.float32),
                  source=(np.arange(batch) % 2).astype(np.int32))
  batch_dev = sharding.shard_batch(batch_np, mesh)
  box = [state]

  def run(steps):
    state = box[0]
    state, metrics = step(state, batch_dev)  # warm (and compile on first call)
    jax.block_until_ready(metrics)
    t = time.perf_counter()
    for _ in range(steps):
      state, metrics = step(state, batch_dev)
    jax.block_until_ready(metrics)
    box[0] = state
    return (time.perf_counter() - t) / steps

  return run, flops_per_token


def bench(args):
  import jax
  load = common.check_idle(args.force)
  peak = max(matmul_peak() for _ in range(2))
  shape_info = {'devices': jax.device_count(), 'mesh': args.mesh, 'load_avg': load,
                'xla_flags': os.environ.get('XLA_FLAGS', ''),
                'glibc_tunables': os.environ.get('GLIBC_TUNABLES', '')}
  for d_model, layers in args.shapes:
    dims = dict(d_model=d_model, layers=layers, seq=args.seq, batch=args.batch, vocab=args.vocab)
    run, flops_per_token = make_bench(**dims, mesh_shape=args.mesh)
    run(1)
    ours, theirs = [], []
    for _ in range(args.repeats):
      ours.append(args.batch * args.seq / run(args.steps))
      if args.torch_python:
        theirs.append(common.torch_ref(args.torch_python, **dims, steps=args.steps))
      peak = max(peak, matmul_peak(reps=5))
    tps = max(ours)
    gflops = tps * flops_per_token / 1e9
    print(json.dumps({'impl': 'mixlaw', **dims, 'tokens_per_s': round(tps),
                      'gflops_per_s': round(gflops, 1), 'peak_fraction': round(gflops / peak, 3),
                      'peak_gflops_per_s': round(peak, 1), 'median_tokens_per_s':
                      round(statistics.median(ours)), **shape_info}), flush=True)
    if theirs:
      best = max(theirs, key=lambda r: r['tokens_per_s'])
      torch_tps = best['tokens_per_s']
      print(json.dumps({**best, **dims, 'peak_fraction': round(best['gflops_per_s'] / peak, 3),
                        'median_tokens_per_s':
                        round(statistics.median(r['tokens_per_s'] for r in theirs))}), flush=True)
      print(json.dumps({'impl': 'ratio', **dims, 'load_avg': common.load_average(),
                        'mixlaw_over_torch': round(tps / torch_tps, 3),
                        'median_ratio': round(statistics.median(ours) /
                                              statistics.median(r['tokens_per_s']
                                                                for r in theirs), 3)}),
            flush=True)


def bench_settings(args):
  """Each setting's tokens/s in alternating rounds with 'base'; paired ratios to it."""
  import jax
  load = common.load_average()
  for d_model, layers in args.shapes:
    dims = dict(d_model=d_model, layers=layers, seq=args.seq, batch=args.batch, vocab=args.vocab)
    runs = {}
    for name in args.settings:
      runs[name] = make_bench(**dims, mesh_shape=args.mesh, setting=SETTINGS[name])[0]
      runs[name](1)
    tps = {name: [] for name in runs}
    for _ in range(args.repeats):
      for name, run in runs.items():
        tps[name].append(args.batch * args.seq / run(args.steps))
    for name, xs in tps.items():
      ratios = [x / b for x, b in zip(xs, tps['base'])]
      print(json.dumps({'impl': 'mixlaw', 'setting': name, **dims,
                        'tokens_per_s': round(max(xs)),
                        'median_tokens_per_s': round(statistics.median(xs)),
                        'median_ratio_to_base': round(statistics.median(ratios), 3),
                        'load_avg_start': load, 'load_avg_end': common.load_average(),
                        'devices': jax.device_count()}), flush=True)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--shapes', default=','.join(f'{d}x{l}' for d, l in SHAPES),
                 help='comma-separated d_model x layers')
  p.add_argument('--seq', type=int, default=256)
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--vocab', type=int, default=512)
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--mesh', default='-1,1,1', help='data,fsdp,tensor (-1: all devices)')
  p.add_argument('--host-devices', type=int, default=os.cpu_count() or 1,
                 help='XLA host devices, data parallel over them (default: one per core)')
  p.add_argument('--plain', action='store_true',
                 help='no process setup: the environment as found (one host device by default)')
  p.add_argument('--xla-flags', default='', help='extra XLA_FLAGS')
  p.add_argument('--torch-python', default='', help='python with torch: run the reference too')
  p.add_argument('--force', action='store_true', help='run even when the machine is loaded')
  p.add_argument('--settings', default='',
                 help=f'comma-separated, timed against base: {",".join(SETTINGS)}')
  args = p.parse_args()
  args.settings = ['base'] + [x for x in args.settings.split(',') if x and x != 'base']
  args.shapes = [tuple(int(v) for v in s.split('x')) for s in args.shapes.split(',')]
  args.mesh = [int(v) for v in args.mesh.split(',')]
  sys.path.insert(0, os.path.dirname(HERE))
  if args.xla_flags and args.xla_flags not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + args.xla_flags).strip()
  if not args.plain:
    common.reexec_with_host_env(args.host_devices)
  bench_settings(args) if len(args.settings) > 1 else bench(args)


if __name__ == '__main__':
  main()
