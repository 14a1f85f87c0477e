"""A size's CPT sweep three ways: mixlaw ensemble, mixlaw one run after another, PyTorch eager.

For each size (default cpu_s and cpu_m, vocab 512, seq 256, batch 16) a base model is trained for
a few steps (not timed), then K CPT members (K/2 ratios x 2 CPT seeds, 100 steps each, 21
validation points of 64 rows per corpus, checkpoints every 50 steps) run
  - impl "ensemble": one `mixlaw sweep --phase cpt` with plan.ensemble = True (one program);
  - impl "sequential": the same runs with plan.ensemble = False (one run after another);
  - impl "torch_sequential": benchmarks/torch_reference.py once per member, same shapes
    (training only: no evals, no checkpoints), with --torch-python.
Every process runs in mixlaw's CPU training environment (`hostenv.cpu_host_env`: one XLA host
device per core, one thread each, malloc on huge pages; the torch reference inherits it). Each
mixlaw impl runs in a fresh process with the persistent compilation cache off, so wall_s
includes compilation, restore, evals and checkpoints. tokens_per_s is the steady-state training
throughput summed over members (compile step excluded). One JSON line per measurement, then one
line of ratios per size. Refuses to run when the 1-minute load average is above 0.5 (--force:
run anyway, flagged by load_avg on every line).

  python benchmarks/sweep.py --torch-python /path/to/venv-with-torch/bin/python
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import common

ROOT = os.path.dirname(common.HERE)
SHAPES = {'cpu_s': (128, 2), 'cpu_m': (128, 4)}


def write_arrays(path, vocab, seq, rows=4096, seed=0):
  """Synthetic packed rows for two corpora (the benchmark needs no corpus build)."""
  from mixlaw import arrays
  rng = np.random.default_rng(seed)
  meta = {'vocab_size': vocab, 'seq_len': seq, 'eos_id': 1, 'pad_id': 0, 'corpora': {}}
  for name in ('gen', 'dom'):
    for split, n in (('train', rows), ('validation', 64)):
      os.makedirs(os.path.join(path, name), exist_ok=True)
      np.save(arrays.split_path(path, name, split),
              rng.integers(2, vocab, size=(n, seq)).astype(np.int32))
    meta['corpora'][name] = {'train_rows': rows, 'validation_rows': 64}
  with open(os.path.join(path, arrays.META_FILE), 'w') as f:
    json.dump(meta, f)


def bindings(arrays_dir, size, members, steps, batch, seq, ensemble, base_workdir=None):
  ratios = [round((i + 1) / (members // 2), 4) for i in range(members // 2)]
  out = [f"DataConfig.arrays_dir='{arrays_dir}'", "DataConfig.general='gen'",
         "DataConfig.domain='dom'", f"DataConfig.seq_len={seq}",
         "DataConfig.max_validation_rows=64", f"plan.sizes=['{size}']", f"plan.ratios={ratios}",
         "plan.cpt_seeds=[0, 1]", f"plan.ensemble={ensemble}",
         "pretrain/PhaseConfig.steps=2", f"pretrain/PhaseConfig.batch_size={batch}",
         f"cpt/PhaseConfig.steps={steps}", f"cpt/PhaseConfig.batch_size={batch}",
         f"cpt/PhaseConfig.eval_every={max(1, steps // 20)}",
         f"cpt/PhaseConfig.checkpoint_every={max(1, steps // 2)}",
         "cpt/make_optimizer.peak_lr=3e-4", "cpt/make_optimizer.schedule='constant'"]
  if base_workdir:
    out.append(f"plan.base_workdir='{base_workdir}'")
  return out


def mixlaw_sweep(workdir, binds, phase):
  """Runs `mixlaw sweep` in a fresh process; returns its wall seconds."""
  cmd = [sys.executable, '-m', 'mixlaw.cli', 'sweep', '--workdir', workdir, '--phase', phase,
         '--gin_file=configs/pretrain.gin', '--gin_file=configs/cpt.gin']
  cmd += [f'--gin.{b}' for b in binds]
  env = dict(os.environ, MIXLAW_XLA_CACHE='0', PYTHONPATH=ROOT)
  t = time.perf_counter()
  r = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                     text=True)
  if r.returncode:
    sys.exit(f'benchmark: {" ".join(cmd[:6])} failed:\n{r.stderr[-3000:]}')
  return time.perf_counter() - t


def steady_tokens_per_s(workdir, members, steps, batch, seq):
  """Summed member tokens/s at steady state, from the runs' step timers (compile excluded)."""
  from mixlaw import workdir as workdir_lib
  infos = [i for rid, i in workdir_lib.read_runs(workdir).items()
           if workdir_lib.parse_run_id(rid).get('kind') == 'cpt']
  assert len(infos) == members and all(i['state'] == 'done' for i in infos), infos
  tokens = (steps - 1) * batch * seq
  if infos[0]['group']:  # One program: every member shares the step timer.
    return members * tokens / infos[0]['timing_s']['step']
  return members * tokens / sum(i['timing_s']['step'] for i in infos)


def bench_size(args, size, tmp):
  d, layers = SHAPES[size]
  arrays_dir = os.path.join(tmp, 'arrays')
  if not os.path.exists(arrays_dir):
    write_arrays(arrays_dir, args.vocab, args.seq)
  base = os.path.join(tmp, f'base_{size}')
  common_kw = dict(size=size, members=args.members, steps=args.steps, batch=args.batch,
                   seq=args.seq)
  mixlaw_sweep(base, bindings(arrays_dir, ensemble=True, **common_kw), 'base')
  out = {}
  for impl, ens in (('ensemble', True), ('sequential', False)):
    load = common.load_average()
    work = os.path.join(tmp, f'{impl}_{size}')
    wall = mixlaw_sweep(work, bindings(arrays_dir, ensemble=ens, base_workdir=base, **common_kw),
                        'cpt')
    out[impl] = {'tokens_per_s': steady_tokens_per_s(work, args.members, args.steps, args.batch,
                                                     args.seq), 'wall_s': wall, 'load_avg': load}
  if args.torch_python:
    load, t, tps = common.load_average(), time.perf_counter(), []
    for _ in range(args.members):
      tps.append(common.torch_ref(args.torch_python, d, layers, args.seq, args.batch, args.vocab,
                                  args.steps)['tokens_per_s'])
    # Members run one after another: summed throughput = total tokens / total step time.
    out['torch_sequential'] = {'tokens_per_s': args.members / sum(1 / x for x in tps),
                               'wall_s': time.perf_counter() - t, 'load_avg': load}
  for impl, r in out.items():
    print(json.dumps({'bench': 'sweep', 'size': size, 'members': args.members, 'impl': impl,
                      'steps': args.steps, 'batch': args.batch, 'seq': args.seq,
                      'vocab': args.vocab, 'tokens_per_s': round(r['tokens_per_s']),
                      'wall_s': round(r['wall_s'], 1), 'load_avg': r['load_avg']}), flush=True)
  e, s = out['ensemble'], out['sequential']
  ratios = {'ensemble_over_sequential_tokens_per_s': e['tokens_per_s'] / s['tokens_per_s'],
            'sequential_over_ensemble_wall_s': s['wall_s'] / e['wall_s']}
  if 'torch_sequential' in out:
    ratios['ensemble_over_torch_tokens_per_s'] = e['tokens_per_s'] / out['torch_sequential'][
        'tokens_per_s']
  print(json.dumps({'bench': 'sweep', 'size': size, 'members': args.members, 'impl': 'ratios',
                    **{k: round(v, 3) for k, v in ratios.items()},
                    'load_avg': common.load_average()}), flush=True)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--sizes', default='cpu_s,cpu_m')
  p.add_argument('--members', type=int, default=8, help='K (even: K/2 ratios x 2 seeds)')
  p.add_argument('--steps', type=int, default=100)
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--seq', type=int, default=256)
  p.add_argument('--vocab', type=int, default=512)
  p.add_argument('--torch-python', default='', help='python with torch: run the reference too')
  p.add_argument('--force', action='store_true', help='run even when the machine is loaded')
  args = p.parse_args()
  if args.members < 2 or args.members % 2:
    p.error('--members must be even and >= 2')
  common.reexec_with_host_env(os.cpu_count() or 1)
  common.check_idle(args.force)
  with tempfile.TemporaryDirectory() as tmp:
    for size in args.sizes.split(','):
      bench_size(args, size, tmp)


if __name__ == '__main__':
  main()
