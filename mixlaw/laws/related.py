"""Decisions that need a second workdir (options.other_domain, options.reference): (d) the
largest size's CMR predicted across sizes, (e) the CMR of two domains compared.

(d): the joint surface is fitted to this experiment's runs of every size but the largest, the
largest size's evals up to the reference experiment's CPT budget only (in tokens), and the
reference experiment's sizes that this one lacks; it then predicts the largest size's CMR at
this experiment's T_max, which is compared with the CMR its own full runs give.
"""

import dataclasses

import numpy as np

from mixlaw.laws import curves as curves_lib
from mixlaw.laws import decisions
from mixlaw.laws import surface as surface_lib
from mixlaw.laws.intervals import num
from mixlaw.laws.options import FitError, FitOptions
from mixlaw.laws.summary import Summary


@dataclasses.dataclass
class Others:
  """What decisions (d) and (e) need from other workdirs (the application layer reads them)."""
  rows: list | None = None  # this experiment's results rows (d).
  reference_rows: list | None = None  # the reference experiment's results rows (d).
  reference_path: str | None = None  # where those came from (messages).
  other_fits: dict | None = None  # the other domain's fits.json (e).


def decide(sweep, summary: Summary, others: Others | None, opts: FitOptions) -> list:
  """[(d) if opts.reference, (e) if opts.other_domain] as decisions.Decision."""
  out = []
  if opts.reference and others is not None and others.reference_rows is not None:
    out.append(across_sizes(sweep, summary, others, opts))
  if opts.other_domain and others is not None and others.other_fits is not None:
    out.append(domains(sweep, summary, others.other_fits, opts))
  return out


def domains(sweep, summary: Summary, other: dict, opts: FitOptions):
  """(e) against the other domain's fits.json."""
  mine = [dict(size=c.size.name, cmr=num(c.cmr), lo=c.lo, hi=c.hi) for c in summary.cmr]
  return decisions.domains(mine, other['cmr'], other['options'].get('domain'), sweep.domain,
                           opts)


def across_sizes(sweep, summary: Summary, others: Others, opts: FitOptions):
  """(d) with the reference experiment's results table."""
  ref = [r for r in others.reference_rows if r.get('domain') in (None, sweep.domain)]
  by_n = sorted(summary.cmr, key=lambda c: num(c.size.n))
  if len(by_n) < 2:
    return decisions.Decision('d', 'Predictable across sizes', 'undecided',
                              dict(reason='needs two or more sizes'))
  measured = by_n[-1]
  big = measured.size.name
  ref_cpt = [r for r in ref if r.get('phase') == 'cpt' and r.get('split') == 'validation']
  if not ref_cpt:
    raise FitError(f'{others.reference_path}: no CPT validation rows in its results table')
  cap = max(float(r['tokens_seen']) for r in ref_cpt)
  names = {c.size.name for c in by_n}
  keep = [r for r in others.rows if not (r.get('size_name') == big and r.get('phase') == 'cpt'
                                         and float(r.get('tokens_seen') or 0) > cap * (1 + 1e-9))]
  keep += [r for r in ref if r.get('size_name') not in names]
  o = FitOptions.make(opts, tokens_per_unit=sweep.tokens_per_unit, domain=sweep.domain)
  fitted = curves_lib.load(keep, o)
  deltas = [num(c.huber_delta) for c in summary.curves if c.which == 'general']
  delta = float(np.nanmedian([d for d in deltas if d is not None]))
  surf = surface_lib.fit(fitted, huber_delta=delta, lam=o.lam, eps=o.eps,
                         observed_cmr=np.full(len(fitted.sizes), np.nan), n_starts=o.n_starts,
                         loso=False, n_boot=0)
  big_s = measured.size
  ratios = [num(r) for r in big_s.ratios]
  pred = surface_lib.predict(surf, num(big_s.n), big_s.t_max, lam=o.lam, eps=o.eps,
                             r_lo=min(ratios), r_hi=max(ratios))
  used = sorted({r['size_name'] for r in keep if r.get('phase') == 'cpt'})
  return decisions.across_sizes(
      pred.get('cmr'), num(measured.cmr), measured.lo, measured.hi, big, opts,
      fitted_sizes=used, largest_size_tokens_cap=cap, reference=opts.reference,
      surface_converged=surf.get('converged'), prediction=pred)
