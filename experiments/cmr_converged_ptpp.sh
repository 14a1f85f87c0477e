#!/usr/bin/env bash
# Trains the base-budget ladder of experiments/cmr_converged_ptpp.gin (bases, then CPT), one
# workdir per budget, logging each stage's wall time and load average to ROOT/stages.log.
set -euo pipefail
ROOT=${1:-runs/ptpp}
mkdir -p "$ROOT"
log() { echo "$(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) $*" | tee -a "$ROOT/stages.log"; }
for K in ${BUDGETS:-1 4 16}; do
  log "start x$K"
  mixlaw sweep --gin_file=experiments/cmr_converged_ptpp.gin --workdir "$ROOT/x$K" \
    --gin.pretrain/PhaseConfig.steps=$((1024 * K))
  log "end x$K"
done
