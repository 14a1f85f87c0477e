"""One table model for the fits: `mixlaw fit` prints it as text, the report as Markdown/HTML.

A `Table` holds formatted cells (strings); `fit_tables(fits)` builds every table of a fits dict,
`to_text` renders them. Numbers are formatted once, here (`fmt`, `pct`).
"""

import dataclasses
import math


@dataclasses.dataclass
class Table:
  key: str
  title: str
  header: list
  rows: list
  note: str = ''


def fmt(x, digits: int = 4) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return '–'
  if isinstance(x, bool):
    return 'yes' if x else 'no'
  if isinstance(x, int):
    return f'{x:,}'
  if isinstance(x, str):
    return x
  ax = abs(x)
  if ax != 0 and (ax < 1e-3 or ax >= 1e5):
    return f'{x:.{max(digits - 1, 1)}e}'
  return f'{x:.{digits}f}'


def pct(x, digits: int = 1) -> str:
  return '–' if x is None or not math.isfinite(x) else f'{100 * x:.{digits}f}%'


def interval(lo, hi, f=pct) -> str:
  if lo is None and hi is None:
    return '–'
  return f'[{"below" if lo is None else f(lo)}, {f(hi)}]'


def _cmr_text(cmr, censored):
  return {'above': f'>= {pct(cmr)}', 'below': 'below smallest R'}.get(censored, pct(cmr))


def fit_tables(fits: dict) -> list:
  """Every table of a fits dict, in reading order."""
  out = [_answer(fits), _def2_checks(fits), _decisions(fits), _lam(fits), _series(fits),
         _lfo(fits)]
  out += _design(fits)
  out.append(_quality(fits))
  flags = [[c['size'], fmt(c['ratio'], 3), c['which'], '; '.join(c['flags'])]
           for c in fits['curves'] if c['flags']]
  out.append(Table('flags', 'Flagged Eq. 6 fits (at a bound, off the data range, unconverged)',
                   ['size', 'R', 'loss', 'why'], flags,
                   'flagged fits are still used; the CMR rows list the flags they rest on'))
  out += _laws(fits)
  out += _surface(fits)
  return out


def _design(fits):
  """Trends, gates, per-size design numbers, base losses and noise."""
  o = fits['options']
  out = []
  out.append(Table('trends', 'Trends at T_max, judged against the noise', [
      'trend', 'verdict', 'noise (se)', 'evidence'],
      [[t['trend'], t['verdict'], f'{fmt(t["noise"], 3)} {t["noise_unit"]}', t['evidence']]
       for t in fits['trends']],
      'verdict: holds / fails / undecided at z = 2 standard errors; noise: the median standard '
      'error of a smoothed loss change (nats) or of a CMR (bootstrap) it was judged against'))
  g = fits['gates']
  out.append(Table('gates', 'Gates / design checks (what a powered experiment needs)',
                   ['check', 'measured', 'threshold', 'pass'],
                   [[c['name'], c['value'], c['threshold'],
                     '–' if c['passed'] is None else fmt(c['passed'])] for c in g['checks']],
                   'thresholds are fit options (gate_*)'))
  out.append(Table('gates_sizes', 'Design numbers per size', [
      'size', 'L_gen(S)', 'gain last 10% base', 'base tokens / param', 'R=0 dL_gen(T_max)',
      'max R', 'dL_gen(T_max) at max R', 'sigma eval', 'seeds', 'evals/run'],
      [[p['size'], fmt(p['base_general_loss']), fmt(p['base_gain_last_10pct']),
        fmt(p['base_tokens_per_param'], 3), fmt(p['control_dL_general']), fmt(p['max_ratio'], 3),
        fmt(p['max_ratio_dL_general']), fmt(p['sigma_eval']), str(p['min_seeds']),
        str(p['evals_per_run'])] for p in g['per_size']]))
  out.append(Table('sizes', 'Base losses, budgets and noise', [
      'size', 'N', 'L_gen(S)', 'L_dom(S)', 'T_min', 'T_max', 'seeds/ratio', 'evals/run',
      'warmup step', 'sigma gen', 'sigma dom', 'rho'],
      [[s['size'], fmt(s['N']), fmt(s['base_general_loss']), fmt(s['base_domain_loss']),
        fmt(s['T_min'], 3), fmt(s['T_max'], 3), ','.join(map(str, s['seeds_per_ratio'])),
        str(s['evals_per_run']), str(s['warmup_step']), fmt(s['sigma_general']),
        fmt(s['sigma_domain']), fmt(s['rho'], 2)] for s in fits['sizes']],
      f'{o["t_unit"]}; CPT evals at step <= the warmup step are not fitted; sigma: per-eval '
      f'noise from second differences; rho: lag-1 correlation of fit residuals (bias-'
      f'corrected), used by the bootstrap'))
  return out


def _laws(fits):
  """Held-out ratios, ratio laws, feasibility and CMR laws."""
  o = fits['options']
  out = []
  out.append(Table('heldout', 'Held-out ratio predictions at T_max (paper Table 2)', [
      'size', 'loss', 'R', 'measured', 'predicted', 'error (nats)', 'error / eps', 'rel. error',
      'kind'],
      [[h['size'], h['which'], fmt(h['heldout_ratio'], 3), fmt(h['measured']),
        fmt(h['predicted']), fmt(h['abs_error']), fmt(h['error_eps'], 2),
        pct(h['rel_error'], 2), 'extrapolation' if h['extrapolated'] else 'interpolation']
       for h in fits['ratio_heldout']]))
  out.append(Table('ratio_law', 'Ratio law L(R) = a R^s + b at T_max', [
      'size', 'loss', 'a', 's', 'b', 'R2', 'at bound'],
      [[x['size'], x['which'], fmt(x['params']['a']), fmt(x['params']['s']),
        fmt(x['params']['b']), fmt(x['r2']), ', '.join(x['at_bound']) or '–']
       for x in fits['ratio_law']]))
  out.append(Table('feasibility', 'Feasibility per trained ratio at T_max (Definition 2)', [
      'size', 'R', 'T0', 'T0 kind', 'g(T_max)', 'dL_gen(T_max)', 'cond. A', 'feasible'],
      [[f['size'], fmt(f['ratio'], 3), fmt(f['T0'], 3), f['T0_kind'], fmt(f['g_T_max']),
        fmt(f['dL_general_T_max']), fmt(f['condition_A']), fmt(f['feasible'])]
       for f in fits['feasibility']],
      f'T0: the last + to - sign change of g = dF/dT before T_max (lam = {o["lam"]:g}); '
      'before_first_eval: g <= 0 from T_min on; none: g(T_max) > 0'))
  out.append(Table('cmr_law', 'CMR law R_CMR(T) = a T^s + b (paper Eq. 8, Table 5)', [
      'size', 'a', 's', 'b', 'R2', 'R_CMR(T_max)', 'interval', 'n_ok', 'at bound'],
      [[l['size']] + ([fmt(l['params'][k]) for k in ('a', 's', 'b')] +
                      [fmt(l['r2'], 3), pct(l['cmr_at_T_max']),
                       interval(l['cmr_at_T_max_lo'], l['cmr_at_T_max_hi']),
                       f'{l["n_ok"]}/{o["n_boot"]}', ', '.join(l['at_bound']) or '–']
                      if l['params'] else ['–'] * 4 + [l['reason'], '–', '–', '–'])
       for l in fits['cmr_law']]))
  return out


def _answer(fits):
  o = fits['options']
  rows = []
  for c in fits['cmr']:
    mf = c['model_free']
    rows.append([
        c['size'], _cmr_text(c['cmr'], c['censored']), interval(c['lo'], c['hi']),
        f'{c["n_ok"]}/{c["n_boot"]}', _cmr_text(c['cmr_condition_A'], c['censored_condition_A']),
        _cmr_text(mf['cmr'], mf['censored']), interval(mf['lo'], mf['hi']),
        {True: 'DISAGREE', False: 'agree', None: '–'}[mf['disagrees']],
        _cmr_text(c['model_free_def2']['cmr'], c['model_free_def2']['censored']),
        interval(c['model_free_def2']['lo'], c['model_free_def2']['hi']),
        'DISAGREE' if c['fitted_vs_model_free']['disagree'] else 'agree',
        f'{_decider(c["decides"])} / {_decider(c["model_free_def2"]["decides"])}',
        f'{c["interp_exponent_general"]:.3g} / {c["interp_exponent_domain"]:.3g}',
        str(len(c['flags']))])
  note = (f'{level(o)} intervals; n_ok: bootstrap replicates that succeeded of n_boot. '
          f'Model-free (cond. A): smoothed dL_gen (mean of the last {o["smooth_k"]} evals) '
          'interpolated in R; compared with the fitted condition-A-only CMR. Model-free '
          f'(Def. 2): condition A and the window slopes (last {100 * o["slope_window"]:g}% of '
          'T) of dL_gen and dL_dom, g = slope_dom + lam slope_gen <= 0; compared with the fitted '
          'Definition-2 CMR. decided by: which condition sets the fitted / model-free '
          'Definition-2 CMR. e: ratio-law exponents of the interpolation in u = R^e (general / '
          'domain). Widened intervals: ' +
          (', '.join(c['size'] for c in fits['cmr'] if c['ci_widened']) or 'none'))
  return Table('cmr', 'Critical mixture ratio at T_max', [
      'size', 'CMR', 'interval', 'n_ok', 'CMR (cond. A only)', 'model-free CMR (cond. A)',
      'model-free interval', 'model-free vs fit (A)', 'model-free CMR (Def. 2)',
      'model-free interval (Def. 2)', 'model-free vs fit (Def. 2)', 'decided by (fit / free)',
      'e gen / dom', 'flags'], rows, note)


def level(o) -> str:
  return f'{100 * o["ci_level"]:g}%'


def _decider(d):
  return {'A': 'condition A', 'B': 'critical point'}.get(d, 'none')


def _def2_checks(fits):
  rows = [[c['size'], pct(c['cmr']), pct(c['model_free_def2']['cmr']),
           c['fitted_vs_model_free']['reason']]
          for c in fits['cmr'] if c['fitted_vs_model_free']['disagree']]
  return Table('def2_flags', 'Fitted against model-free Definition-2 CMR: flagged sizes',
               ['size', 'fitted', 'model-free', 'why they differ'], rows,
               'a size is flagged when the two differ by more than the root sum of squares of '
               'their facing half-widths')


def _decisions(fits):
  rows = []
  for d in fits.get('decisions', []):
    rows.append([d['id'], d['claim'], d['verdict'], _decision_numbers(d)])
  return Table('decisions', 'Decisions (computed from the fits)', [
      'id', 'claim', 'verdict', 'numbers'], rows,
      f'verdicts at z = {fits["options"]["decision_z"]:g} against the measured noise; (a), (b): '
      'the difference and the central interval of its bootstrap replicates at the level of '
      '+-z normal SE')


def _band(r):
  """A decision row's interval [lo, hi] (decisions.py), or +- SE where it has none."""
  if r.get('lo') is not None and r.get('hi') is not None:
    return f'[{fmt(r["lo"], 3)}, {fmt(r["hi"], 3)}]'
  return f'+- {fmt(r.get("se"), 3)}'


def _decision_numbers(d):
  if d.get('reason'):
    return d['reason']
  if d['id'] == 'a':
    return '; '.join(f'{r["size"]}: {pct(r.get("cmr_from"))} -> {pct(r.get("cmr_to"))} '
                     f'(diff {fmt(r.get("diff"), 3)} {_band(r)}, {r["verdict"]})'
                     for r in d['rows'])
  if d['id'] == 'b':
    return '; '.join(f'{r["larger"]} - {r["smaller"]}: {fmt(r["diff"], 3)} {_band(r)} '
                     f'({r["verdict"]})' for r in d['rows'])
  if d['id'] == 'c':
    return '; '.join(f'{r["size"]}: CMR error {fmt(r["cmr_error"], 3)}, max |dL_gen error| '
                     f'{fmt(_max_abs(r["dL_general_errors"]), 4)}' for r in d['rows'])
  if d['id'] == 'd':
    return (f'{d["size"]}: predicted {pct(d.get("cmr_predicted"))}, measured '
            f'{pct(d.get("cmr_measured"))}, error {fmt(d.get("cmr_error"), 3)}')
  if d['id'] == 'e':
    return '; '.join(f'{r["size"]}: {pct(r["cmr"])} vs {pct(r["cmr_other"])} (diff '
                     f'{fmt(r["diff"], 3)} +- {fmt(r["se"], 3)})' for r in d['rows'])
  return ''


def _max_abs(v):
  v = [abs(e) for e in v if e is not None]
  return max(v) if v else None


def _series(fits):
  o = fits['options']
  rows = []
  for ser in fits['cmr_series']:
    for p in ser['points']:
      if p.get('reason'):
        rows.append([ser['size'], fmt(p['fraction'], 3), fmt(p['T'], 3), p['reason']] +
                    ['–'] * 4)
        continue
      rows.append([ser['size'], fmt(p['fraction'], 3), fmt(p['T'], 3),
                   _cmr_text(p['cmr'], p['censored']), interval(p['lo'], p['hi']),
                   _cmr_text(p['cmr_condition_A'], p['censored_condition_A']),
                   _cmr_text(p['model_free_def2']['cmr'], p['model_free_def2']['censored']),
                   fmt(p.get('control_dL_general'))])
  return Table('series', 'CMR at every budget, each from the evals up to that budget only', [
      'size', 'T_b / T_max', 'T_b', 'CMR (Def. 2)', 'interval', 'CMR (cond. A)',
      'model-free (Def. 2)', 'R=0 dL_gen(T_b)'], rows,
      f'{level(o)} intervals; every budget is a separate refit (Eq. 6, bootstrap, CMR) of the '
      'evals with T <= T_b; the CMR law is fitted to these points')


def _lfo(fits):
  o = fits['options']
  rows = []
  for r in fits.get('leave_future_out', []):
    dg = [abs(c['dL_general_error']) for c in r['curves'] if c['dL_general_error'] is not None]
    dd = [abs(c['dL_domain_error']) for c in r['curves'] if c['dL_domain_error'] is not None]
    rows.append([r['size'], fmt(r['fraction'], 3), pct(r['cmr_predicted']),
                 pct(r['cmr_measured']), fmt(100 * r['cmr_error'] if r['cmr_error'] is not None
                                            else None, 1),
                 pct(r['cmr_condition_A_predicted']), pct(r['cmr_condition_A_measured']),
                 fmt(max(dg, default=None)), fmt(max(dg, default=0) / o['eps'], 2),
                 fmt(max(dd, default=None))])
  return Table('lfo', 'Leave-future-out: fit T <= f T_max, predict T_max', [
      'size', 'f', 'CMR predicted', 'CMR measured', 'error (points)', 'cond. A predicted',
      'cond. A measured', 'max |dL_gen err|', '/ eps', 'max |dL_dom err|'], rows,
      'measured: the full fit\'s CMR at T_max; losses: the smoothed measured dL at T_max '
      '(nats); errors = predicted - measured')


def _lam(fits):
  o = fits['options']
  lams = [s['lam'] for s in fits['cmr'][0]['lam_sensitivity']] if fits['cmr'] else []
  return Table('lam', 'Sensitivity to lambda (CMR at T_max)',
               ['size'] + [f'lam = {l:g}' for l in lams] + ['lambda matters'],
               [[c['size']] + [_cmr_text(s['cmr'], s['censored']) for s in c['lam_sensitivity']]
                + [fmt(c['lam_decides'])] for c in fits['cmr']],
               f'the paper uses lambda in {o["lam_range"]}; fits use lam = {o["lam"]:g}')


def _quality(fits):
  q = {}
  for c in fits['curves']:
    q.setdefault((c['size'], c['ratio']), {})[c['which']] = c
  return Table('quality', 'Eq. 6 fit quality (paper Table 3)', [
      'size', 'R', 'terms (gen)', 'R2 gen', 'MSE gen', 'R2 dom', 'MSE dom', 'n_ok',
      'converged', 'flags'],
      [[s, fmt(r, 3), str(v['general']['terms']), fmt(v['general']['r2']),
        fmt(v['general']['mse']), fmt(v['domain']['r2']), fmt(v['domain']['mse']),
        str(v['general']['n_ok']), fmt(v['general']['converged'] and v['domain']['converged']),
        str(len(v['general']['flags']) + len(v['domain']['flags']))]
       for (s, r), v in q.items()],
      'terms: 2 = the paper\'s two-term general law, 1 = its one-term case a T^s + b (chosen '
      'by AICc when the data do not support two)')


def _surface(fits):
  sf = fits['surface']
  if sf.get('reason'):
    return [Table('surface', 'Joint surface (R, N, T)', ['status'], [['skipped']],
                  sf['reason'])]
  eps = fits['options']['eps']
  out = [Table('surface', 'Joint surface (R, N, T): fit and CMR', [
      'size', 'CMR surface', 'its interval', 'CMR per size', 'its interval',
      'inside per-size interval', 'R = 0: dL_gen surface', 'R = 0: measured'],
      [[c['size'], _cmr_text(c['cmr_surface'], c['censored']),
        interval(c.get('lo'), c.get('hi')), pct(c['cmr_observed']),
        interval(c.get('observed_lo'), c.get('observed_hi')), fmt(c.get('inside_observed')),
        fmt(c.get('control_dL_general')), fmt(c.get('control_dL_general_measured'))]
       for c in sf['cmr']],
      f'R2 general {fmt(sf["general"]["r2"])} (converged {fmt(sf["general"]["converged"])}), '
      f'domain {fmt(sf["domain"]["r2"])} (converged {fmt(sf["domain"]["converged"])})')]
  if sf['loso']:
    out.append(Table('loso', 'Leave-one-size-out (surface refit without the size)', [
        'held out', 'converged', 'RMSE gen (nats)', 'RMSE gen / eps', 'rel. RMSE gen',
        'RMSE dom (nats)', 'RMSE dom / eps', 'CMR predicted', 'CMR per size', 'error (points)'],
        [[l['heldout_size'], fmt(l['converged']), fmt(l['general']['rmse']),
          fmt(l['general']['rmse_eps'], 2), pct(l['general']['rel_rmse']),
          fmt(l['domain']['rmse']), fmt(l['domain']['rmse_eps'], 2), pct(l['cmr_predicted']),
          pct(l['cmr_observed']), fmt(l['cmr_error_points'], 1)] for l in sf['loso']],
        f'eps = {eps:g} nats'))
  else:
    out.append(Table('loso', 'Leave-one-size-out', ['status'], [['not run']],
                     sf.get('loso_reason', '')))
  return out


def to_text(tables, header: str = '') -> str:
  parts = [header] if header else []
  for t in tables:
    cells = [list(map(str, t.header))] + [[str(v) for v in r] for r in t.rows]
    width = [max(len(r[i]) for r in cells) for i in range(len(t.header))]
    lines = [t.title, '  '.join(h.ljust(w) for h, w in zip(cells[0], width)),
             '  '.join('-' * w for w in width)]
    lines += ['  '.join(v.ljust(w) for v, w in zip(r, width)) for r in cells[1:]]
    if not t.rows:
      lines.append('(none)')
    if t.note:
      lines.append(f'  note: {t.note}')
    parts.append('\n'.join(lines))
  return '\n\n'.join(parts) + '\n'


def format_tables(fits: dict) -> str:
  """Plain-text tables of a fits dict (what `mixlaw fit` prints)."""
  o = fits['options']
  head = (f'mixlaw fits (schema {fits["schema_version"]}): eps={o["eps"]:g} lam={o["lam"]:g} '
          f'{o["t_unit"]} domain={o["domain"]} n_boot={o["n_boot"]} seed={o["seed"]}')
  return to_text(fit_tables(fits), head)
