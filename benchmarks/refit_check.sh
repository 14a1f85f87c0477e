#!/usr/bin/env bash
# Refits committed workdirs on copies and compares each new fits.json byte for byte (cmp) with
# the committed one; `synth` fits a small synthetic 3-size sweep and compares with a reference
# JSON made by the code tree REF (for fast iteration while changing the laws).
#
# Usage: benchmarks/refit_check.sh NAME...
#   NAME: demo | demo_rerun | cmr_cpu | science | cmr_long | synth
# Env: SRC  code tree whose mixlaw is fitted with (default: this repo; e.g. a `git archive`
#           snapshot, so that edits made meanwhile do not leak into a long refit),
#      REF  code tree of the synth reference (default: SRC),
#      OUT  scratch directory (default /tmp/refit/$(basename SRC)),
#      JAX_COMPILATION_CACHE_DIR  (default /tmp/refit/jax_cache: compiled XLA programs are
#           reused across runs; the same programs, so the same bytes, in less time).
# Each committed fits.json was made by `mixlaw fit` with the flags below (its options.source
# says which came from flags; the rest from the workdir's sweep.json); science must be fitted
# before cmr_long (decision (e) reads it), and cmr_long reads ../cmr_cpu's results table.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SRC=${SRC:-$REPO}
REF=${REF:-$SRC}
OUT=${OUT:-/tmp/refit/$(basename "$SRC")}
PY=$REPO/.venv/bin/python
RES=$REPO/experiments/results
mkdir -p "$OUT"
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/refit/jax_cache}

# -P and the scratch directory as cwd: only $SRC's mixlaw is importable (python -c would put the
# cwd first on sys.path, so from the repository it would fit with the working tree instead).
fit() {  # fit WORKDIR FLAGS...
  local t0=$SECONDS
  (cd "$OUT" && PYTHONPATH=$SRC nice -n 10 "$PY" -P -c \
    'import sys, mixlaw; print(mixlaw.__file__); from mixlaw.cli import main; sys.exit(main())' \
    fit --workdir "$@" > "$OUT/log.$(echo "$1" | tr / _)" 2>&1)
  echo "fit $* : $((SECONDS - t0)) s, load $(cut -d' ' -f1-3 /proc/loadavg)"
}

copy() {  # copy NAME: the committed workdir under $OUT (once).
  [ -d "$OUT/$1" ] && return 0
  mkdir -p "$(dirname "$OUT/$1")"
  cp -r "$RES/$1" "$OUT/$1"
}

check() {  # check NAME REL: cmp the refit with the committed fits.json.
  if cmp "$OUT/$2/fits.json" "$RES/$2/fits.json"; then echo "IDENTICAL $1"; else echo "DIFFERS $1"; fi
  head -1 "$OUT/log.$(echo "$OUT/$2" | tr / _)"  # the mixlaw that was fitted with
}

for name in "$@"; do
  case $name in
    demo) copy demo; fit "$OUT/demo"; check demo demo ;;
    demo_rerun) copy demo; fit "$OUT/demo/rerun"; check demo_rerun demo/rerun ;;
    cmr_cpu) copy cmr_cpu; fit "$OUT/cmr_cpu" --budget-boot 50; check cmr_cpu cmr_cpu ;;
    science) copy cmr_long; fit "$OUT/cmr_long/science" --budget-boot 50
      check science cmr_long/science ;;
    cmr_long) copy cmr_long; copy cmr_cpu
      fit "$OUT/cmr_long" --budget-boot 50 --other-domain science --reference ../cmr_cpu
      check cmr_long cmr_long ;;
    synth)
      code='
import json, sys
from mixlaw import laws
from mixlaw.laws import synth
sizes = dict(list(synth.PAPER_SIZES.items())[:3])
table = synth.table(sizes=sizes, ratios=(0.125, 0.25, 0.5, 0.75, 1.0), n_points=40, seed=3)
fits = laws.fit_table(table, n_boot=8, seed=0, budget_fractions=(0.55, 0.7, 0.85, 1.0),
                      lfo_fractions=(0.55,), growth_fraction=0.55, predict_fraction=0.55)
json.dump(fits, open(sys.argv[1], "w"), indent=1, allow_nan=False)'
      [ -f "$OUT/synth.ref.json" ] || (cd "$OUT" && PYTHONPATH=$REF nice -n 10 "$PY" -P -c "$code" \
        "$OUT/synth.ref.json")
      (cd "$OUT" && PYTHONPATH=$SRC nice -n 10 "$PY" -P -c "$code" "$OUT/synth.json")
      if cmp "$OUT/synth.json" "$OUT/synth.ref.json"; then echo "IDENTICAL synth"; else echo "DIFFERS synth"; fi ;;
    *) echo "unknown name $name" >&2; exit 2 ;;
  esac
done
