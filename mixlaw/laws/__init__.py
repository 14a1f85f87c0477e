"""mixlaw.laws: scaling-law fits for continual pre-training mixtures (CMR and related laws).

Imports nothing from the model, trainer, data side or TensorFlow: it fits a results table or
published numbers alike. Every fit runs in float64 under a scoped `jax.enable_x64`.
"""

from mixlaw.laws.api import fit_form_csv
from mixlaw.laws.api import fit_table
from mixlaw.laws.api import list_forms
from mixlaw.laws.api import read_fit_options
from mixlaw.laws.api import SCHEMA_VERSION
from mixlaw.laws.api import write_fits
from mixlaw.laws.cmr import eq7_root
from mixlaw.laws.fit import fit_curves
from mixlaw.laws.fit import fit_one
from mixlaw.laws.fit import FitResult
from mixlaw.laws.forms import evaluate
from mixlaw.laws.forms import FORMS
from mixlaw.laws.forms import get_form
from mixlaw.laws.options import FitError
from mixlaw.laws.options import FitOptions
from mixlaw.laws.options import LAM_RANGE
from mixlaw.laws.fittables import fit_tables
from mixlaw.laws.fittables import format_tables
