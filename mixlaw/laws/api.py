"""Entry points: a results table -> the fits.json dict; one form on a CSV; the forms.

`fit_table` runs the pipeline (pipeline.py: the stages in order) and shapes its result
(fitsjson.py). Reading and writing workdirs is the application's (mixlaw/fitting.py).
"""

import csv

import numpy as np

from mixlaw.laws import fit as fit_lib
from mixlaw.laws import fitsjson
from mixlaw.laws import forms as forms_lib
from mixlaw.laws import pipeline
from mixlaw.laws.options import FitError, FitOptions
from mixlaw.laws.related import Others


def fit_table(table, options: FitOptions | None = None, others: Others | None = None,
              **overrides) -> dict:
  """Fits everything in docs/laws.md to a results table; returns the JSON-able fits dict.

  table: column -> array mapping (dict, pandas DataFrame) or list of row dicts (results schema).
  options / overrides: FitOptions fields (options.py; None = the default).
  others: inputs from other workdirs for decisions (d) and (e) (related.Others).
  """
  opts = FitOptions.make(options, **overrides)
  return fitsjson.to_json(pipeline.run(table, opts, others))


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
