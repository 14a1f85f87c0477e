"""From a results table (column name -> array) to loss-increment curves per (size, ratio).

Uses the validation rows of the CPT phase. A curve is one (size, ratio); its runs are the CPT
data-order seeds (column `cpt_seed`, 0 when absent), whole-run replicates. L_gen(S), L_dom(S)
are the size's step-0 (tokens_seen == 0) losses, averaged over its runs, or failing that its
last base-phase validation row; step 0 is the reference, never a fitted point. Evals inside the
CPT warmup are dropped: at step <= the run's own warmup length (results column `warmup_steps`,
written by the run), for older tables the step at which the run's learning rate first reaches
its maximum (train rows' lr, else validation rows'), or at step <= options.warmup_steps. T is CPT
tokens / tokens_per_unit. Rows are deduplicated as mixlaw.results does (last row per key wins).
"""

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from mixlaw import results
from mixlaw.laws.options import FitError, FitOptions

REQUIRED = ('run_id', 'size_name', 'ratio', 'tokens_seen', 'split', 'phase', 'general_loss',
            'domain_loss')
MIN_POINTS = 5  # Eq. 6 (general) has five parameters.


@dataclasses.dataclass
class Run:
  """One CPT run's fitted evals (T > 0, after warmup), in T order."""
  run_id: str
  seed: int
  t_N: np.ndarray
  gen_N: np.ndarray
  dom_N: np.ndarray
  warmup_step: int  # evals at step <= this were dropped (0: none).
  n_warmup: int  # how many evals that dropped.


@dataclasses.dataclass
class Curve:
  """One (size, ratio): dL against T of each run; the measured losses at its last T."""
  size: str
  ratio: float
  runs: list[Run]
  final_t: float
  final_gen_loss: float
  final_dom_loss: float

  @property
  def run_ids(self) -> list[str]:
    return [r.run_id for r in self.runs]

  def pooled(self, attr: str) -> np.ndarray:
    """Every run's points back to back (the fit's order; run_of() says whose)."""
    return np.concatenate([getattr(r, attr) for r in self.runs])

  def run_of(self) -> np.ndarray:
    return np.concatenate([np.full(r.t_N.size, i) for i, r in enumerate(self.runs)])

  @property
  def t_N(self):
    return self.pooled('t_N')

  @property
  def gen_N(self):
    return self.pooled('gen_N')

  @property
  def dom_N(self):
    return self.pooled('dom_N')


@dataclasses.dataclass
class Base:
  """A size's base-training validation curve (for the gates and the report)."""
  steps: np.ndarray
  tokens: np.ndarray
  gen: np.ndarray
  dom: np.ndarray


@dataclasses.dataclass
class Size:
  name: str
  n_params: float
  n_params_nonemb: float
  n: float  # the size variable of the surface.
  base_gen: float
  base_dom: float
  t_max: float  # the common CPT budget of its curves (the smallest last T).
  t_lo: float  # the smallest fitted T.
  curves: list[Curve]
  base: Base | None = None

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

  def seed_labels(self) -> list[list[int]]:
    """Per curve (curves() order) its runs' data-order seeds."""
    return [[r.seed for r in c.runs] for _, c in self.curves()]

  def shared_orders(self, option: str) -> bool:
    """Whether the seeds are paired across (size, R): the option ('shared' / 'independent'),
    or with 'auto' whether every curve has the same >= 2 seed labels (a sweep whose data seed
    depends on the CPT seed only)."""
    if option != 'auto':
      return option == 'shared'
    sets = {tuple(sorted(lab)) for lab in self.seed_labels()}
    return len(sets) == 1 and len(next(iter(sets))) >= 2


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
  """Keeps the last row of each mixlaw.results.KEY (run_id, step, split)."""
  keys = [k for k in results.KEY if k in cols]
  if not keys or not len(cols[keys[0]]):
    return dict(cols)
  last = {}
  for i in range(len(cols[keys[0]])):
    last[tuple(str(cols[k][i]) for k in keys)] = i
  idx = np.array(sorted(last.values()), int)
  return {k: np.asarray(v)[idx] for k, v in cols.items()}


def _floats(cols, name, mask=slice(None)):
  try:
    return np.asarray(np.where(cols[name][mask] == None, np.nan, cols[name][mask]),  # noqa: E711
                      np.float64)
  except (TypeError, ValueError) as e:
    raise FitError(f'column {name!r} must be numeric: {e}') from None


def warmup_step(steps, lrs, split) -> int:
  """The step at which a run's lr first reaches its maximum (train rows if any); 0 if the lr
  is at its maximum from the first row on, or unknown."""
  for sel in (split == 'train', np.ones_like(split, bool)):
    s, lr = steps[sel], lrs[sel]
    ok = np.isfinite(lr) & np.isfinite(s)
    if ok.any():
      s, lr = s[ok], lr[ok]
      order = np.argsort(s, kind='stable')
      s, lr = s[order], lr[order]
      first = int(np.argmax(lr >= lr.max() * (1 - 1e-6)))
      return 0 if first == 0 or lr[0] >= lr.max() * (1 - 1e-6) else int(s[first])
  return 0


def _domain_mask(cols, split, phase, domain):
  if 'domain' not in cols:
    return np.ones(len(split), bool), domain
  dom_col = cols['domain'].astype(str)
  sel = (split == 'validation') & (phase == 'cpt')
  names = sorted(set(dom_col[sel]))
  if domain is None and len(names) > 1:
    raise FitError(f'the table holds several domains ({", ".join(map(str, names))}); choose '
                   'one with --domain NAME (FitOptions.domain)')
  domain = domain if domain is not None else (names[0] if names else None)
  return dom_col == domain, domain


def load(table: Any, opts: FitOptions | None = None, min_points: int = MIN_POINTS) -> Sweep:
  """Validates a results table and returns its curves (tokens_per_unit, domain, size_column
  and warmup_steps from opts). Raises FitError on bad input."""
  opts = opts or FitOptions()
  tokens_per_unit, domain = opts.tokens_per_unit, opts.domain
  size_column, warmup_steps = opts.size_column, opts.warmup_steps
  cols = columns(table)
  n_rows = len(next(iter(cols.values()))) if cols else 0
  if n_rows == 0:
    raise FitError('the results table is empty: need validation rows of CPT runs '
                   f'(columns {", ".join(REQUIRED)})')
  missing = [c for c in REQUIRED if c not in cols]
  if missing:
    raise FitError(f'results table lacks column(s) {missing}; required: {", ".join(REQUIRED)}')
  cols = dedupe(cols)
  split, phase = cols['split'].astype(str), cols['phase'].astype(str)
  in_dom, domain = _domain_mask(cols, split, phase, domain)
  cpt = (split == 'validation') & (phase == 'cpt') & in_dom
  if not cpt.any():
    raise FitError('no validation rows with phase == "cpt"'
                   + (f' for domain {domain!r}' if domain is not None else '')
                   + '; the laws need the CPT runs\' validation losses')
  tok, ratio = _floats(cols, 'tokens_seen'), _floats(cols, 'ratio')
  gen, dom = _floats(cols, 'general_loss'), _floats(cols, 'domain_loss')
  _check_cpt(cols, cpt, tok, ratio, gen, dom)
  if tokens_per_unit == 'auto':
    unit = float(tok[cpt].max()) / 100.0
  else:
    unit = float(tokens_per_unit)
  if not np.isfinite(unit) or unit <= 0:
    raise FitError(f'tokens_per_unit must be a positive number or "auto", got {tokens_per_unit}')
  step = _floats(cols, 'step') if 'step' in cols else tok
  ctx = dict(cols=cols, split=split, phase=phase, cpt=cpt, t=tok / unit, tok=tok, ratio=ratio,
             gen=gen, dom=dom, step=step, warmup_steps=warmup_steps, min_points=min_points,
             lr=_floats(cols, 'lr') if 'lr' in cols else np.full(n_rows, np.nan),
             run_warmup=(_floats(cols, 'warmup_steps') if 'warmup_steps' in cols
                         else np.full(n_rows, np.nan)),
             seed=_floats(cols, 'cpt_seed') if 'cpt_seed' in cols else np.zeros(n_rows))
  size_name = cols['size_name'].astype(str)
  sizes = [_size(ctx, sname, size_name) for sname in sorted(set(size_name[cpt]))]
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


def _check_cpt(cols, cpt, tok, ratio, gen, dom):
  """FitError unless every CPT validation row has finite values, R in [0, 1], tokens >= 0."""
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


def _size(ctx, sname, size_name) -> Size:
  cols, cpt, tok, gen, dom = ctx['cols'], ctx['cpt'], ctx['tok'], ctx['gen'], ctx['dom']
  in_size = cpt & (size_name == sname)
  base_rows = (ctx['split'] == 'validation') & (ctx['phase'] == 'base') & (size_name == sname)
  at0 = in_size & (tok == 0)
  if at0.any():
    base_gen, base_dom = float(gen[at0].mean()), float(dom[at0].mean())
  else:
    b = base_rows & np.isfinite(gen) & np.isfinite(dom)
    if not b.any():
      raise FitError(f'size {sname!r}: no base losses (no CPT row with tokens_seen == 0 and '
                     'no base-phase validation row); L_gen(S), L_dom(S) are needed for dL')
    order = np.flatnonzero(b)
    i = order[int(np.argmax(ctx['step'][order]))]
    base_gen, base_dom = float(gen[i]), float(dom[i])
  nums = {}
  for c in ('n_params', 'n_params_nonemb'):
    v = _floats(cols, c, in_size) if c in cols else np.array([np.nan])
    nums[c] = float(np.nanmax(v)) if np.isfinite(v).any() else float('nan')
  curves = [_curve(ctx, sname, in_size, r, base_gen, base_dom)
            for r in sorted(set(ctx['ratio'][in_size]))]
  if len(curves) < 2:
    raise FitError(f'size {sname!r} has a single ratio ({curves[0].ratio:g}); the CMR needs '
                   'CPT runs at two or more ratios per size')
  base = None
  if base_rows.any():
    o = np.flatnonzero(base_rows)
    o = o[np.argsort(ctx['step'][o], kind='stable')]
    base = Base(ctx['step'][o], tok[o], gen[o], dom[o])
  return Size(sname, nums['n_params'], nums['n_params_nonemb'], float('nan'), base_gen,
              base_dom, min(c.final_t for c in curves),
              min(float(r.t_N[0]) for c in curves for r in c.runs), curves, base)


def _curve(ctx, sname, in_size, r, base_gen, base_dom) -> Curve:
  cols, t, step = ctx['cols'], ctx['t'], ctx['step']
  run_id = cols['run_id'].astype(str)
  all_rows = (cols['size_name'].astype(str) == sname) & (ctx['phase'] == 'cpt')
  runs = []
  for rid in sorted(set(run_id[in_size & (ctx['ratio'] == r)])):
    mine = all_rows & (run_id == rid)
    ran = ctx['run_warmup'][mine]
    if ctx['warmup_steps'] == 'auto' and np.isfinite(ran).any():
      wu = int(np.nanmax(ran))  # what the run wrote (results column warmup_steps).
    elif ctx['warmup_steps'] == 'auto':  # tables written before that column: from the lr.
      wu = warmup_step(step[mine], ctx['lr'][mine], ctx['split'][mine])
    else:
      wu = int(ctx['warmup_steps'])
    m = in_size & (run_id == rid) & (t > 0)
    keep = m & (step > wu)
    o = np.flatnonzero(keep)
    o = o[np.argsort(t[o], kind='stable')]
    seeds = ctx['seed'][in_size & (run_id == rid)]
    runs.append(Run(rid, int(np.nanmax(seeds)) if np.isfinite(seeds).any() else 0, t[o],
                    ctx['gen'][o] - base_gen, ctx['dom'][o] - base_dom, wu,
                    int(np.sum(m & ~keep))))
  for run in runs:
    if run.t_N.size < ctx['min_points']:
      raise FitError(f'size {sname!r}, ratio {r:g}, run {run.run_id}: {run.t_N.size} CPT '
                     f'eval(s) after the warmup (step > {run.warmup_step}) but Eq. 6 needs at '
                     f'least {ctx["min_points"]}; evaluate more often or drop the run')
  last_t = min(float(run.t_N[-1]) for run in runs)
  at_last = [(run.gen_N[run.t_N == run.t_N[-1]].mean(), run.dom_N[run.t_N == run.t_N[-1]].mean())
             for run in runs]
  return Curve(sname, float(r), runs, last_t,
               base_gen + float(np.mean([g for g, _ in at_last])),
               base_dom + float(np.mean([d for _, d in at_last])))
