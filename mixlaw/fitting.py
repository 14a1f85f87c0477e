"""`mixlaw fit` on a workdir: read its results table and fit settings, run the laws
(mixlaw.laws.fit_table), write its fits.json. The laws read and write no files; this does.
"""

import json
import os

from mixlaw import results
from mixlaw import workdir as workdir_lib
from mixlaw.laws import api
from mixlaw.laws import csvtable
from mixlaw.laws.options import FitError, FitOptions
from mixlaw.laws.related import Others


def read_fit_options(workdir) -> dict:
  """The experiment's fit settings: the workdir's sweep.json "fit_options" ({} if absent)."""
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
  (e) / (d) (laws/related.py) from those workdirs.
  """
  rows = _rows(workdir, results_csv)
  stored = dict(read_fit_options(workdir))
  orders = workdir_lib.read_sweep(workdir).get('data_orders')
  if orders and stored.get('data_orders', 'auto') == 'auto':
    stored['data_orders'] = orders  # the sweep knows its design.
  given = {k: v for k, v in options.items() if v is not None}
  opts = FitOptions.make(FitOptions.make(**stored), **given)
  fits = api.fit_table(rows, opts, others=_others(workdir, rows, opts))
  fits['options']['source'] = {
      k: (sources or {}).get(k, 'argument') if k in given else workdir_lib.SWEEP
      for k in sorted(set(stored) | set(given))}
  workdir_lib.write_fits(workdir, fits)
  return fits


def _rows(workdir, results_csv) -> list:
  """The workdir's results rows (results_csv first becomes its table)."""
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
  return rows


def _other(workdir, rel, what):
  path = os.path.normpath(os.path.join(workdir, rel))
  if not os.path.isdir(path):
    raise FitError(f'{what} workdir {path} not found (option {what} = {rel!r}, relative to '
                   f'{workdir})')
  return path


def _others(workdir, rows, opts) -> Others:
  """What decisions (d) (opts.reference) and (e) (opts.other_domain) read from other workdirs."""
  out = Others(rows=rows)
  if opts.reference:
    out.reference_path = _other(workdir, opts.reference, 'reference')
    out.reference_rows = results.read_rows(out.reference_path)
  if opts.other_domain:
    path = _other(workdir, opts.other_domain, 'other_domain')
    out.other_fits = workdir_lib.read_fits(path)
    if out.other_fits is None:
      raise FitError(f'{path} has no fits: run `mixlaw fit --workdir {path}` first')
  return out
