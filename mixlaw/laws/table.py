"""From a results table (column name -> array) to loss-increment curves per (size, ratio).

Uses the validation rows of the CPT phase. L_gen(S), L_dom(S) are the size's tokens_seen == 0
losses (averaged over its runs), or failing that its last base-phase validation row. T is CPT
tokens / tokens_per_unit (the paper's unit: T = 1 is 0.2e9 tokens).
"""

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from mixlaw.laws.fit import FitError

PAPER_TOKENS_PER_UNIT = 0.2e9
REQUIRED = ('run_id', 'size_name', 'ratio', 'tokens_seen', 'split', 'phase', 'general_loss',
            'domain_loss')
MIN_POINTS = 5  # Eq. 6 (general) has five parameters.


@dataclasses.dataclass
class Curve:
  """One (size, ratio): dL against T > 0, sorted by T; the measured losses at its last T."""
  size: str
  ratio: float
  run_ids: list[str]
  t_N: np.ndarray
  gen_N: np.ndarray
  dom_N: np.ndarray
  final_t: float
  final_gen_loss: float
  final_dom_loss: float


@dataclasses.dataclass
class Size:
  name: str
  n_params: float
  n_params_nonemb: float
  n: float  # the size variable of the surface.
  base_gen: float
  base_dom: float
  t_max: float  # the common CPT budget of its curves (the smallest last T).
  t_lo: float  # the smallest T > 0 measured.
  curves: list[Curve]

  @property
  def ratios(self) -> np.ndarray:
    return np.array([c.ratio for c in self.curves])


@dataclasses.dataclass
class Sweep:
  sizes: list[Size]
  tokens_per_unit: float
  domain: str | None
  size_column: str | None

  def curves(self) -> list[tuple[int, Curve]]:
    return [(i, c) for i, s in enumerate(self.sizes) for c in s.curves]


def columns(table: Any) -> dict[str, np.ndarray]:
  """A mapping of column -> array (dict, pandas DataFrame) or a list of row dicts -> columns."""
  if isinstance(table, Sequence) and not isinstance(table, (str, bytes)):
    keys = []
    for row in table:
      keys.extend(k for k in row if k not in keys)
    return {k: np.asarray([row.get(k) for row in table], dtype=object) for k in keys}
  if not hasattr(table, 'keys') and not hasattr(table, 'columns'):
    raise FitError('results table must be a mapping of column -> array (e.g. a pandas '
                   f'DataFrame) or a list of row dicts, got {type(table).__name__}')
  keys = list(table.columns) if hasattr(table, 'columns') else list(table.keys())
  out = {}
  for k in keys:
    col = table[k]
    out[str(k)] = np.asarray(col.to_numpy() if hasattr(col, 'to_numpy') else col)
  return out


def dedupe(cols: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Keeps the last row of each (run_id, phase, step, split) key."""
  keys = [k for k in ('run_id', 'phase', 'step', 'split') if k in cols]
  if not keys or not len(cols[keys[0]]):
    return dict(cols)
  n = len(cols[keys[0]])
  last = {}
  for i in range(n):
    last[tuple(str(cols[k][i]) for k in keys)] = i
  idx = np.array(sorted(last.values()), int)
  return {k: np.asarray(v)[idx] for k, v in cols.items()}


def _floats(cols, name, mask):
  try:
    return np.asarray(cols[name][mask], np.float64)
  except (TypeError, ValueError) as e:
    raise FitError(f'column {name!r} must be numeric: {e}') from None


def load(table: Any, *, tokens_per_unit: float | str | None = None, domain: str | None = None,
         size_column: str = 'n_params_nonemb', min_points: int = MIN_POINTS) -> Sweep:
  """Validates a results table and returns its curves. Raises FitError on bad input."""
  cols = columns(table)
  n_rows = len(next(iter(cols.values()))) if cols else 0
  if n_rows == 0:
    raise FitError('the results table is empty: need validation rows of CPT runs '
                   f'(columns {", ".join(REQUIRED)})')
  missing = [c for c in REQUIRED if c not in cols]
  if missing:
    raise FitError(f'results table lacks column(s) {missing}; required: {", ".join(REQUIRED)}')
  cols = dedupe(cols)
  split = cols['split'].astype(str)
  phase = cols['phase'].astype(str)
  dom_col = cols['domain'].astype(str) if 'domain' in cols else None
  if dom_col is not None:
    sel = (split == 'validation') & (phase == 'cpt')
    names = sorted(set(dom_col[sel]))
    if domain is None and len(names) > 1:
      raise FitError(f'the table holds several domains {names}; pass domain= to choose one')
    domain = domain if domain is not None else (names[0] if names else None)
    in_dom = dom_col == domain
  else:
    in_dom = np.ones(len(split), bool)
  cpt = (split == 'validation') & (phase == 'cpt') & in_dom
  if not cpt.any():
    raise FitError('no validation rows with phase == "cpt"'
                   + (f' for domain {domain!r}' if domain is not None else '')
                   + '; the laws need the CPT runs\' validation losses')
  base_rows = (split == 'validation') & (phase == 'base')
  tok = _floats(cols, 'tokens_seen', slice(None))
  ratio = _floats(cols, 'ratio', slice(None))
  gen = _floats(cols, 'general_loss', slice(None))
  dom = _floats(cols, 'domain_loss', slice(None))
  for name, a in (('tokens_seen', tok), ('ratio', ratio), ('general_loss', gen),
                  ('domain_loss', dom)):
    bad = cpt & ~np.isfinite(a)
    if bad.any():
      i = int(np.flatnonzero(bad)[0])
      step = cols['step'][i] if 'step' in cols else '?'
      raise FitError(f'{int(bad.sum())} CPT validation row(s) have non-finite {name} (first: '
                     f'run {cols["run_id"][i]!s}, step {step}); drop or fix them')
  if np.any(cpt & ((ratio < 0) | (ratio > 1))):
    raise FitError('ratio must lie in [0, 1] (the domain share of CPT tokens)')
  if np.any(cpt & (tok < 0)):
    raise FitError('tokens_seen must be >= 0')
  if tokens_per_unit is None:
    unit = PAPER_TOKENS_PER_UNIT
  elif tokens_per_unit == 'auto':
    unit = float(tok[cpt].max()) / 100.0
  else:
    unit = float(tokens_per_unit)
  if not np.isfinite(unit) or unit <= 0:
    raise FitError(f'tokens_per_unit must be a positive number or "auto", got {tokens_per_unit}')
  t = tok / unit
  size_name = cols['size_name'].astype(str)
  run_id = cols['run_id'].astype(str)
  has_n = {c: c in cols for c in ('n_params', 'n_params_nonemb')}
  sizes = []
  for sname in sorted(set(size_name[cpt])):
    in_size = cpt & (size_name == sname)
    at0 = in_size & (tok == 0)
    if at0.any():
      base_gen, base_dom = float(gen[at0].mean()), float(dom[at0].mean())
    else:
      b = base_rows & (size_name == sname) & np.isfinite(gen) & np.isfinite(dom)
      if not b.any():
        raise FitError(f'size {sname!r}: no base losses (no CPT row with tokens_seen == 0 and '
                       'no base-phase validation row); L_gen(S), L_dom(S) are needed for dL')
      order = np.flatnonzero(b)
      key = _floats(cols, 'step', order) if 'step' in cols else tok[order]
      i = order[int(np.argmax(key))]
      base_gen, base_dom = float(gen[i]), float(dom[i])
    nums = {}
    for c, ok in has_n.items():
      v = _floats(cols, c, in_size) if ok else np.array([np.nan])
      nums[c] = float(np.nanmax(v)) if np.isfinite(v).any() else float('nan')
    curves = []
    for r in sorted(set(ratio[in_size])):
      m = in_size & (ratio == r) & (t > 0)
      tt, order = t[m], np.argsort(t[m], kind='stable')
      if tt.size < min_points:
        raise FitError(f'size {sname!r}, ratio {r:g}: {tt.size} CPT point(s) with T > 0 but '
                       f'Eq. 6 needs at least {min_points}; evaluate more often or drop the run')
      g, d = gen[m][order] - base_gen, dom[m][order] - base_dom
      tt = tt[order]
      last = tt == tt[-1]
      curves.append(Curve(sname, float(r), sorted(set(run_id[m])), tt, g, d, float(tt[-1]),
                          float(gen[m][order][last].mean()), float(dom[m][order][last].mean())))
    if len(curves) < 2:
      raise FitError(f'size {sname!r} has a single ratio ({curves[0].ratio:g}); the CMR needs '
                     'CPT runs at two or more ratios per size')
    sizes.append(Size(sname, nums['n_params'], nums['n_params_nonemb'], float('nan'), base_gen,
                      base_dom, min(c.final_t for c in curves),
                      min(float(c.t_N[0]) for c in curves), curves))
  used = None  # the size variable: size_column, else n_params, where every size has it.
  for c in (size_column, 'n_params'):
    vals = [getattr(s, c, float('nan')) for s in sizes]
    if all(np.isfinite(v) and v > 0 for v in vals):
      used = c
      for s, v in zip(sizes, vals):
        s.n = float(v)
      break
  sizes.sort(key=lambda s: (s.n if np.isfinite(s.n) else np.inf, s.name))
  return Sweep(sizes, unit, domain, used)
