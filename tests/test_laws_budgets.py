"""Budgets without future data, leave-future-out, paired seeds, decisions, and the CSV input."""

import types

import numpy as np
import pytest

import mixlaw.laws as L
from mixlaw.laws import bootstrap
from mixlaw.laws import csvtable
from mixlaw.laws import decisions
from mixlaw.laws import synth
from mixlaw.laws import curves as curves_lib

SIZES = dict(list(dict(synth.PAPER_SIZES).items())[:2])
RATIOS = (0.125, 0.25, 0.5, 1.0)
OPTS = dict(n_boot=4, seed=0, surface=False, budget_fractions=(0.5, 1.0), lfo_fractions=(0.5,),
            growth_fraction=0.5, predict_fraction=0.5)


@pytest.fixture(scope='module')
def table():
  return synth.table(sizes=SIZES, ratios=RATIOS, n_points=16, seed=3, n_seeds=2, seed_sd=0.02)


@pytest.fixture(scope='module')
def fits(table):
  return L.fit_table(table, **OPTS)


@pytest.fixture(scope='module')
def fits_changed_future(table):
  """The same table with every eval after 0.5 T_max raised by 0.5 nats (general loss)."""
  t = {k: v.copy() for k, v in table.items()}
  late = t['tokens_seen'] > 0.5 * t['tokens_seen'].max() * (1 + 1e-9)
  t['general_loss'] = np.where(late, t['general_loss'] + 0.5, t['general_loss'])
  return L.fit_table(t, **OPTS)


def _point(fits, size, frac):
  row = [r for r in fits['cmr_series'] if r['size'] == size][0]
  return [p for p in row['points'] if p['fraction'] == frac][0]


def test_cmr_at_a_budget_ignores_every_later_eval(fits, fits_changed_future):
  for s in SIZES:
    a, b = _point(fits, s, 0.5), _point(fits_changed_future, s, 0.5)
    for k in ('cmr', 'lo', 'hi', 'cmr_condition_A', 'model_free_def2', 'model_free_condition_A',
              'control_dL_general'):
      assert a.get(k) == b.get(k), (s, k)
    # ... while the full budget sees the change: every ratio now breaks condition A.
    assert _point(fits_changed_future, s, 1.0)['censored'] == 'below'
    assert _point(fits, s, 1.0)['cmr'] is not None
  lfo = {(r['size'], r['fraction']): r for r in fits['leave_future_out']}
  lfo2 = {(r['size'], r['fraction']): r for r in fits_changed_future['leave_future_out']}
  for key, r in lfo.items():
    assert r['cmr_predicted'] == lfo2[key]['cmr_predicted']
    assert [c['dL_general_predicted'] for c in r['curves']] == [
        c['dL_general_predicted'] for c in lfo2[key]['curves']]
    # The measured side is the full data: the change shows up as a 0.5-nat error.
    errs = [c['dL_general_error'] - c2['dL_general_error']
            for c, c2 in zip(r['curves'], lfo2[key]['curves'])]
    np.testing.assert_allclose(errs, 0.5, atol=1e-9)


def test_leave_future_out_rows_and_decisions(fits):
  rows = fits['leave_future_out']
  assert {(r['size'], r['fraction']) for r in rows} == {(s, 0.5) for s in SIZES}
  for r in rows:
    assert r['cmr_error'] == pytest.approx(r['cmr_predicted'] - r['cmr_measured'])
    assert r['T_fit_max'] == pytest.approx(0.5 * r['T_max'])
    assert len(r['curves']) == len(RATIOS)
    # Low-noise synthetic curves: the fit on the first half predicts the losses at the end.
    assert r['dL_general_max_abs_error'] < 0.01
  ids = [d['id'] for d in fits['decisions']]
  assert ids == ['a', 'b', 'c']
  c = fits['decisions'][2]
  assert [r['cmr_error'] for r in c['rows']] == [r['cmr_error'] for r in rows]
  ok = all(abs(r['cmr_error']) <= 0.06 for r in rows)
  assert (c['verdict'] == 'holds') == ok and c['verdict'] in ('holds', 'fails', 'undecided')
  # (a): CMR(T_max) - CMR(T_max / 2), each from its own refit.
  for row in fits['decisions'][0]['rows']:
    lo = min(RATIOS)
    assert row['cmr_from'] == pytest.approx(_point(fits, row['size'], 0.5)['cmr'] or lo)
    assert row['diff'] == pytest.approx(row['cmr_to'] - row['cmr_from'])
  assert fits['options']['data_orders_used'] == 'shared'
  for s in fits['cmr_series']:
    assert s['no_future_data'] and [p['fraction'] for p in s['points']] == [0.5, 1.0]


def test_shared_data_orders_resample_seed_indices_jointly(table):
  sweep = curves_lib.load(table)
  for mode in ('wild_t', 'runs'):
    shared = bootstrap.seed_draws(sweep.seed_labels(), 50, 0, True, mode)
    own = bootstrap.seed_draws(sweep.seed_labels(), 50, 0, False, mode)
    for k in (0, 1):  # weights, scales: one seed draw for every cell
      assert all(np.array_equal(d[k], shared[0][k]) for d in shared)
    assert not all(np.array_equal(d[0], own[0][0]) and np.array_equal(d[1], own[0][1])
                   for d in own)
    if mode == 'runs':  # whole runs drawn with replacement, deviations scaled by sqrt(2)
      assert all(d[0].sum(axis=1).tolist() == [2] * 50 for d in shared + own)
      assert all(np.allclose(d[1], np.sqrt(2)) for d in shared + own)
    else:  # every run kept, its deviation scaled
      assert all(np.all(d[0] == 1) for d in shared + own)
  assert sweep.shared_orders('auto') and not sweep.shared_orders('independent')


def _write_csv(path, table, drop=None, edit=None):
  cpt = table['split'] == 'validation'
  lines = ['size,n_params,ratio,seed,tokens,general_loss,domain_loss']
  seen_base = set()
  for i in np.flatnonzero(cpt):
    size, tok = str(table['size_name'][i]), int(table['tokens_seen'][i])
    if tok == 0:
      if size in seen_base:
        continue
      seen_base.add(size)
    row = dict(size=size, n_params=table['n_params'][i],
               ratio='' if tok == 0 else table['ratio'][i], seed=table['cpt_seed'][i],
               tokens=tok, general_loss=table['general_loss'][i],
               domain_loss=table['domain_loss'][i])
    if edit:
      row = edit(row)
    if row is None:
      continue
    cols = [c for c in csvtable.COLUMNS if c != drop]
    lines.append(','.join(str(row[c]) for c in cols))
  if drop:
    lines[0] = ','.join(c for c in csvtable.COLUMNS if c != drop)
  path.write_text('\n'.join(lines) + '\n')
  return path


def test_csv_gives_the_same_curves_as_the_table(tmp_path, table):
  rows = csvtable.read(_write_csv(tmp_path / 'r.csv', table))
  a, b = curves_lib.load(rows), curves_lib.load(table)
  assert [s.name for s in a.sizes] == [s.name for s in b.sizes]
  for sa, sb in zip(a.sizes, b.sizes):
    assert sa.base_gen == pytest.approx(sb.base_gen)
    for ca, cb in zip(sa.curves, sb.curves):
      np.testing.assert_allclose(ca.gen_N, cb.gen_N)
      assert [r.seed for r in ca.runs] == [r.seed for r in cb.runs]


@pytest.mark.parametrize('case, match', [
    ('missing', r"missing column\(s\) \['domain_loss'\]"),
    ('nan', r"column 'general_loss' is 'nan'"),
    ('nobase', r"size '460M' has no base row"),
    ('short', r'eval\(s\); a curve needs at least 4'),
    ('ratio', r'ratio must lie in \[0, 1\]'),
])
def test_bad_csv_is_one_line(tmp_path, table, case, match):
  edit = {
      'missing': None,
      'nan': lambda r: dict(r, general_loss='nan') if r['tokens'] > 0 else r,
      'nobase': lambda r: None if r['tokens'] == 0 and r['size'] == '460M' else r,
      'short': lambda r: None if r['tokens'] > 4 * 10 ** 9 and r['ratio'] == 0.25 else r,
      'ratio': lambda r: dict(r, ratio=1.5) if r['tokens'] > 0 else r,
  }[case]
  path = _write_csv(tmp_path / 'bad.csv', table, drop='domain_loss' if case == 'missing' else None,
                    edit=edit)
  with pytest.raises(L.FitError, match=match) as e:
    csvtable.read(path)
  assert '\n' not in str(e.value)


def test_fit_results_csv_predict_and_report_from_the_cli(tmp_path, capsys):
  """`mixlaw fit --results FILE.csv --workdir W`, then `mixlaw predict` and `mixlaw report`."""
  import json
  from mixlaw import cli
  t = synth.table(sizes=SIZES, ratios=(0.125, 0.5, 1.0), n_points=16, seed=4, n_seeds=2,
                  seed_sd=0.02)
  csv_path = _write_csv(tmp_path / 'runs.csv', t)
  w = str(tmp_path / 'w')
  rc = cli.main(['fit', '--results', str(csv_path), '--workdir', w, '--n-boot', '4',
                 '--budget-fractions', '(0.5, 1.0)', '--lfo-fractions', '(0.5,)',
                 '--surface', 'False'])
  out = capsys.readouterr().out
  assert rc == 0 and 'Leave-future-out' in out and 'Decisions' in out
  fits = json.loads((tmp_path / 'w' / 'fits.json').read_text())
  assert [s['size'] for s in fits['sizes']] == list(SIZES)
  assert fits['options']['domain'] == 'runs' and fits['options']['source']['n_boot'] == 'flag'
  n, t_max = fits['sizes'][0]['N'], fits['sizes'][0]['T_max']
  unit = fits['options']['tokens_per_unit']
  assert cli.main(['predict', '--workdir', w, '--params', str(n), '--tokens',
                   str(t_max * unit)]) == 0
  text = capsys.readouterr().out
  # Two budgets: too few points for a CMR law, and no surface was fitted; predict says so.
  assert f'CMR law of {fits["sizes"][0]["size"]}: none' in text and 'surface: none' in text
  assert 'EXTRAPOLATES' not in text
  assert cli.main(['predict', '--workdir', w, '--params', str(100 * n), '--tokens',
                   str(3 * t_max * unit)]) == 0
  assert 'EXTRAPOLATES beyond the trained size and budget' in capsys.readouterr().out
  assert cli.main(['report', '--workdir', w]) == 0
  md = (tmp_path / 'w' / 'report.md').read_text()
  assert 'Leave-future-out' in md and 'Decisions' in md
  # Bad input: one line, nothing written.
  bad = _write_csv(tmp_path / 'bad.csv', t, drop='domain_loss')
  assert cli.main(['fit', '--results', str(bad), '--workdir', str(tmp_path / 'x')]) == 2
  err = capsys.readouterr().err.strip()
  assert err.count('\n') == 0 and 'missing column' in err
  assert not (tmp_path / 'x' / 'fits.json').exists()
  assert cli.main(['predict', '--workdir', str(tmp_path / 'x'), '--params', '1e6',
                   '--tokens', '1e6']) == 2


def test_predict_reads_the_cmr_law_and_its_replicates():
  from mixlaw.laws import predict
  law = dict(size='S', params=dict(a=-0.5, s=-0.5, b=0.6),
             boot_params=[[-0.5 + 0.01 * k, -0.5, 0.6] for k in range(-20, 21)])
  fits = dict(options=dict(tokens_per_unit=1e6, t_unit='T = CPT tokens / 1e+06', ci_level=0.9,
                           size_column='n_params_nonemb', lam=1000.0, eps=0.05),
              sizes=[dict(size='S', N=1e6, T_max=100.0, ratios=[0.0, 0.5])],
              cmr_series=[dict(size='S', T=[25.0, 100.0])], cmr_law=[law],
              surface=dict(reason='not requested'))
  p = predict.predict(fits, 1.005e6, 64e6)  # within 1% of S; T = 64
  assert p['cmr_law']['cmr'] == pytest.approx(-0.5 / 8 + 0.6)
  reps = sorted(-0.5 / 8 + 0.6 + 0.01 * k / 8 for k in range(-20, 21))
  assert p['cmr_law']['lo'] == pytest.approx(np.percentile(reps, 5), abs=2e-3)
  assert p['cmr_law']['hi'] == pytest.approx(np.percentile(reps, 95), abs=2e-3)
  assert not p['extrapolated_size'] and not p['extrapolated_budget']
  assert predict.predict(fits, 1e6, 200e6)['extrapolated_budget']
  assert 'cmr_law' not in predict.predict(fits, 2e6, 64e6)
  with pytest.raises(L.FitError, match='positive'):
    predict.predict(fits, -1, 64e6)


def _family(cmr_BxJ, budgets=(50.0, 100.0)):
  b = cmr_BxJ.shape[0]
  return types.SimpleNamespace(out=dict(cmr_BxJ=cmr_BxJ, censor_BxJ=np.zeros(cmr_BxJ.shape, int)),
                               bad_B=np.zeros(b, bool), budgets=np.array(budgets))


def test_growth_verdict_reads_percentiles_of_heavy_tailed_replicates():
  """(a) with t-scaled seed draws: a few wild replicates must not make a clear rise undecided
  (a standard deviation would), and a difference whose central interval straddles 0 is
  undecided whatever its point estimate."""
  rng = np.random.default_rng(0)
  size = types.SimpleNamespace(name='S', ratios=np.array([0.1, 0.9]))
  opts = L.FitOptions(growth_fraction=0.5)
  rise = 0.1 + 0.01 * rng.standard_normal(200)
  rise[:3] = [-0.7, 0.8, -0.6]  # 1.5% wild replicates, inside the 2.3% tails of z = 2.
  start = np.full(201, 0.3)
  cmr = np.stack([start, start + np.r_[0.1, rise]], axis=1)
  row = decisions.growth([size], [_family(cmr)], [[0.5, 1.0]], opts).detail['rows'][0]
  assert row['diff'] == pytest.approx(0.1) and row['verdict'] == 'holds'
  assert row['lo'] > 0.05 and row['se'] < 0.03
  assert 0.1 - 2 * np.std(rise, ddof=1) < 0  # the SD rule would have called it undecided.
  wide = np.stack([start, start + np.r_[0.1, 0.1 + 0.2 * rng.standard_normal(200)]], axis=1)
  row = decisions.growth([size], [_family(wide)], [[0.5, 1.0]], opts).detail['rows'][0]
  assert row['lo'] < 0 < row['hi'] and row['verdict'] == 'undecided'
  fall = np.stack([start, start - np.r_[0.1, rise]], axis=1)
  row = decisions.growth([size], [_family(fall)], [[0.5, 1.0]], opts).detail['rows'][0]
  assert row['verdict'] == 'fails' and row['hi'] < 0
