"""The laws as a pipeline: a results table and FitOptions in, every stage's typed result out.

`run` names the stage order. Each stage is one module with one function that takes the
results of the stages it reads and FitOptions whole, and returns a dataclass:

  load (curves.load -> Sweep) -> budget_fits (budgetfits.fit -> BudgetFits) -> summary
  (summary.summarise -> Summary) -> series (series.fit -> Series) -> leave_future_out
  (lfo.predict -> LeaveFutureOut) -> decisions (decisions.decide -> Decisions) -> ratio_law
  (ratiolaw.fit -> RatioLaws) -> surface (surface.run -> Surface) -> checks (checks.check ->
  Checks) -> related (related.decide -> [Decision], only with inputs from other workdirs).

fitsjson.py shapes a `Fit` into the fits.json dict. To add a stage: write its module (a
dataclass and one function of earlier results and FitOptions), call it in `run` after what it
reads, add its field to `Fit` and its section to fitsjson.to_json.
"""

import dataclasses

from mixlaw.laws import budgetfits
from mixlaw.laws import checks as checks_lib
from mixlaw.laws import curves as curves_lib
from mixlaw.laws import decisions as decisions_lib
from mixlaw.laws import lfo as lfo_lib
from mixlaw.laws import ratiolaw
from mixlaw.laws import related as related_lib
from mixlaw.laws import series as series_lib
from mixlaw.laws import summary as summary_lib
from mixlaw.laws import surface as surface_lib
from mixlaw.laws.options import FitOptions

STAGES = ('load', 'budget_fits', 'summary', 'series', 'leave_future_out', 'decisions',
          'ratio_law', 'surface', 'checks', 'related')


@dataclasses.dataclass
class Fit:
  """Every stage's result (fields in stage order)."""
  opts: FitOptions
  sweep: curves_lib.Sweep
  budget_fits: budgetfits.BudgetFits
  summary: summary_lib.Summary
  series: series_lib.Series
  leave_future_out: lfo_lib.LeaveFutureOut
  decisions: decisions_lib.Decisions
  ratio_law: ratiolaw.RatioLaws
  surface: surface_lib.Surface
  checks: checks_lib.Checks
  related: list  # decisions.Decision: (d), (e)


def run(table, opts: FitOptions, others: related_lib.Others | None = None) -> Fit:
  """Every stage in order on a results table (curves.load: column mapping, DataFrame or rows).
  others: inputs from other workdirs for decisions (d) and (e) (None: not made)."""
  sweep = curves_lib.load(table, opts)
  fits = budgetfits.fit(sweep, opts)
  summary = summary_lib.summarise(fits.full, opts)
  series = series_lib.fit(fits, opts)
  lfo = lfo_lib.predict(fits, opts)
  decisions = decisions_lib.decide(fits, series, lfo, summary, opts)
  ratio = ratiolaw.fit(fits.full, opts)
  surface = surface_lib.run(sweep, fits, summary, opts)
  checks = checks_lib.check(sweep, summary, series, opts)
  related = related_lib.decide(sweep, summary, others, opts)
  return Fit(opts, sweep, fits, summary, series, lfo, decisions, ratio, surface, checks, related)
