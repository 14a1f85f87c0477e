"""fit_table end to end on a synthetic sweep with a known CMR; tables, units, bad input."""

import json

import numpy as np
import pytest

import mixlaw.laws as L
from mixlaw.laws import synth
from mixlaw.laws import table as table_lib

SIZES = {'460M': 460e6, '1.6B': 1.6e9, '3.1B': 3.1e9}
RATIOS = (0.125, 0.25, 0.5, 0.75, 1.0)
LAM = 1000.0


@pytest.fixture(scope='module')
def table():
  return synth.table(sizes=SIZES, ratios=RATIOS, n_points=40, seed=3)


@pytest.fixture(scope='module')
def fits(table):
  return L.fit_table(table, n_boot=8, seed=0)


def test_fits_are_json_with_the_documented_top_level(fits, table):
  text = json.dumps(fits, allow_nan=False)
  assert json.loads(text) == fits
  assert set(fits) == {'schema_version', 'options', 'forms', 'sizes', 'curves', 'final',
                       'ratio_law', 'ratio_heldout', 'feasibility', 'cmr', 'cmr_series',
                       'cmr_law', 'surface'}
  assert fits['schema_version'] == L.SCHEMA_VERSION
  o = fits['options']
  assert (o['eps'], o['lam'], o['tokens_per_unit'], o['n_boot']) == (0.05, LAM, 0.2e9, 8)
  assert [s['size'] for s in fits['sizes']] == list(SIZES)
  for s in fits['sizes']:
    at0 = (table['size_name'] == s['size']) & (table['tokens_seen'] == 0)
    assert s['base_general_loss'] == pytest.approx(table['general_loss'][at0].mean())
    assert s['T_max'] == pytest.approx(100.0) and s['ratios'] == list(RATIOS)


def test_eq6_fits_per_curve(fits):
  assert len(fits['curves']) == 2 * len(SIZES) * len(RATIOS)
  for c in fits['curves']:
    assert c['converged'] and c['r2'] >= 0.99, (c['size'], c['ratio'], c['which'])
    assert c['form'] == {'general': 'eq6_gen', 'domain': 'eq6_dom'}[c['which']]
    np.testing.assert_allclose(c['dL_fit'], L.evaluate(c['form'], c['params'], T=c['T_grid']))
    assert all(c['params_lo'][k] <= c['params_hi'][k] for k in c['params'])


def test_cmr_recovered_with_interval(fits):
  got = {c['size']: c for c in fits['cmr']}
  for size, n in SIZES.items():
    c = got[size]
    truth = synth.true_cmr(n, 100.0, LAM)
    assert c['censored'] is None
    assert c['cmr'] == pytest.approx(truth, abs=0.02), size
    assert c['lo'] < c['hi'] and c['hi'] - c['lo'] < 0.1
    assert c['lo'] - 0.03 < truth < c['hi'] + 0.03
  cmrs = [got[s]['cmr'] for s in SIZES]
  assert cmrs == sorted(cmrs)  # the CMR grows with model size


def test_feasibility_matches_the_true_critical_points(fits):
  checked = 0
  for f in fits['feasibility']:
    t0 = synth.true_t0(SIZES[f['size']], f['ratio'], LAM)
    if abs(t0 - 100.0) < 10.0:
      continue  # too close to the budget to call
    assert f['feasible'] == (t0 <= 100.0), f
    assert f['condition_A'] and f['dL_general_T_max'] < 0.05
    if t0 < 100.0:
      assert f['T0'] == pytest.approx(t0, rel=0.05) and f['T0_kind'] == 'root'
    else:
      assert f['T0'] is None and f['T0_kind'] == 'none'
    checked += 1
  assert checked >= 10


def test_cmr_series_and_cmr_law(fits):
  for s, law in zip(fits['cmr_series'], fits['cmr_law']):
    n = SIZES[s['size']]
    vals = [(t, c) for t, c, z in zip(s['T'], s['cmr'], s['censored']) if z is None]
    assert len(vals) >= 20
    for t, c in vals:
      assert c == pytest.approx(synth.true_cmr(n, t, LAM), abs=0.03), (s['size'], t)
    assert law['form'] == 'cmr_law' and law['r2'] > 0.99 and law['converged']
    assert law['cmr_at_T_max'] == pytest.approx(synth.true_cmr(n, 100.0, LAM), abs=0.02)
    assert all(law['params_lo'][k] <= law['params_hi'][k] for k in ('a', 's', 'b'))
    assert law['cmr_at_T_max_lo'] <= law['cmr_at_T_max_hi']
    np.testing.assert_allclose(law['R_fit'], L.evaluate('cmr_law', law['params'],
                                                        T=law['T_grid']))


def test_lambda_sensitivity_is_monotone(fits):
  for c in fits['cmr']:
    lams = [s['lam'] for s in c['lam_sensitivity']]
    assert lams == [100.0, LAM, 7000.0]
    vals = [s['cmr'] for s in c['lam_sensitivity']]
    assert vals[1] == pytest.approx(c['cmr'])
    assert vals[0] >= vals[1] >= vals[2]  # T0 grows with lambda in this family


def test_held_out_ratio_predictions(fits):
  rows = [h for h in fits['ratio_heldout'] if not h['extrapolated']]
  assert len(rows) == len(SIZES) * 2 * (len(RATIOS) - 2)
  for h in rows:
    assert abs(h['rel_error']) < 2e-3, h
  laws = fits['ratio_law']
  assert {(l['size'], l['which']) for l in laws} == {(s, k) for s in SIZES
                                                     for k in ('general', 'domain')}
  for l in laws:
    assert l['r2'] > 0.99 and len(l['R_grid']) == len(l['L_fit'])


def test_surface_predicts_held_out_sizes(fits):
  sf = fits['surface']
  assert sf['reason'] is None and sf['size_variable'] == 'n_params_nonemb'
  assert sf['general']['form'] == 'cmr_surface_gen' and sf['general']['r2'] > 0.999
  assert sf['domain']['r2'] > 0.999
  assert [l['heldout_size'] for l in sf['loso']] == list(SIZES)
  for l in sf['loso']:
    assert l['general']['rel_rmse'] < 0.05 and l['domain']['rel_rmse'] < 0.05
    assert l['cmr_abs_error'] < 0.03, l
    assert l['cmr_predicted'] == pytest.approx(l['cmr_observed'], abs=0.03)


def test_format_tables(fits):
  text = L.format_tables(fits)
  for title in ('Eq. 6 fit quality', 'Held-out ratio', 'Feasibility', 'Critical mixture ratio',
                'CMR law', 'Leave-one-size-out'):
    assert title in text
  assert all(s in text for s in SIZES)


def test_write_fits_reads_jsonl_and_keeps_the_last_row(tmp_path, table, fits):
  n = len(table['run_id'])
  rows = [{k: (v[i].item() if hasattr(v[i], 'item') else v[i]) for k, v in table.items()}
          for i in range(n)]
  stale = [dict(r, domain_loss=r['domain_loss'] + 1.0) for r in rows[::7]]
  with open(tmp_path / 'results.jsonl', 'w') as f:
    for r in stale + rows:
      f.write(json.dumps(r) + '\n')
  out = L.write_fits(str(tmp_path), n_boot=0)
  on_disk = json.loads((tmp_path / 'fits.json').read_text())
  assert on_disk == out and out['options']['n_boot'] == 0
  for a, b in zip(out['cmr'], fits['cmr']):
    assert a['cmr'] == pytest.approx(b['cmr'], abs=1e-9) and a['lo'] is None
  with pytest.raises(L.FitError, match='results.jsonl'):
    L.write_fits(str(tmp_path / 'nowhere'))


def test_units_and_table_inputs(table):
  paper = table_lib.load(table)
  assert paper.tokens_per_unit == 0.2e9
  half = table_lib.load(table, tokens_per_unit=0.1e9)
  auto = table_lib.load(table, tokens_per_unit='auto')
  assert auto.sizes[0].t_max == pytest.approx(100.0)
  np.testing.assert_allclose(half.sizes[1].curves[2].t_N, 2 * paper.sizes[1].curves[2].t_N)
  pd = pytest.importorskip('pandas')
  frame = table_lib.load(pd.DataFrame(table))
  rows = table_lib.load([{k: v[i] for k, v in table.items()} for i in range(len(table['step']))])
  for other in (frame, rows):
    for a, b in zip(paper.sizes, other.sizes):
      assert a.name == b.name and a.base_dom == b.base_dom
      np.testing.assert_array_equal(a.curves[-1].dom_N, b.curves[-1].dom_N)


def _edit(table, **cols):
  out = {k: np.array(v, copy=True) for k, v in table.items()}
  out.update(cols)
  return out


def test_bad_tables_are_fit_errors(table):
  mask = lambda m: {k: np.asarray(v)[m] for k, v in table.items()}
  cases = [
      ({k: np.asarray(v)[:0] for k, v in table.items()}, 'empty'),
      ({k: v for k, v in table.items() if k != 'domain_loss'}, 'lacks column'),
      (_edit(table, general_loss=np.where(table['step'] == 500, np.nan,
                                          table['general_loss'])), 'non-finite general_loss'),
      (_edit(table, domain_loss=np.where(table['step'] == 500, np.inf,
                                         table['domain_loss'])), 'non-finite domain_loss'),
      (mask(table['ratio'] == 0.25), 'single ratio'),
      (mask(table['tokens_seen'] > 0), 'no base losses'),
      (mask(table['step'] <= 300), 'needs at least 5'),
      (_edit(table, domain=np.where(table['ratio'] == 1.0, 'arxiv', 'finance')),
       'several domains'),
      (_edit(table, ratio=table['ratio'] * 2), r'ratio must lie in \[0, 1\]'),
      (_edit(table, split=np.full(len(table['split']), 'train')), 'no validation rows'),
  ]
  for bad, message in cases:
    with pytest.raises(L.FitError, match=message):
      L.fit_table(bad, n_boot=0)
  with pytest.raises(L.FitError, match='eps'):
    L.fit_table(table, eps=-1)
  with pytest.raises(L.FitError, match='lam'):
    L.fit_table(table, lam=0)
  with pytest.raises(L.FitError, match='tokens_per_unit'):
    L.fit_table(table, tokens_per_unit=-5)
