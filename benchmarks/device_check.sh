#!/usr/bin/env bash
# The accelerator check of issue 25, for one H100 or H200 (under 8 minutes; no TensorFlow).
#
#   bash benchmarks/device_check.sh [OUT_DIR]
#
# Prints one JSON line per figure (and appends them to OUT_DIR/device_check.jsonl):
#  1. paper_460m at sequence 2048, bf16 compute (float32 state), remat 'dots_no_batch', scan over
#     layers, chunked loss: `mixlaw memory`'s per-device peak, then ~50 train steps:
#     tokens/s, MFU (989 TFLOP/s dense bf16 peak), peak device memory measured.
#  2. a K = 8 cpu_m CPT ensemble (8 ratios) against the same 8 runs one after another
#     (`mixlaw sweep`, plan.ensemble True / False): wall seconds and summed tokens/s.
# Token arrays are synthetic (uniform tokens, written here with numpy): the figures are
# throughput and memory, not losses. Needs `pip install -e .[cuda12]` (or [tpu]) beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-/tmp/device_check}}
mkdir -p "$OUT"
PY=${PYTHON:-python}
export MIXLAW_XLA_CACHE="$OUT/xla" MIXLAW_HUGE_PAGES=0 XLA_PYTHON_CLIENT_PREALLOCATE=false
LOG="$OUT/device_check.jsonl"

emit() { echo "$1" | tee -a "$LOG"; }

# --- synthetic exported arrays (what `mixlaw data export` writes) -----------------------------
$PY - "$OUT" <<'EOF'
import json, os, sys
import numpy as np
out = sys.argv[1]
for name, vocab, seq, rows in (('big', 65632, 2048, 2048), ('small', 1024, 256, 4096)):
  d = os.path.join(out, 'arrays', name)
  corpora = {}
  for corpus in ('general', 'finance'):
    os.makedirs(os.path.join(d, corpus), exist_ok=True)
    rng = np.random.default_rng(len(corpus))
    for split, n in (('train', rows), ('validation', 64)):
      t = rng.integers(2, vocab, (n, seq)).astype(np.int32)
      t[:, seq // 2] = 1  # an eos mid-row: two documents per row
      np.save(os.path.join(d, corpus, f'{split}.npy'), t)
    corpora[corpus] = {'train_rows': rows, 'validation_rows': 64, 'max_validation_rows': 64}
  json.dump({'vocab_size': vocab, 'seq_len': seq, 'eos_id': 1, 'pad_id': 0,
             'corpora': corpora}, open(os.path.join(d, 'meta.json'), 'w'))
EOF

# --- 1. paper_460m, seq 2048, bf16 -------------------------------------------------------------
BIG=(--gin.DataConfig.arrays_dir="'$OUT/arrays/big'" --gin.DataConfig.seq_len=2048
     --gin.DataConfig.max_validation_rows=16 --gin.single.size="'paper_460m'"
     --gin.plan.sizes="['paper_460m']" --gin.get_config.dtype="'bfloat16'"
     --gin.get_config.remat="'dots_no_batch'" --gin.get_config.scan_layers=True
     --gin.get_config.loss_chunk=512 --gin.pretrain/make_optimizer.peak_lr=3e-4
     --gin.pretrain/PhaseConfig.batch_size=16 --gin.pretrain/PhaseConfig.microbatches=1
     --gin.MeshConfig.num_devices=1)
T0=$(date +%s)
$PY -m mixlaw.cli memory "${BIG[@]}" | tee "$OUT/memory.md"
PLANNED=$(grep paper_460m "$OUT/memory.md" | awk -F'|' '{gsub(/ /, "", $10); print $10}')
emit "{\"figure\": \"memory_plan_gib\", \"size\": \"paper_460m\", \"seq\": 2048, \"batch\": 16, \"peak_gib_per_device\": $PLANNED}"

$PY - "$OUT" "${BIG[@]}" <<'EOF' | tee -a "$LOG"
import json, sys, time
import jax, numpy as np
from mixlaw import config, ginsetup, metrics, optim, sharding, train, arrays, memory
out, flags = sys.argv[1], sys.argv[2:]
ginsetup.setup([], [f.removeprefix('--gin.').replace('=', ' = ', 1) for f in flags])
data, phase = config.DataConfig(), config.phase_config('base')
cfg = memory.model_config('paper_460m', data)
mesh = memory.mesh_from_gin()
with __import__('gin').config_scope('pretrain'):
  tx, _ = optim.make_optimizer(total_steps=60, warmup_steps=5)
state = train.init_state(cfg, tx, mesh, seed=0)
step = train.make_train_step(cfg, tx, mesh, microbatches=phase.microbatches)
smp = arrays.MixtureSampler(arrays.load_packed(data.arrays_path(), 'general', 'train'), None, 0.0,
                            phase.batch_size, 0)
batches = [sharding.shard_batch(smp.batch(i), mesh) for i in range(8)]
state, m = step(state, batches[0]); jax.block_until_ready(m)  # compile
n = 50
t = time.perf_counter()
for i in range(n):
  state, m = step(state, batches[i % 8])
jax.block_until_ready(m)
dt = (time.perf_counter() - t) / n
tps = phase.batch_size * data.seq_len / dt
mfu = tps * metrics.flops_per_token(cfg, data.seq_len) / (metrics.peak_flops() * jax.device_count())
stats = jax.devices()[0].memory_stats() or {}
print(json.dumps({'figure': 'paper_460m_train', 'seq': data.seq_len, 'batch': phase.batch_size,
                  'steps': n, 'step_s': round(dt, 4), 'tokens_per_s': round(tps),
                  'mfu': round(mfu, 4), 'loss': float(m['loss']),
                  'peak_gib_measured': round(stats.get('peak_bytes_in_use', 0) / 2**30, 2),
                  'device': jax.devices()[0].device_kind}), flush=True)
EOF

# --- 2. K = 8 cpu_m CPT ensemble vs 8 runs one after another -----------------------------------
SMALL=(--gin_file=configs/sizes.gin --gin_file=configs/pretrain.gin --gin_file=configs/cpt.gin
       --gin.DataConfig.arrays_dir="'$OUT/arrays/small'" --gin.DataConfig.seq_len=256
       --gin.DataConfig.max_validation_rows=64 --gin.plan.sizes="['cpu_m']"
       --gin.plan.ratios="[0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 1.0]"
       --gin.pretrain/PhaseConfig.steps=20 --gin.cpt/PhaseConfig.steps=100
       --gin.cpt/PhaseConfig.eval_every=50 --gin.cpt/PhaseConfig.checkpoint_every=50
       --gin.pretrain/PhaseConfig.batch_size=16 --gin.cpt/PhaseConfig.batch_size=16)
$PY -m mixlaw.cli sweep --workdir "$OUT/sweep_base" --phase base "${SMALL[@]}" >/dev/null
for ENS in True False; do
  W="$OUT/sweep_ens_$ENS"
  rm -rf "$W"
  T=$($PY -c 'import time; print(time.time())')
  $PY -m mixlaw.cli sweep --workdir "$W" --phase cpt --gin.plan.ensemble=$ENS \
      --gin.plan.base_workdir="'$OUT/sweep_base'" "${SMALL[@]}" >/dev/null
  WALL=$($PY -c "import time; print(round(time.time() - $T, 1))")
  TPS=$($PY -c "
import json, glob
r = [json.load(open(p)) for p in glob.glob('$W/runs/cpt_*/run.json')]
print(round(sum(x['train_tokens_per_s'] for x in r)) if $ENS else
      round(1 / sum(1 / x['train_tokens_per_s'] for x in r) * len(r)))")
  emit "{\"figure\": \"cpu_m_cpt_k8\", \"ensemble\": \"$ENS\", \"wall_s\": $WALL, \"tokens_per_s_summed\": $TPS}"
done
emit "{\"figure\": \"total_wall_s\", \"seconds\": $(( $(date +%s) - T0 ))}"
