"""Entry points: results table -> fits.json dict; one form on a CSV; the forms.

`fit_table` runs the stages of stages.py on the full table and on every budget cut
(budgets.py), shapes fits.json (fitsjson.py), fits the joint surface (surface.py) and the checks;
`write_fits` does it for a workdir (paths and files through mixlaw.workdir).
"""

import csv
import dataclasses
import json
import logging
import os
import time

import numpy as np

from mixlaw import results
from mixlaw.laws import bootstrap
from mixlaw.laws import budgets as budgets_lib
from mixlaw.laws import checks
from mixlaw.laws import decisions
from mixlaw.laws import fit as fit_lib
from mixlaw.laws import forms as forms_lib
from mixlaw.laws import modelfree
from mixlaw.laws import surface as surface_lib
from mixlaw.laws import curves as curves_lib
from mixlaw.laws.fitsjson import SCHEMA_VERSION, _lfo_rows, _series, to_json  # noqa: F401
from mixlaw.laws.options import FitError, FitOptions
from mixlaw.laws.stages import (  # noqa: F401  (turns, _ratio_law_rows: re-exported)
    Boot, Data, Eq6, cmr_laws, cmr_stage, fit_eq6, interp_exponents, prepare, ratio_tables,
    replicate, turns, _ratio_law_rows)

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- fit_table

@dataclasses.dataclass
class Analysis:
  """Every stage of one fit of a sweep (the full one, or one cut at a budget)."""
  sweep: curves_lib.Sweep
  data: Data
  eq6: Eq6
  boot: Boot
  e: dict
  per_size: list  # SizeCMR at the sweep's own T_max per size.
  free: list  # modelfree.at_budget per size at its T_max.


def analyse(sweep, opts: FitOptions, n_boot: int, seeds_of: dict, shared: bool) -> Analysis:
  """Eq. 6, bootstrap, exponents, Definition 2 and the model-free CMRs at each size's T_max.
  seeds_of: (size, R) -> the bootstrap's stage-1 draw of that curve (bootstrap.seed_draws;
  shared by every cut, so replicate b draws the same seeds at every budget); shared: the data
  orders are shared across (size, R)."""
  data = prepare(sweep)
  eq6 = fit_eq6(data, opts)
  seeds = [tuple(a[:n_boot] for a in seeds_of[(c.size, c.ratio)]) for c in data.curves]
  boot = replicate(data, eq6, opts, n_boot, seeds)
  e = interp_exponents(data, boot)
  per_size = cmr_stage(data, boot, e, opts, budgets_of=lambda s: np.array([s.t_max]))
  rng = np.random.default_rng([opts.seed, 11])
  free = [modelfree.at_budget(s, s.t_max, float(e['general'][0, i]), float(eq6.rho_S[i]),
                              opts, rng, shared) for i, s in enumerate(sweep.sizes)]
  return Analysis(sweep, data, eq6, boot, e, per_size, free)


def fit_table(table, options: FitOptions | None = None, **overrides) -> dict:
  """Fits everything in docs/laws.md to a results table; returns the JSON-able fits dict.

  table: column -> array mapping (dict, pandas DataFrame) or list of row dicts (results schema).
  options / overrides: FitOptions fields (options.py; None = the default).
  Stages: load -> for every budget fraction f (1 last): cut the evals at f T_max, analyse
  (Eq. 6, bootstrap, exponents, Definition 2, model-free) -> the CMR series and CMR laws from
  those refits -> leave-future-out -> ratio laws -> surface -> checks -> fits.json dict.
  """
  opts = FitOptions.make(options, **overrides)
  clock = _Clock()
  sweep = curves_lib.load(table, opts)
  shared = sweep.shared_orders(opts.data_orders)
  seeds = bootstrap.seed_draws(sweep.seed_labels(), opts.n_boot, opts.seed, shared,
                               opts.seed_resampling)
  seeds_of = {(c.size, c.ratio): d for (_, c), d in zip(sweep.curves(), seeds)}
  full = analyse(sweep, opts, opts.n_boot, seeds_of, shared)
  clock('full fit')
  cuts, dropped = {}, {}
  n_cut = opts.n_boot if opts.budget_boot is None else min(opts.budget_boot, opts.n_boot)
  for f in opts.budget_fractions:
    if f >= 1.0:
      continue
    sw, dropped[f] = budgets_lib.cut(sweep, f)
    cuts[f] = analyse(sw, opts, n_cut, seeds_of, shared) if sw.sizes else None
    clock(f'refit at {f:g} T_max')
  data, eq6, boot, e, per_size = full.data, full.eq6, full.boot, full.e, full.per_size
  series = _series(full, cuts, dropped, opts)
  laws = cmr_laws(series['families'], min(opts.n_boot, n_cut))
  ratio_law, heldout = ratio_tables(data, eq6, opts)
  out = to_json(data, eq6, boot, e, per_size, full.free, laws, opts)
  out['options']['data_orders_used'] = 'shared' if shared else 'independent'
  out['cmr_series'] = series['rows']
  out['leave_future_out'] = _lfo_rows(full, cuts, opts)
  out['decisions'] = [
      decisions.growth(sweep.sizes, series['families'], series['fractions'], opts),
      decisions.size_trend(sweep.sizes, per_size, shared, opts),
      decisions.predictable_in_t(out['leave_future_out'], out['cmr'], opts)]
  clock('CMR series, laws, leave-future-out')
  out['ratio_law'], out['ratio_heldout'] = ratio_law, heldout
  observed = np.array([np.nan if r['cmr'] is None else r['cmr'] for r in out['cmr']])
  band = [[np.nan if r[k] is None else r[k] for r in out['cmr']] for k in ('lo', 'hi')]
  out['surface'] = (surface_lib.fit(sweep, huber_delta=float(np.nanmedian(eq6.delta['general'])),
                                    lam=opts.lam, eps=opts.eps, observed_cmr=observed,
                                    n_starts=opts.n_starts, seed=opts.seed,
                                    data_orders='shared' if shared else 'independent',
                                    observed_lo=np.array(band[0]), observed_hi=np.array(band[1]),
                                    level=opts.ci_level) if opts.surface
                    else dict(reason='not requested (option surface = false)'))
  clock('ratio laws, surface')
  out['trends'] = checks.trends(out)
  out['gates'] = dataclasses.asdict(checks.gates(sweep, out, opts))
  return out


class _Clock:
  """Logs the time of each stage (logging level DEBUG)."""

  def __init__(self):
    self.t = time.perf_counter()

  def __call__(self, stage):
    t = time.perf_counter()
    log.debug('fit_table: %s took %.2f s', stage, t - self.t)
    self.t = t


# ----------------------------------------------------------------------------- workdir

def read_fit_options(workdir) -> dict:
  """The experiment's fit settings: the workdir's sweep.json "fit_options" ({} if absent)."""
  from mixlaw import workdir as workdir_lib
  try:
    return workdir_lib.read_fit_options(workdir)
  except workdir_lib.WorkdirError as e:
    raise FitError(str(e)) from None


def write_fits(workdir, sources=None, results_csv=None, **options) -> dict:
  """Reads the workdir's results table (through mixlaw.results), fits with its sweep.json
  fit_options overridden by the non-None keyword options, writes its fits.json; returns it.

  sources: where each keyword option came from ('flag', 'gin', ...; default 'argument'),
  recorded with the stored ones ('sweep.json') in fits['options']['source'].
  results_csv: a CSV of runs trained elsewhere (csvtable.py): it becomes the workdir's results
  table first (an existing one is replaced). Options other_domain / reference add decisions
  (e) / (d) (related.py).
  """
  from mixlaw import workdir as workdir_lib
  from mixlaw.laws import csvtable
  from mixlaw.laws import related
  path = workdir_lib.results_path(workdir)
  if results_csv is not None:
    rows = csvtable.read(results_csv)
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(path):
      os.remove(path)
    results.append(workdir, rows)
  if not os.path.exists(path):
    raise FitError(f'{path} not found: run the sweep first (it writes the results table)')
  try:
    rows = results.read_rows(workdir)
  except json.JSONDecodeError as e:
    raise FitError(f'{path}: not a JSON-lines table ({e.msg} at line {e.lineno})') from None
  if not rows:
    raise FitError(f'{path} is empty: the laws need validation rows of CPT runs')
  stored = dict(read_fit_options(workdir))
  orders = workdir_lib.read_sweep(workdir).get('data_orders')
  if orders and stored.get('data_orders', 'auto') == 'auto':
    stored['data_orders'] = orders  # the sweep knows its design.
  given = {k: v for k, v in options.items() if v is not None}
  opts = FitOptions.make(FitOptions.make(**stored), **given)
  fits = fit_table(rows, opts)
  if opts.reference:
    fits['decisions'].append(related.across_sizes(fits, rows, workdir, opts))
  if opts.other_domain:
    fits['decisions'].append(related.domains(fits, workdir, opts))
  fits['options']['source'] = {
      k: (sources or {}).get(k, 'argument') if k in given else workdir_lib.SWEEP
      for k in sorted(set(stored) | set(given))}
  workdir_lib.write_fits(workdir, fits)
  return fits


def fit_form_csv(form_name: str, csv_path, huber_delta: float | str | None = None) -> dict:
  """Fits a named form to a CSV whose columns are the form's variables plus `loss`.

  huber_delta: None = the form's documented loss (forms.Form.huber_delta: Huber with a
  noise-scaled delta, least squares for ratio_law / cmr_law, the published 1e-3 on log
  residuals for chinchilla); a number = that delta; 'lsq' = least squares; 'noise'.
  """
  form = forms_lib.get_form(form_name)
  with open(csv_path, newline='') as f:
    rows = list(csv.DictReader(f))
  if not rows:
    raise FitError(f'{csv_path}: no data rows; need columns {", ".join(form.variables)}, loss')
  missing = [c for c in form.variables + ('loss',) if c not in rows[0]]
  if missing:
    raise FitError(f'{csv_path}: missing column(s) {missing}; form {form.name} needs '
                   f'{", ".join(form.variables)} and loss')
  try:
    cols = {c: np.array([float(r[c]) for r in rows]) for c in form.variables + ('loss',)}
  except (TypeError, ValueError) as e:
    raise FitError(f'{csv_path}: non-numeric value ({e})') from None
  res = fit_lib.fit_one(form, {k: cols[k] for k in form.variables}, cols['loss'],
                        huber_delta='auto' if huber_delta is None else huber_delta)
  row = res.row(0)
  return dict(form=form.name, params=row['params'], objective=row['objective'],
              mse=row['mse'], r2=row['r2'], converged=row['converged'],
              at_bound=row['at_bound'], flags=row['flags'], huber_delta=row['huber_delta'])


def list_forms() -> list[dict]:
  return forms_lib.list_forms()
