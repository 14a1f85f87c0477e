#!/usr/bin/env bash
# Sets up mixlaw on a fresh machine: the Debian package lists (for the corpora build, when root),
# a virtual environment in .venv, and mixlaw with its pinned dependencies (+ test tools).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  # `apt-get download` (corpora build) needs current package lists; only root can refresh them.
  apt-get update -qq || echo "setup: apt-get update failed; Debian-sourced corpora will be skipped" >&2
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
echo "setup: done ($(.venv/bin/python -c 'import jax, seqio; print("jax", jax.__version__)'))"
