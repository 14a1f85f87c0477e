"""Every setting of the laws, with its one default, and the laws' error class.

`FitOptions` is what `fit_table` / `write_fits` take (as keyword arguments or an instance); the
CLI, the sweep's `fit_options` (stored in WORKDIR/sweep.json) and the demo only ever pass values
they were given, so a default lives here and nowhere else. None for any option means "the
default" (so callers can forward unset flags).
"""

from __future__ import annotations

import dataclasses
import math
import numbers

from mixlaw.errors import MixlawError

LAM_RANGE = (100.0, 7000.0)  # the lambdas the paper uses (Gu et al. 2024, Sec. 4).
PAPER_TOKENS_PER_UNIT = 0.2e9  # the paper's unit of T: T = 1 is 0.2B CPT tokens.
N_STARTS = 64  # multi-start grid of a fit (FitOptions and the bare fitter).


class FitError(MixlawError, ValueError):
  """Bad input to a fit: the message says what is wrong and what is needed."""


@dataclasses.dataclass(frozen=True)
class FitOptions:
  """Settings of a fit of the CMR machinery (docs/laws.md explains each)."""
  eps: float = 0.05  # tolerance of condition A, nats (the paper's).
  # Geometric middle of the paper's 100..7000 (sqrt(7e5) ~ 840), rounded; the CMR at both ends
  # is reported as lam_sensitivity.
  lam: float = 1000.0
  # CPT tokens per unit of T: a number, or 'auto' = the largest CPT token count / 100 (T_max =
  # 100, the paper's range). Feasibility and the CMR do not depend on it; the CMR law's a does.
  tokens_per_unit: float | str = 'auto'
  n_boot: int = 200  # bootstrap replicates (0: no intervals).
  seed: int = 0
  ci_level: float = 0.95
  # Huber delta of every Eq. 6 fit = huber_c * sigma of the curve (sigma from second
  # differences); 1.345 is the classical 95%-efficiency constant under Gaussian noise.
  huber_c: float = 1.345
  # CPT evals at step <= warmup_steps are not fitted: 'auto' = the step at which the run's
  # learning rate first reaches its maximum (read from the table's lr column).
  warmup_steps: int | str = 'auto'
  # Terms of the general-loss Eq. 6: 2 (the paper's), 1 (its monotone a T^s + b case) or
  # 'auto': two where the evals turn or their late slope rejects the monotone one-term fit
  # (turn_z below: it cannot fall after a rise, so it is never chosen there) or where AICc,
  # with the effective sample size under serial correlation, supports them; else one
  # (docs/laws.md, "The general-loss form").
  general_terms: int | str = 'auto'
  # A curve's evals turn when its highest window of evals is neither the first nor the last
  # and the fall from it to the end exceeds turn_z standard errors; the late slope rejects the
  # one-term fit when it is negative and the fit's slope at T_max lies turn_z standard errors
  # above it.
  turn_z: float = 2.0
  # Model-free condition B: slopes over the trailing window (T_b (1 - slope_window), T_b].
  slope_window: float = 0.25
  # Budgets T_b = f T_max at which the CMR is refitted from the evals with T <= T_b only
  # ((1.0,): the full fit only, no series, no leave-future-out; e.g. for calibration runs).
  budget_fractions: tuple = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
  # Leave-future-out: fit T <= f T_max, predict T_max (each f must be a budget fraction).
  lfo_fractions: tuple = (0.25, 0.5, 0.75)
  # Bootstrap replicates of each earlier budget's refit (None: n_boot).
  budget_boot: int | None = None
  # CPT data orders: 'shared' (one order per seed index across every size and R: seed indices
  # are resampled jointly), 'independent' (runs resampled per (size, R)), or 'auto' (the
  # sweep's sweep.json says; for a bare table, 'shared' when every (size, R) has the same seed
  # labels).
  data_orders: str = 'auto'
  # Pre-registered decisions (decisions.py): z, budget fractions and tolerances.
  decision_z: float = 2.0
  growth_fraction: float = 0.25  # CMR(T_max) against CMR(growth_fraction T_max).
  predict_fraction: float = 0.5  # fit T <= f T_max, predict T_max.
  tol_cmr: float = 0.06  # predicted - measured CMR.
  tol_dgen: float = 0.01  # predicted - measured dL_gen at T_max, nats.
  other_domain: str | None = None  # a workdir (relative to this one) with the other domain.
  reference: str | None = None  # a workdir (relative) of a shorter experiment, same design.
  # How the bootstrap redraws eval noise within a run: 'ar1' (residuals as AR(1) noise with the
  # estimated serial correlation) or 'blocks' (circular moving blocks; kept as a cross-check:
  # on 25-eval runs it covered 53% where 'ar1' covered 94%, docs/laws.md).
  eval_resampling: str = 'ar1'
  # How the bootstrap varies the seeds (bootstrap.py): 'wild_t' (each run's deviation from the
  # pooled fit times Gaussian weights and a t_{n-1} scale: a fresh set of n seeds' mean, with
  # the seed variance known only from n - 1 degrees of freedom) or 'runs' (whole runs drawn with
  # replacement; kept as a cross-check: with 2 seeds it covered 86% where 'wild_t' covered the
  # nominal rate, docs/laws.md).
  seed_resampling: str = 'wild_t'
  smooth_k: int = 5  # the model-free values at T_b: mean of the last smooth_k evals per run.
  domain: str | None = None  # which domain, if the table holds several.
  size_column: str = 'n_params_nonemb'  # model size N of the joint surface.
  n_starts: int = N_STARTS
  surface: bool = True  # fit the joint (R, N, T) surface (and leave-one-size-out).
  # Design gates (checks.gates): what a powered experiment needs.
  gate_control_max: float = 0.02  # |dL_gen(T_max)| of the R = 0 control, nats.
  gate_rise_min_eps: float = 3.0  # dL_gen(T_max) at the largest R, in units of eps.
  gate_sigma_max_eps: float = 0.2  # eval noise sigma, in units of eps.
  gate_min_seeds: int = 2  # CPT seeds per (size, R).
  gate_min_evals: int = 20  # fitted evals per CPT run.

  def __post_init__(self):
    def check(ok, what):
      if not ok:
        raise FitError(what)

    def pos(x):
      return (isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)
              and x > 0)

    def count(x, lo):
      return isinstance(x, numbers.Integral) and not isinstance(x, bool) and x >= lo
    check(pos(self.eps), f'eps must be a positive number of nats, got {self.eps!r}')
    check(pos(self.lam), f'lam must be positive (the paper uses 100..7000), got {self.lam!r}')
    check(self.tokens_per_unit == 'auto' or pos(self.tokens_per_unit),
          f'tokens_per_unit must be a positive number or "auto", got {self.tokens_per_unit!r}')
    for name in ('n_boot', 'seed'):
      v = getattr(self, name)
      check(count(v, 0), f'{name} must be an integer >= 0, got {v!r}')
    check(pos(self.ci_level) and self.ci_level < 1,
          f'ci_level must lie in (0, 1), got {self.ci_level!r}')
    for f in dataclasses.fields(self):
      if f.type == 'bool':  # 'false' or 0 must not pass as a setting.
        check(isinstance(getattr(self, f.name), bool),
              f'{f.name} must be true or false, got {getattr(self, f.name)!r}')
    check(pos(self.huber_c), f'huber_c must be positive, got {self.huber_c!r}')
    check(self.warmup_steps == 'auto' or count(self.warmup_steps, 0),
          f'warmup_steps must be "auto" or an integer >= 0, got {self.warmup_steps!r}')
    check(self.general_terms in ('auto', 1, 2),
          f'general_terms must be 1, 2 or "auto", got {self.general_terms!r}')
    check(self.eval_resampling in ('ar1', 'blocks'),
          f'eval_resampling must be "ar1" or "blocks", got {self.eval_resampling!r}')
    check(self.seed_resampling in ('wild_t', 'runs'),
          f'seed_resampling must be "wild_t" or "runs", got {self.seed_resampling!r}')
    check(count(self.smooth_k, 2),
          f'smooth_k must be an integer >= 2, got {self.smooth_k!r}')
    check(count(self.n_starts, 1),
          f'n_starts must be an integer >= 1, got {self.n_starts!r}')
    check(pos(self.turn_z), f'turn_z must be positive, got {self.turn_z!r}')
    check(pos(self.decision_z), f'decision_z must be positive, got {self.decision_z!r}')
    check(pos(self.slope_window) and self.slope_window <= 1,
          f'slope_window must lie in (0, 1], got {self.slope_window!r}')
    for name in ('budget_fractions', 'lfo_fractions'):
      v = getattr(self, name)
      check(isinstance(v, tuple) and all(pos(x) and x <= 1 for x in v),
            f'{name} must be fractions in (0, 1], got {v!r}')
    check(1.0 in self.budget_fractions,
          f'budget_fractions must include 1.0 (the full fit), got {self.budget_fractions!r}')
    check(all(f in self.budget_fractions for f in self.lfo_fractions),
          f'every lfo_fraction must be a budget fraction, got {self.lfo_fractions!r}')
    for name in ('growth_fraction', 'predict_fraction'):
      v = getattr(self, name)
      check(pos(v) and v <= 1, f'{name} must lie in (0, 1], got {v!r}')
    check(self.budget_boot is None or count(self.budget_boot, 0),
          f'budget_boot must be an integer >= 0 or None, got {self.budget_boot!r}')
    check(self.data_orders in ('auto', 'shared', 'independent'),
          f'data_orders must be "auto", "shared" or "independent", got {self.data_orders!r}')
    check(pos(self.tol_cmr) and pos(self.tol_dgen), 'tol_cmr and tol_dgen must be positive')

  @classmethod
  def make(cls, options: FitOptions | None = None, **kw) -> FitOptions:
    """options (or the defaults) with every non-None keyword replaced; unknown names fail."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kw) - known)
    if unknown:
      raise FitError(f'unknown fit option(s) {unknown}; known: {", ".join(sorted(known))}')
    kw = {k: (int(v) if isinstance(v, float) and k in ('n_boot', 'seed', 'smooth_k',
                                                       'n_starts', 'warmup_steps',
                                                       'budget_boot')
                                                       and v == int(v) else v)
          for k, v in kw.items() if v is not None}
    kw = {k: (tuple(sorted(float(x) for x in v)) if k.endswith('_fractions')
              and isinstance(v, (list, tuple)) else v) for k, v in kw.items()}
    return dataclasses.replace(options or cls(), **kw)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)
