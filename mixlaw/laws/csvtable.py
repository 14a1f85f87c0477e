"""Runs trained elsewhere: a CSV of evals -> the results-table columns the laws read.

Format (one row per eval; README "Fits for runs trained elsewhere"):
  size,n_params,ratio,seed,tokens,general_loss,domain_loss
`tokens` is CPT tokens seen; a row with tokens = 0 is the model before CPT (one per size is
enough; its ratio may be empty); `seed` (the CPT data-order seed, an integer >= 0) is
optional; n_params must be positive. Every loss is a validation loss in nats. Columns are
separated by commas (a UTF-8 byte-order mark is allowed). Bad input gets one line naming the
file and line: a missing column, a non-numeric, NaN or out-of-range value, a size without a
base row, a curve with fewer than MIN_EVALS evals.
"""

import csv
import math
import os

import numpy as np

from mixlaw.laws.options import FitError

COLUMNS = ('size', 'n_params', 'ratio', 'seed', 'tokens', 'general_loss', 'domain_loss')
OPTIONAL = ('seed',)
MIN_EVALS = 4  # per (size, R, seed) curve, after tokens = 0.


def _float(path, line, name, text, allow_empty=False):
  if allow_empty and (text is None or not str(text).strip()):
    return float('nan')
  try:
    v = float(text)
  except (TypeError, ValueError):
    raise FitError(f'{path}:{line}: column {name!r} must be a number, got {text!r}') from None
  if not math.isfinite(v):
    raise FitError(f'{path}:{line}: column {name!r} is {text!r}; every value must be finite')
  return v


def _seed(path, line, text) -> int:
  if text is None or not str(text).strip():
    return 0
  v = _float(path, line, 'seed', text)
  if v != int(v) or v < 0:
    raise FitError(f'{path}:{line}: column \'seed\' must be an integer >= 0 (a data-order '
                   f'seed), got {text!r}')
  return int(v)


def _header_hint(path, header) -> str:
  """Why a header lacks columns, when it is one column holding another separator."""
  if len(header) == 1:
    for sep in (';', '\t', '|'):
      if sep in header[0]:
        return f'; the header is one column split by {sep!r}: separate columns by commas'
  return ''


def read(path) -> dict:
  """The CSV at `path` as results-table columns (mixlaw.results schema): CPT validation rows,
  plus one base-phase validation row per size (its tokens = 0 evals averaged)."""
  try:
    with open(path, newline='', encoding='utf-8-sig') as f:
      reader = csv.DictReader(f)
      header = [h.strip() for h in (reader.fieldnames or [])]
      raw = [{(k or '').strip(): v for k, v in r.items()} for r in reader]
  except OSError as e:
    raise FitError(f'{path}: cannot read ({e.strerror})') from None
  except UnicodeDecodeError:
    raise FitError(f'{path}: not UTF-8 text; save the CSV as UTF-8') from None
  missing = [c for c in COLUMNS if c not in header and c not in OPTIONAL]
  if missing:
    raise FitError(f'{path}: missing column(s) {missing}; need {",".join(COLUMNS)} '
                   f'(seed optional){_header_hint(path, header)}')
  if not raw:
    raise FitError(f'{path}: no data rows')
  base, evals = {}, {}
  for i, r in enumerate(raw, start=2):
    size = (r.get('size') or '').strip()
    if not size:
      raise FitError(f'{path}:{i}: empty size')
    tok = _float(path, i, 'tokens', r.get('tokens'))
    if tok < 0:
      raise FitError(f'{path}:{i}: tokens must be >= 0, got {tok:g}')
    n = _float(path, i, 'n_params', r.get('n_params'))
    if n <= 0:
      raise FitError(f'{path}:{i}: n_params must be a positive parameter count, got {n:g}')
    g = _float(path, i, 'general_loss', r.get('general_loss'))
    d = _float(path, i, 'domain_loss', r.get('domain_loss'))
    if tok == 0:
      base.setdefault(size, []).append((n, g, d))
      continue
    ratio = _float(path, i, 'ratio', r.get('ratio'))
    if not 0 <= ratio <= 1:
      raise FitError(f'{path}:{i}: ratio must lie in [0, 1], got {ratio:g}')
    seed = _seed(path, i, r.get('seed'))
    evals.setdefault((size, ratio, seed), []).append((tok, n, g, d))
  sizes = sorted({k[0] for k in evals})
  if not sizes:
    raise FitError(f'{path}: no CPT evals (rows with tokens > 0)')
  for s in sizes:
    if s not in base:
      raise FitError(f'{path}: size {s!r} has no base row (tokens = 0): the losses before CPT '
                     'are needed for dL')
  for (s, r, seed), pts in evals.items():
    if len(pts) < MIN_EVALS:
      raise FitError(f'{path}: size {s!r}, ratio {r:g}, seed {seed}: {len(pts)} eval(s); '
                     f'a curve needs at least {MIN_EVALS}')
  rows = []
  # One domain per CSV, named after the file (the report's title says it).
  common = dict(domain=os.path.splitext(os.path.basename(str(path)))[0], lr=None,
                wallclock=None)
  for s in sizes:
    b = np.array(base[s])
    n = float(b[:, 0].max())
    rows.append(dict(run_id=f'base_{s}', size_name=s, n_params=n, n_params_nonemb=n,
                     ratio=0.0, step=0, tokens_seen=0, split='validation', phase='base',
                     general_loss=float(b[:, 1].mean()), domain_loss=float(b[:, 2].mean()),
                     cpt_seed=0, **common))
  for (s, r, seed), pts in sorted(evals.items()):
    for tok, n, g, d in sorted(pts):
      rows.append(dict(run_id=f'cpt_{s}_r{r:.4f}_s{seed}', size_name=s, n_params=n,
                       n_params_nonemb=n, ratio=r, step=int(tok), tokens_seen=int(tok),
                       split='validation', phase='cpt', general_loss=g, domain_loss=d,
                       cpt_seed=seed, **common))
  return rows
