"""What a run is configured by (gin): data, phase, mesh, the run spec; step counts.

`DataConfig`, `MeshConfig` and `single` are bound unscoped; `PhaseConfig` (and
`make_optimizer`) under the gin scope `pretrain/` for base runs and `cpt/` for CPT. Every value a
user can bind is checked when the config is built: a bad one is a `RunError` (one line).
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import gin

from mixlaw import arrays
from mixlaw import model as model_lib
from mixlaw import workdir
from mixlaw.errors import MixlawError


class RunError(MixlawError, ValueError):
  """A run cannot start: bad configuration or missing inputs (nothing was computed)."""


def _check(ok: bool, message: str) -> None:
  if not ok:
    raise RunError(message)


def _int(x, lo: int) -> bool:
  return isinstance(x, numbers.Integral) and not isinstance(x, bool) and x >= lo


def _real(x) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which corpora, tokenizer and sequence length; where the data lives; which backend.

  backend: 'arrays' (numpy sampler over the exported token arrays; no TensorFlow) or 'seqio'
  (batches from the weighted seqio Mixture; needs TensorFlow; the same batches).
  """
  data_dir: str = arrays.DATA_DIR
  general: str = "general"
  domain: str = "finance"
  seq_len: int = arrays.SEQ_LEN
  vocab_name: str = arrays.VOCAB_NAME
  max_validation_rows: int = arrays.VALIDATION_ROWS  # Per corpus: what every run evaluates.
  arrays_dir: str | None = None  # Exported arrays to train from (TF-free host); default: derived.
  backend: str = "arrays"

  def __post_init__(self):
    _check(_int(self.seq_len, 2), f"DataConfig.seq_len must be an integer >= 2, got "
                                  f"{self.seq_len!r}")
    _check(_int(self.max_validation_rows, 1), f"DataConfig.max_validation_rows must be an "
                                              f"integer >= 1, got {self.max_validation_rows!r}")
    _check(self.backend in ("arrays", "seqio"),
           f"DataConfig.backend must be 'arrays' or 'seqio', got {self.backend!r}")
    _check(isinstance(self.general, str) and bool(self.general),
           f"DataConfig.general must name a corpus, got {self.general!r}")
    _check(self.domain is None or isinstance(self.domain, str),
           f"DataConfig.domain must name a corpus (or be empty), got {self.domain!r}")
    _check(self.domain != self.general,
           f"DataConfig.general and DataConfig.domain are the same corpus {self.general!r}")

  @property
  def corpora(self) -> list[str]:
    return [self.general] + ([self.domain] if self.domain else [])

  def arrays_path(self) -> str:
    """The exported arrays this config trains from."""
    return self.arrays_dir or arrays.arrays_dir(self.data_dir, self.vocab_name, self.seq_len)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PhaseConfig:
  """Length and cadence of one phase; bound under the gin scopes `pretrain/` and `cpt/`.

  steps: number of optimizer updates; if 0, derived from tokens_per_param (tokens per
  non-embedding parameter, the Chinchilla-style budget), clipped to [min_steps, max_steps].
  """
  steps: int = 0
  tokens_per_param: float = 0.0
  min_steps: int = 1
  max_steps: int = 1_000_000
  batch_size: int = 16
  microbatches: int = 1  # Gradient accumulated over this many slices of the batch (memory).
  warmup_frac: float = 0.05  # Linear warmup over this share of the steps (>= 1 step).
  eval_every: int = 0  # 0: steps // 50 (>= 50 validation points per run), at least 1.
  checkpoint_every: int = 100
  keep_checkpoints: int = 2

  def __post_init__(self):
    for name, lo in (("steps", 0), ("min_steps", 1), ("batch_size", 1), ("microbatches", 1),
                     ("eval_every", 0),
                     ("checkpoint_every", 1), ("keep_checkpoints", 1)):
      v = getattr(self, name)
      _check(_int(v, lo), f"PhaseConfig.{name} must be an integer >= {lo}, got {v!r}")
    _check(_int(self.max_steps, self.min_steps), f"PhaseConfig.max_steps must be an integer >= "
                                                 f"min_steps = {self.min_steps}, got "
                                                 f"{self.max_steps!r}")
    _check(_real(self.tokens_per_param) and self.tokens_per_param >= 0,
           f"PhaseConfig.tokens_per_param must be a number >= 0, got {self.tokens_per_param!r}")
    _check(self.batch_size % self.microbatches == 0,
           f"PhaseConfig.microbatches = {self.microbatches} must divide batch_size = "
           f"{self.batch_size}")
    _check(_real(self.warmup_frac) and 0 <= self.warmup_frac < 1,
           f"PhaseConfig.warmup_frac must lie in [0, 1), got {self.warmup_frac!r}")

  def num_steps(self, n_nonemb: int, seq_len: int) -> int:
    if self.steps > 0:
      return self.steps
    if self.tokens_per_param <= 0:
      raise RunError("PhaseConfig needs steps > 0 or tokens_per_param > 0")
    n = math.ceil(self.tokens_per_param * n_nonemb / (self.batch_size * seq_len))
    return int(min(max(n, self.min_steps), self.max_steps))

  def warmup_steps(self, steps: int) -> int:
    return max(1, round(self.warmup_frac * steps))

  def eval_interval(self, steps: int) -> int:
    return self.eval_every if self.eval_every > 0 else max(1, steps // 50)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Device mesh shape (-1: all remaining devices) and multi-host initialisation."""
  data: int = -1
  fsdp: int = 1
  tensor: int = 1
  num_devices: int = 0  # 0: every device; n: the first n (e.g. one host device per core).
  distributed: bool = False

  def __post_init__(self):
    for name in ("data", "fsdp", "tensor"):
      v = getattr(self, name)
      _check(v == -1 or _int(v, 1), f"MeshConfig.{name} must be -1 or an integer >= 1, got {v!r}")
    _check(_int(self.num_devices, 0),
           f"MeshConfig.num_devices must be an integer >= 0, got {self.num_devices!r}")
    _check(isinstance(self.distributed, bool),
           f"MeshConfig.distributed must be True or False, got {self.distributed!r}")


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """What distinguishes one run of a sweep.

  seed: the base seed (initialisation and base data order; one base model per size and seed).
  cpt_seed: the CPT data-order seed; every CPT seed of a size starts from the same base model.
  """
  size: str
  phase: str  # 'base' or 'cpt'
  ratio: float = 0.0
  seed: int = 0
  cpt_seed: int = 0

  @property
  def run_id(self) -> str:
    if self.phase == "base":
      return workdir.base_run_id(self.size)
    return workdir.cpt_run_id(self.size, self.ratio, self.cpt_seed)

  @property
  def data_seed(self) -> int:
    """Seed of the data order: the base seed for base runs; for CPT a seed that differs from
    every base seed, so CPT replays general rows in an order of its own."""
    return self.seed if self.phase == "base" else 1_000_003 * (1 + self.cpt_seed) + self.seed

  def base(self) -> "RunSpec":
    return RunSpec(self.size, "base", 0.0, self.seed)

  def validate(self) -> None:
    try:
      model_lib.get_config(self.size, vocab_size=1)  # Shape only; the data sets the vocab.
    except model_lib.ModelError as e:  # Unknown size: the message lists the known ones.
      raise RunError(str(e)) from None
    if self.phase not in ("base", "cpt"):
      raise RunError(f"phase must be 'base' or 'cpt', got {self.phase!r}")
    if not (isinstance(self.ratio, (int, float)) and 0.0 <= self.ratio <= 1.0):
      raise RunError(f"ratio R must be a domain token share in [0, 1], got {self.ratio!r}")
    if self.phase == "base" and self.ratio != 0.0:
      raise RunError("base pretraining uses general data only (ratio 0)")
    if not (_int(self.seed, 0) and _int(self.cpt_seed, 0)):
      raise RunError(f"seeds must be integers >= 0, got seed={self.seed!r}, "
                     f"cpt_seed={self.cpt_seed!r}")


def group_id(specs: list[RunSpec]) -> str:
  """Id of an ensemble of `specs` (one size)."""
  return workdir.group_id(specs[0].size, [s.run_id for s in specs])


@gin.configurable
def single(size: str = gin.REQUIRED, phase: str = "base", ratio: float = 0.0, seed: int = 0,
           cpt_seed: int = 0, base_checkpoint: str | None = None) -> tuple[RunSpec, str | None]:
  """The run `mixlaw train` executes (bind single.size, single.phase, ... in gin)."""
  spec = RunSpec(size, phase, float(ratio), seed, cpt_seed)
  spec.validate()
  return spec, base_checkpoint


def scope_of(phase: str) -> str:
  return "pretrain" if phase == "base" else "cpt"


def phase_config(phase: str) -> PhaseConfig:
  with gin.config_scope(scope_of(phase)):
    return PhaseConfig()


def phase_steps(spec: RunSpec, data: DataConfig, vocab_size: int) -> int:
  """Number of optimizer updates of `spec` (the one place step counts are computed)."""
  cfg = model_lib.get_config(spec.size, vocab_size=vocab_size)
  return phase_config(spec.phase).num_steps(model_lib.count_params(cfg)["non_embedding"],
                                            data.seq_len)
