"""Learning-rate schedules of the runs, and the areas under them that the dynamics law reads.

A run's schedule is (kind, peak, warmup, total steps, final/peak ratio), read from its
`run.json` (steps, warmup_steps, batch_size x seq_len tokens per step) and `config.gin` (the
phase's `make_optimizer` bindings; `from_runs`, the caller reading the files), or for a CSV from optional columns (`SCHEDULE_COLUMNS`).
`lrs` is mixlaw.optim.make_schedule in numpy (the laws may not import the trainer;
tests/test_laws_dynamics.py checks the two agree): update s (1-based) uses lrs(s - 1), as the
results rows' `lr` column records (docs/contracts.md).

Areas (Tissue et al. 2024, arXiv 2408.11029, Eq. 1; Wang et al. 2025, arXiv 2505.07796,
Eq. 2), over the base's updates followed by the CPT run's:
  S1 = sum of the learning rates so far (the forward area);
  S2 = sum of m_i, m_i = lam m_(i-1) + (eta_(i-1) - eta_i) (the annealing area, momentum lam):
       lr decreases add to it, a re-warmup subtracts. The base's own warmup is not counted
       (m starts at its end), the CPT's re-warmup is: it moves the lr away from the base's
       final lr, as the paper's Fig. 3 marks ("LR re-warmup").
Each area is split at the base's last step into its pretraining and CPT parts (S1pt, S2pt are
constant during CPT; S2cpt also holds the base's annealing momentum as it decays in CPT).
"""

import dataclasses
import math
import re

import numpy as np

from mixlaw.laws.options import FitError

MOMENTUM = 0.999  # lam: the value both papers use in every experiment.
KINDS = ('constant', 'cosine')
# Optional CSV columns of the dynamics law (one value per run; the base's on any of its rows).
SCHEDULE_COLUMNS = ('tokens_per_step', 'cpt_schedule', 'cpt_peak_lr', 'cpt_warmup_steps',
                    'cpt_steps', 'cpt_min_lr_ratio', 'base_schedule', 'base_peak_lr',
                    'base_warmup_steps', 'base_steps', 'base_min_lr_ratio')
_GIN = re.compile(r'^\s*(?:(?P<scope>[\w.]+)/)?make_optimizer\.(?P<name>\w+)\s*=\s*(?P<v>.+?)\s*$')


@dataclasses.dataclass(frozen=True)
class Schedule:
  """One phase's schedule: linear warmup to `peak` over `warmup` updates, then constant or
  cosine to min_ratio x peak at update `steps`."""
  kind: str
  peak: float
  warmup: int
  steps: int
  min_ratio: float = 0.1

  def __post_init__(self):
    ok = (self.kind in KINDS and math.isfinite(self.peak) and self.peak > 0 and self.steps > 0
          and 0 <= self.warmup <= self.steps and 0 <= self.min_ratio <= 1)
    if not ok:
      raise FitError(f'bad learning-rate schedule {self}: kind in {KINDS}, peak > 0, '
                     '0 <= warmup <= steps, 0 <= min_ratio <= 1')

  def lrs(self, n: int | None = None) -> np.ndarray:
    """Learning rate of updates 1..n (default: every update of the phase), float64."""
    i = np.arange(self.steps if n is None else n, dtype=np.float64)
    warm = self.peak * np.minimum((i + 1) / max(self.warmup, 1), 1.0)
    if self.kind == 'constant':
      after = np.full_like(i, self.peak)
    else:
      prog = np.clip((i - self.warmup) / max(self.steps - self.warmup, 1), 0.0, 1.0)
      after = self.peak * (self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + np.cos(np.pi * prog)))
    return np.where(i < self.warmup, warm, after)

  def with_peak(self, peak: float) -> 'Schedule':
    return dataclasses.replace(self, peak=float(peak))

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RunSchedule:
  """What the law needs of a CPT run: its base's schedule, its own, tokens per CPT update."""
  base: Schedule
  cpt: Schedule
  tokens_per_step: float

  def to_json(self) -> dict:
    return dict(base=self.base.to_json(), cpt=self.cpt.to_json(),
                tokens_per_step=self.tokens_per_step)

  @classmethod
  def from_json(cls, d: dict) -> 'RunSchedule':
    return cls(Schedule(**d['base']), Schedule(**d['cpt']), float(d['tokens_per_step']))


def areas(base: Schedule, cpt_lrs_M: np.ndarray, lam: float = MOMENTUM) -> dict:
  """S1, S2 after every base update (arrays of base.steps + 1, index = step) and after every
  CPT update (len(cpt_lrs_M) + 1, index = CPT step; both parts: pt, cpt)."""
  pt = base.lrs()
  eta = np.concatenate([pt, np.asarray(cpt_lrs_M, np.float64)])
  d = np.zeros_like(eta)
  d[1:] = eta[:-1] - eta[1:]
  d[:base.warmup + 1] = 0.0  # the base's warmup is not annealing; its end starts m.
  m = np.empty_like(d)
  acc = 0.0
  for i, di in enumerate(d):
    acc = lam * acc + di
    m[i] = acc
  s1 = np.concatenate([[0.0], np.cumsum(eta)])
  s2 = np.concatenate([[0.0], np.cumsum(m)])
  n = pt.size
  return dict(s1_pt=s1[:n + 1], s2_pt=s2[:n + 1], s1_cpt=s1[n:] - s1[n], s2_cpt=s2[n:] - s2[n])


# ------------------------------------------------------------------------------ reading
def gin_bindings(text: str, scope: str) -> dict:
  """{name: value} of `scope/make_optimizer.name = value` lines of an operative config."""
  out = {}
  for line in text.splitlines():
    m = _GIN.match(line)
    if m and m['scope'] in (scope, None):
      v = m['v'].strip()
      out[m['name']] = v.strip('\'"') if v[:1] in '\'"' else _number(v)
  return out


def _number(v):
  try:
    return float(v)
  except ValueError:
    return v


def from_run(info: dict, gin_text: str, scope: str) -> Schedule:
  """A phase's schedule from its run.json and config.gin (scope: 'pretrain' or 'cpt')."""
  g = gin_bindings(gin_text, scope)
  missing = [k for k in ('peak_lr', 'schedule') if k not in g]
  if missing or 'steps' not in info or 'warmup_steps' not in info:
    raise FitError(f'run {info.get("run_id")}: cannot read its learning-rate schedule '
                   f'(config.gin lacks {scope}/make_optimizer.{missing} or run.json lacks '
                   'steps / warmup_steps)')
  return Schedule(str(g['schedule']), float(g['peak_lr']), int(info['warmup_steps']),
                  int(info['steps']), float(g.get('min_lr_ratio', 0.1)))


def from_runs(cpt: dict, base: dict) -> tuple[dict, str | None]:
  """({cpt run id: RunSchedule}, None) from run records, or ({}, why not). cpt: {run id:
  (run.json dict, config.gin text)}; base: {size: (its base run's run.json, config.gin)}.
  The caller reads the files (mixlaw.fitting / the benchmark: workdir I/O stays out of the
  laws)."""
  out = {}
  for rid, (info, cfg) in cpt.items():
    size = (info.get('spec') or {}).get('size')
    if not info or size not in base or not base[size][0]:
      return {}, f'no run.json for {rid if not info else "the base run of " + str(size)}'
    tps = float(info.get('batch_size', 0)) * float(info.get('seq_len', 0))
    if tps <= 0:
      return {}, f'run {rid}: run.json lacks batch_size / seq_len (tokens per step)'
    b_info, b_cfg = base[size]
    out[rid] = RunSchedule(from_run(b_info, b_cfg, 'pretrain'), from_run(info, cfg, 'cpt'), tps)
  return out, None


def from_columns(cols: dict, cpt_mask: np.ndarray, run_ids: np.ndarray,
                 base_mask: np.ndarray) -> tuple[dict, str | None]:
  """({run id: RunSchedule}, None) from the optional SCHEDULE_COLUMNS of a table (a CSV's), or
  ({}, which columns are missing)."""
  missing = [c for c in SCHEDULE_COLUMNS if c not in cols]
  if missing:
    return {}, f'the table has no learning-rate schedule columns ({", ".join(missing)})'

  def first(name, mask):
    v = [x for x in np.asarray(cols[name], object)[mask] if x not in (None, '')
         and not (isinstance(x, float) and math.isnan(x))]
    return v[0] if v else None

  out = {}
  for rid in sorted(set(run_ids[cpt_mask])):
    mine = cpt_mask & (run_ids == rid)
    either = mine | base_mask
    vals = {c: first(c, mine if c.startswith('cpt_') else either) for c in SCHEDULE_COLUMNS}
    if any(v is None for v in vals.values()):
      return {}, f'run {rid}: empty schedule column(s) ' + ', '.join(
          c for c, v in vals.items() if v is None)
    mk = lambda p: Schedule(str(vals[f'{p}_schedule']), float(vals[f'{p}_peak_lr']),
                            int(float(vals[f'{p}_warmup_steps'])), int(float(vals[f'{p}_steps'])),
                            float(vals[f'{p}_min_lr_ratio']))
    out[str(rid)] = RunSchedule(mk('base'), mk('cpt'), float(vals['tokens_per_step']))
  return out, None


def check_logged(s: Schedule, steps, lrs, what: str) -> None:
  """Raises FitError when a run's logged learning rates (results rows: the lr of the update
  that led to the step) disagree with its reconstructed schedule by more than float32
  rounding."""
  steps, lrs = np.asarray(steps, np.float64), np.asarray(lrs, np.float64)
  ok = np.isfinite(steps) & np.isfinite(lrs) & (steps >= 1) & (steps <= s.steps)
  if not ok.any():
    return
  want = s.lrs()[steps[ok].astype(int) - 1]
  bad = np.abs(lrs[ok] - want) > 1e-5 * s.peak + 1e-6 * np.abs(want)
  if bad.any():
    i = int(np.flatnonzero(bad)[0])
    raise FitError(f'{what}: logged lr {lrs[ok][i]:.6g} at step {int(steps[ok][i])} differs '
                   f'from the schedule read from run.json / config.gin ({want[i]:.6g})')
