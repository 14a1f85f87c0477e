"""mixlaw.laws: scaling-law fits for continual pre-training mixtures (CMR and related laws).

Imports nothing from the model, trainer, data side, workdirs or TensorFlow: it fits a results
table or published numbers alike (pipeline.py names the stages). Every fit runs in float64
under a scoped `jax.enable_x64`.
"""

from mixlaw.laws.api import fit_form_csv
from mixlaw.laws.api import fit_table
from mixlaw.laws.api import list_forms
from mixlaw.laws.cmr import eq7_root
from mixlaw.laws.fit import fit_curves
from mixlaw.laws.fit import fit_one
from mixlaw.laws.fit import FitResult
from mixlaw.laws.fitsjson import SCHEMA_VERSION
from mixlaw.laws.fittables import fit_tables
from mixlaw.laws.fittables import format_tables
from mixlaw.laws.forms import evaluate
from mixlaw.laws.forms import FORMS
from mixlaw.laws.forms import get_form
from mixlaw.laws.options import FitError
from mixlaw.laws.options import FitOptions
from mixlaw.laws.options import LAM_RANGE
from mixlaw.laws.pipeline import Fit
from mixlaw.laws.pipeline import run


def __getattr__(name):
  """`write_fits` / `read_fit_options` moved to mixlaw.fitting (workdir I/O is the
  application's); resolved lazily for callers not yet moved (mixlaw/cli.py, mixlaw/demo.py)."""
  if name in ('write_fits', 'read_fit_options'):
    from mixlaw import fitting  # pylint: disable=g-import-not-at-top
    return getattr(fitting, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
