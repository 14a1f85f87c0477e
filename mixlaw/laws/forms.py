"""Registry of named law forms: equation, variables, parameters, how each parameter is fitted.

A form is `fn(p, v) -> prediction`, where `p` maps parameter name -> scalar and `v` maps variable
name -> array (jax.numpy). Parameter kinds tell the fitter how to parameterise and start:
  'linear': enters the form linearly, any sign; solved by (box-constrained) least squares given
            the others. Bounded by `amp_bound`: |value| * (the largest magnitude of its term on
            the data) <= amp_bound * max |y|, i.e. no term may be more than amp_bound times the
            data (what stops two huge terms cancelling into a hook).
  'log':    positive scale, optimised as its logarithm; started on a geometric grid over `ranges`.
  'free':   any sign (exponents); started on a linear grid over `ranges`.
Every 'log' and 'free' parameter has a box `bounds` (value space) that the fitter enforces;
`ranges` (the start grid) lies inside it. `space` is the residual space: 'loss' (pred - y) or
'log' (log pred - log y). `huber_delta` is the form's default loss (fit.py): 'noise' (Huber,
delta = huber_c x a robust noise scale; every form unless stated), None (plain least squares:
ratio_law, cmr_law) or a published fixed delta (chinchilla: 1e-3 on log residuals).
"""

import dataclasses
import functools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mixlaw.laws.options import FitError

N_UNIT = 1e9  # the surfaces read model size as N / 1e9.
EXP_BOX = (-3.0, 3.0)  # every power-law exponent: wide for Eq. 6's 0.1..1, narrow enough that a
#                        term cannot stay flat over most of [T_min, T_max] and hook at one end.
AMP_BOUND = 100.0  # see 'linear' above.


@dataclasses.dataclass(frozen=True)
class Form:
  name: str
  variables: tuple[str, ...]
  params: tuple[str, ...]
  fn: Callable
  kinds: Mapping[str, str]
  ranges: Mapping[str, tuple[float, float]]  # start-grid range per non-linear parameter.
  equation: str
  source: str
  space: str = 'loss'
  swap: tuple[tuple[str, str], ...] = ()  # interchangeable (scale, exponent) terms.
  kernel: str | None = None  # a form of identical structure whose compiled fitter is shared.
  bounds: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
  amp_bound: float = AMP_BOUND
  # The loss a fit uses unless the caller says otherwise (fit.fit_curves huber_delta='auto'):
  # 'noise' = Huber, delta = huber_c x a robust noise scale of the data; None = plain least
  # squares; a number = that fixed delta (in residual units).
  huber_delta: float | str | None = 'noise'

  def __post_init__(self):
    assert set(self.kinds) == set(self.params), self.name
    for k, kind in self.kinds.items():
      assert kind in ('linear', 'log', 'free'), (self.name, k)
      assert (kind == 'linear') == (k not in self.ranges), (self.name, k)
      assert (kind == 'linear') == (k not in self.bounds), (self.name, k)
      assert not (kind == 'linear' and self.space == 'log'), (self.name, k)
      if kind != 'linear':
        (lo, hi), (rlo, rhi) = self.bounds[k], self.ranges[k]
        assert lo < rlo < rhi < hi and (kind == 'free' or lo > 0), (self.name, k)
    assert (self.huber_delta in (None, 'noise') or (not isinstance(self.huber_delta, str)
                                                    and self.huber_delta > 0)), self.name
    if self.kernel:
      base = FORMS[self.kernel]
      assert ([base.kinds[k] for k in base.params] == [self.kinds[k] for k in self.params]
              and base.space == self.space
              and len(base.variables) == len(self.variables)), self.name

  def describe(self) -> dict:
    return dict(name=self.name, variables=list(self.variables), params=list(self.params),
                equation=self.equation, source=self.source, space=self.space,
                kinds={p: self.kinds[p] for p in self.params},
                bounds={p: list(self.bounds[p]) for p in self.params if p in self.bounds},
                amp_bound=self.amp_bound if 'linear' in self.kinds.values() else None,
                huber_delta=self.huber_delta)


def pow_(x, s):
  """x**s for x >= 0 with finite gradients; 0**s is 0 for s > 0, else inf."""
  pos = x > 0
  return jnp.where(pos, jnp.exp(s * jnp.log(jnp.where(pos, x, 1.0))),
                   jnp.where(s > 0, 0.0, jnp.inf))


def ppow(x, s):
  """x**s for x > 0 (the caller guarantees it): cheaper to trace and compile than pow_."""
  return jnp.exp(s * jnp.log(x))


FORMS: dict[str, Form] = {}


def register(form: Form) -> Form:
  FORMS[form.name] = form
  return form


def get_form(name: str) -> Form:
  if name not in FORMS:
    raise FitError(f'unknown form {name!r}; known forms: {", ".join(sorted(FORMS))}')
  return FORMS[name]


def list_forms() -> list[dict]:
  """Every registered form with its variables, parameters, equation and source."""
  return [FORMS[k].describe() for k in sorted(FORMS)]


def evaluate(form, params: Mapping[str, float], **variables) -> np.ndarray:
  """Evaluates a form (name or Form) at numpy variables, in float64; returns a numpy array."""
  form = get_form(form) if isinstance(form, str) else form
  missing = [k for k in form.params if k not in params]
  missing += [k for k in form.variables if k not in variables]
  if missing:
    raise FitError(f'evaluate({form.name}): missing {missing}; needs params {form.params} '
                   f'and variables {form.variables}')
  with jax.enable_x64(True):
    p = {k: jnp.asarray(float(params[k]), jnp.float64) for k in form.params}
    v = {k: jnp.asarray(np.asarray(variables[k], np.float64)) for k in form.variables}
    return np.array(_jitted(form.name)(p, v), np.float64)


@functools.lru_cache(maxsize=None)
def _jitted(name):
  return jax.jit(FORMS[name].fn)


# ---------------------------------------------------------------- single-variable power laws

def _power(var):
  return lambda p, v: p['a'] * pow_(v[var], p['s']) + p['b']


register(Form(
    'power', ('x',), ('a', 's', 'b'), _power('x'),
    kinds=dict(a='linear', s='free', b='linear'), ranges=dict(s=(-2.0, 2.0)),
    bounds=dict(s=EXP_BOX), equation='L(x) = a * x^s + b', source='generic power law with offset'))

register(Form(
    'ratio_law', ('R',), ('a', 's', 'b'), _power('R'),
    kinds=dict(a='linear', s='free', b='linear'), ranges=dict(s=(-1.0, 2.0)),
    bounds=dict(s=EXP_BOX), kernel='power', equation='L(R) = a * R^s + b',
    source='Gu et al. 2024 (arXiv 2407.17467) Sec. 5.1: loss at T_max against the ratio R',
    huber_delta=None))  # least squares: one point per ratio, too few to estimate a noise scale.

register(Form(
    'cmr_law', ('T',), ('a', 's', 'b'), _power('T'),
    kinds=dict(a='linear', s='free', b='linear'), ranges=dict(s=(-1.5, 1.5)),
    bounds=dict(s=EXP_BOX), kernel='power',
    equation='R_CMR(T) = a * T^s + b  (the paper writes a4, s4, b3)',
    source='Gu et al. 2024 Eq. 8 (CMR scaling law), Table 5',
    huber_delta=None))  # least squares: the CMR series is derived from fits, not noisy evals.

# ---------------------------------------------------------------- the paper's Eq. 6

register(Form(
    'eq6_dom', ('T',), ('a1', 's1', 'b1'),
    lambda p, v: p['a1'] * pow_(v['T'], p['s1']) + p['b1'],
    kinds=dict(a1='linear', s1='free', b1='linear'), ranges=dict(s1=(-2.0, 2.0)),
    bounds=dict(s1=EXP_BOX), kernel='power', equation='dL_dom(T) = a1 * T^s1 + b1',
    source='Gu et al. 2024 Eq. 6 (domain-loss increment against CPT volume T)'))

register(Form(
    'eq6_gen', ('T',), ('a2', 's2', 'a3', 's3', 'b2'),
    lambda p, v: (p['a2'] * pow_(v['T'], p['s2']) + p['a3'] * pow_(v['T'], p['s3'])
                  + p['b2']),
    kinds=dict(a2='linear', s2='free', a3='linear', s3='free', b2='linear'),
    ranges=dict(s2=(-2.0, 2.0), s3=(-2.0, 2.0)), bounds=dict(s2=EXP_BOX, s3=EXP_BOX),
    equation='dL_gen(T) = a2 * T^s2 + a3 * T^s3 + b2   (reported with s2 >= s3)',
    source='Gu et al. 2024 Eq. 6 (general-loss increment: rise then plateau)',
    swap=(('a2', 's2'), ('a3', 's3'))))

# ---------------------------------------------------------------- related laws


def _dcpt(p, v):
  n, d, r = v['N'], v['D'], v['r']
  return (p['E'] + p['A'] / pow_(n, p['alpha']) + p['B'] * pow_(r, p['eta']) / pow_(d, p['beta'])
          + p['C'] / pow_(r + p['eps'], p['gamma']))


register(Form(
    'dcpt', ('N', 'D', 'r'),
    ('E', 'A', 'alpha', 'B', 'eta', 'beta', 'C', 'gamma', 'eps'), _dcpt,
    kinds=dict(E='log', A='log', alpha='free', B='log', eta='free', beta='free', C='log',
               gamma='free', eps='log'),
    ranges=dict(E=(0.5, 3.0), A=(1e1, 1e4), alpha=(0.1, 0.6), B=(1e0, 1e3), eta=(-0.5, 1.0),
                beta=(0.1, 0.6), C=(1e-3, 1.0), gamma=(0.1, 1.0), eps=(1e-3, 0.1)),
    bounds=dict(E=(1e-3, 1e2), A=(1e-3, 1e12), alpha=EXP_BOX, B=(1e-3, 1e12), eta=EXP_BOX,
                beta=EXP_BOX, C=(1e-6, 1e3), gamma=EXP_BOX, eps=(1e-6, 1.0)),
    equation='L(N, D, r) = E + A / N^alpha + B * r^eta / D^beta + C / (r + eps)^gamma',
    source='D-CPT Law, Que et al. 2024 (arXiv 2406.01375); all scales positive'))

register(Form(
    'dml_exp', ('r',), ('c', 'k', 't'),
    lambda p, v: p['c'] + p['k'] * jnp.exp(p['t'] * v['r']),
    kinds=dict(c='log', k='log', t='free'),
    ranges=dict(c=(0.1, 3.0), k=(0.05, 3.0), t=(-5.0, 5.0)),
    bounds=dict(c=(1e-3, 1e2), k=(1e-6, 1e2), t=(-30.0, 30.0)),
    equation='L(r) = c + k * exp(t * r)',
    source='Data Mixing Laws, Ye et al. 2024 (arXiv 2403.16952), one domain'))


def _dml_k(k):
  names = tuple(f'r{j}' for j in range(1, k + 1))
  ts = tuple(f't{j}' for j in range(1, k + 1))

  def fn(p, v):
    z = sum(p[t] * v[r] for t, r in zip(ts, names))
    return p['c'] + p['k'] * jnp.exp(z)

  return register(Form(
      f'dml_exp_{k}', names, ('c', 'k') + ts, fn,
      kinds=dict(c='log', k='log', **{t: 'free' for t in ts}),
      ranges=dict(c=(0.1, 3.0), k=(0.05, 3.0), **{t: (-5.0, 5.0) for t in ts}),
      bounds=dict(c=(1e-3, 1e2), k=(1e-6, 1e2), **{t: (-30.0, 30.0) for t in ts}),
      equation=f'L(r1..r{k}) = c + k * exp(sum_j t_j * r_j)',
      source=f'Data Mixing Laws, Ye et al. 2024 (arXiv 2403.16952), {k}-domain form'))


_dml_k(2)
_dml_k(3)

register(Form(
    'bimix', ('r', 's'), ('A', 'alpha', 'B', 'beta', 'C'),
    lambda p, v: p['A'] / pow_(v['r'], p['alpha']) * (p['B'] / pow_(v['s'], p['beta']) + p['C']),
    kinds=dict(A='log', alpha='free', B='log', beta='free', C='log'),
    ranges=dict(A=(0.3, 3.0), alpha=(0.0, 0.5), B=(0.1, 100.0), beta=(0.1, 1.0), C=(0.3, 3.0)),
    bounds=dict(A=(1e-3, 1e3), alpha=EXP_BOX, B=(1e-4, 1e6), beta=EXP_BOX, C=(1e-4, 1e3)),
    equation='L(r, s) = (A / r^alpha) * (B / s^beta + C)',
    source='BiMix (arXiv 2405.14908); A scales (B, C) jointly: only A*B and A*C are identified'))

register(Form(
    'chinchilla', ('N', 'D'), ('E', 'A', 'B', 'alpha', 'beta'),
    lambda p, v: p['E'] + p['A'] / pow_(v['N'], p['alpha']) + p['B'] / pow_(v['D'], p['beta']),
    kinds=dict(E='log', A='log', B='log', alpha='free', beta='free'),
    ranges=dict(E=(0.4, 2.7), A=(1.0, 1e10), B=(1.0, 1e10), alpha=(0.0, 2.0), beta=(0.0, 2.0)),
    bounds=dict(E=(1e-3, 1e2), A=(1e-3, 1e16), B=(1e-3, 1e16), alpha=EXP_BOX, beta=EXP_BOX),
    equation='L(N, D) = E + A / N^alpha + B / D^beta  (residuals in log L, i.e. LSE form)',
    source='Hoffmann et al. 2022 approach 3; Besiroglu et al. 2024 (arXiv 2404.10102)',
    space='log', huber_delta=1e-3))  # the published method: Huber delta 1e-3 on log residuals.

# ---------------------------------------------------------------- mixlaw's joint surfaces


def boxcox(t, ta, s):
  """((t / ta)^s - 1) / s, and log(t / ta) at s = 0 (smooth through it): 0 at ta, increasing in
  t for every s, saturating at -1/s for s < 0."""
  lx = jnp.log(t / ta)
  small = jnp.abs(s) < 1e-6
  ss = jnp.where(small, 1.0, s)
  return jnp.where(small, lx * (1 + 0.5 * s * lx), jnp.expm1(ss * lx) / ss)


def _surface_gen(p, v):
  n = v['N'] / N_UNIT
  drift = p['A2'] * ppow(n, -p['nu2']) * boxcox(v['T'], p['Ta'], p['s2'])
  rise = (p['A3'] * ppow(v['R'] + p['eps'], p['rho3']) * ppow(n, -p['nu3'])
          * boxcox(v['T'], p['Ta'], p['s3'] + p['k3'] * v['R']))
  return drift + rise


register(Form(
    'cmr_surface_gen', ('R', 'N', 'T'),
    ('A2', 'nu2', 's2', 'A3', 'rho3', 'nu3', 's3', 'k3', 'eps', 'Ta'), _surface_gen,
    kinds=dict(A2='linear', nu2='free', s2='free', A3='linear', rho3='free', nu3='free',
               s3='free', k3='free', eps='log', Ta='log'),
    ranges=dict(nu2=(-0.5, 0.5), s2=(0.1, 1.0), rho3=(0.3, 2.0), nu3=(-0.5, 0.5),
                s3=(-1.5, -0.1), k3=(0.0, 1.5), eps=(1e-3, 1.0), Ta=(0.3, 3.0)),
    bounds=dict(nu2=EXP_BOX, s2=EXP_BOX, rho3=EXP_BOX, nu3=EXP_BOX, s3=EXP_BOX, k3=EXP_BOX,
                eps=(1e-4, 10.0), Ta=(1e-3, 1e3)),
    equation=('dL_gen(R, N, T) = A2 n^-nu2 h(T; s2) + A3 (R + eps)^rho3 n^-nu3 h(T; s3 + k3 R),'
              '  h(T; s) = ((T / Ta)^s - 1) / s  (log(T / Ta) at s = 0),  n = N / 1e9'),
    source=('mixlaw: joint ratio-size-steps surface, the paper\'s two-term Eq. 6 (general) '
            'anchored at dL(Ta) = 0 (Ta in units of T). A2 (any sign; < 0 under replay): the '
            'R-independent drift, so R = 0 has its own change; A3 > 0: the rise, saturating '
            'where s3 + k3 R < 0 and still growing where > 0. With A2 < 0 < A3 the loss rises, '
            'turns at (T*/Ta)^(s2 - s3 - k3 R) = A3 (R + eps)^rho3 n^(nu2 - nu3) / -A2 (a turn '
            'time depending on R and N) and falls')))

register(Form(
    'cmr_surface_dom', ('R', 'N', 'T'), ('C', 'eps', 'rho', 'nu', 'sigma'),
    lambda p, v: (p['C'] * ppow(v['R'] + p['eps'], p['rho']) * ppow(v['N'] / N_UNIT, -p['nu'])
                  * ppow(v['T'], p['sigma'])),
    kinds=dict(C='linear', eps='log', rho='free', nu='free', sigma='free'),
    ranges=dict(eps=(1e-3, 0.3), rho=(0.05, 1.5), nu=(-0.5, 0.5), sigma=(0.05, 1.0)),
    bounds=dict(eps=(1e-4, 10.0), rho=EXP_BOX, nu=EXP_BOX, sigma=EXP_BOX),
    equation='dL_dom(R, N, T) = C (R + eps)^rho n^-nu T^sigma,  n = N / 1e9  (C < 0)',
    source='mixlaw: joint ratio-size-steps surface, domain side (D-CPT-like power terms)'))
