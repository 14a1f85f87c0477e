"""Decisions that need a second workdir (options.other_domain, options.reference): (d) the
largest size's CMR predicted across sizes, (e) the CMR of two domains compared.

(d): the joint surface is fitted to this experiment's runs of every size but the largest, the
largest size's evals up to the reference experiment's CPT budget only (in tokens), and the
reference experiment's sizes that this one lacks; it then predicts the largest size's CMR at
this experiment's T_max, which is compared with the CMR its own full runs give.
"""

import os

import numpy as np

from mixlaw import results
from mixlaw import workdir as workdir_lib
from mixlaw.laws import decisions
from mixlaw.laws import surface as surface_lib
from mixlaw.laws import curves as curves_lib
from mixlaw.laws.options import FitError, FitOptions


def _other(workdir, rel, what):
  path = os.path.normpath(os.path.join(workdir, rel))
  if not os.path.isdir(path):
    raise FitError(f'{what} workdir {path} not found (option {what} = {rel!r}, relative to '
                   f'{workdir})')
  return path


def domains(fits: dict, workdir: str, opts: FitOptions) -> dict:
  """(e) against the other domain's fits.json (fit that workdir first)."""
  path = _other(workdir, opts.other_domain, 'other_domain')
  other = workdir_lib.read_fits(path)
  if other is None:
    raise FitError(f'{path} has no fits: run `mixlaw fit --workdir {path}` first')
  return decisions.domains(fits['cmr'], other['cmr'], other['options'].get('domain'),
                           fits['options'].get('domain'), opts)


def across_sizes(fits: dict, rows: list, workdir: str, opts: FitOptions) -> dict:
  """(d) with the reference experiment's results table."""
  path = _other(workdir, opts.reference, 'reference')
  ref = [r for r in results.read_rows(path) if r.get('domain') in (None, fits['options']['domain'])]
  sizes = sorted(fits['sizes'], key=lambda s: s['N'])
  if len(sizes) < 2:
    return dict(id='d', claim='Predictable across sizes', verdict='undecided',
                reason='needs two or more sizes')
  big = sizes[-1]['size']
  ref_cpt = [r for r in ref if r.get('phase') == 'cpt' and r.get('split') == 'validation']
  if not ref_cpt:
    raise FitError(f'{path}: no CPT validation rows in its results table')
  cap = max(float(r['tokens_seen']) for r in ref_cpt)
  mine = {s['size'] for s in sizes}
  keep = [r for r in rows if not (r.get('size_name') == big and r.get('phase') == 'cpt'
                                  and float(r.get('tokens_seen') or 0) > cap * (1 + 1e-9))]
  keep += [r for r in ref if r.get('size_name') not in mine]
  o = FitOptions.make(opts, tokens_per_unit=fits['options']['tokens_per_unit'],
                      domain=fits['options']['domain'])
  sweep = curves_lib.load(keep, o)
  delta = float(np.nanmedian([c['huber_delta'] for c in fits['curves']
                              if c['which'] == 'general' and c['huber_delta'] is not None]))
  surf = surface_lib.fit(sweep, huber_delta=delta, lam=o.lam, eps=o.eps,
                         observed_cmr=np.full(len(sweep.sizes), np.nan), n_starts=o.n_starts,
                         loso=False, n_boot=0)
  measured = [c for c in fits['cmr'] if c['size'] == big][0]
  s_big = [s for s in fits['sizes'] if s['size'] == big][0]
  pred = surface_lib.predict(surf, s_big['N'], s_big['T_max'], lam=o.lam, eps=o.eps,
                             r_lo=min(s_big['ratios']), r_hi=max(s_big['ratios']))
  used = sorted({r['size_name'] for r in keep if r.get('phase') == 'cpt'})
  return decisions.across_sizes(
      pred.get('cmr'), measured['cmr'], measured['lo'], measured['hi'], big, opts,
      fitted_sizes=used, largest_size_tokens_cap=cap, reference=opts.reference,
      surface_converged=surf.get('converged'), prediction=pred)
