"""`mixlaw fit` and `mixlaw report` on a workdir: the experiment's settings apply, the report says
what the fits say (answer, n_ok, model-free CMR, lambda, trends, gates), figures are numbered
in reading order, the HTML is self-contained."""

import base64
import json
import os
import re

import gin
import numpy as np
import pytest

from mixlaw import cli
from mixlaw import report
from mixlaw.laws import synth
from mixlaw.laws import tables


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """A synthetic sweep in a workdir: CPT rows (2 sizes x 3 ratios x 2 seeds, warmup), base
  runs' validation rows, and sweep.json with the experiment's fit options."""
  d = tmp_path_factory.mktemp('w')
  t = synth.table(sizes={'460M': 460e6, '1.6B': 1.6e9}, ratios=(0.125, 0.5, 1.0), n_points=30,
                  seed=5, n_seeds=2, warmup_evals=2)
  rows = [{k: (v[i].item() if hasattr(v[i], 'item') else v[i]) for k, v in t.items()}
          for i in range(len(t['run_id']))]
  for size, n, loss in (('460M', 460e6, 2.6), ('1.6B', 1.6e9, 2.4)):
    for step in range(0, 1100, 100):
      rows.append(dict(rows[0], run_id=f'base_{size}', phase='base', size_name=size,
                       n_params=n, n_params_nonemb=n, ratio=0.0, step=step, cpt_seed=0,
                       tokens_seen=step * 1000, split='validation',
                       general_loss=loss + 3.0 / (1 + step / 100), domain_loss=loss + 0.2))
  with open(d / 'results.jsonl', 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)
  (d / 'sweep.json').write_text(json.dumps({'fit_options': {'n_boot': 30, 'surface': False}}))
  return d


def _cli(capsys, *argv):
  gin.clear_config()
  rc = cli.main(list(argv))
  out = capsys.readouterr()
  return rc, out.out, out.err


@pytest.fixture(scope='module')
def fitted(workdir):
  # Explicit flags override sweep.json; unset ones (None) leave its settings and the defaults.
  gin.clear_config()
  assert cli.main(['fit', '--workdir', str(workdir), '--seed', '3']) == 0
  return json.loads((workdir / 'fits.json').read_text())


def test_fit_applies_the_experiments_settings(fitted):
  o = fitted['options']
  assert (o['n_boot'], o['surface'], o['seed'], o['eps']) == (30, False, 3, 0.05)
  assert o['source'] == {'n_boot': 'sweep.json', 'surface': 'sweep.json', 'seed': 'argument'}


def test_fit_prints_n_ok_model_free_and_lambda(workdir, fitted, capsys):
  text = tables.format_tables(fitted)
  for c in fitted['cmr']:
    line = next(l for l in text.splitlines() if l.startswith(c['size'] + ' '))
    assert tables.pct(c['cmr']) in line and f'{c["n_ok"]}/30' in line
    assert tables.pct(c['model_free']['cmr']) in line
  assert 'Sensitivity to lambda' in text and 'lam = 7000' in text


@pytest.fixture(scope='module')
def reported(workdir, fitted):
  gin.clear_config()
  rc = cli.main(['report', '--workdir', str(workdir)])
  assert rc == 0
  return (workdir / 'report.md').read_text()


def test_report_says_what_the_fits_say(fitted, reported):
  md = reported
  for c in fitted['cmr']:
    line = next(l for l in md.splitlines() if l.startswith(f"| {c['size']} |"))
    assert tables.pct(c['cmr']) in line and tables.interval(c['lo'], c['hi']) in line
    assert f'{c["n_ok"]}/30' in line and tables.pct(c['model_free']['cmr']) in line
  for title in ('Sensitivity to lambda', 'Trends at T_max', 'Gates / design checks',
                'Design numbers per size', 'Flagged Eq. 6 fits', 'Joint surface'):
    assert title in md, title
  for t in fitted['trends']:
    assert t['trend'] in md and t['verdict'] in ('holds', 'fails', 'undecided')
  assert 'Condition A alone decides' in md and 'interpolation' in md.lower()
  assert 'Note:' not in md  # fits.json has the experiment's settings


def test_figures_are_numbered_in_reading_order_and_html_is_self_contained(workdir, reported):
  numbers = [int(n) for n in re.findall(r'^\*Figure (\d+)\.', reported, flags=re.M)]
  assert numbers == list(range(1, len(report.FIGURES) + 1))
  for name in report.FIGURES:
    for ext in ('png', 'svg'):
      assert os.path.getsize(workdir / 'figures' / f'{name}.{ext}') > 1000
  page = (workdir / 'report.html').read_text()
  srcs = re.findall(r'<img[^>]*src="([^"]+)"', page)
  assert len(srcs) == len(report.FIGURES)
  for src in srcs:
    assert base64.b64decode(src.split(',', 1)[1])[:8] == b'\x89PNG\r\n\x1a\n'
  assert 'http://' not in page and 'https://' not in page


def test_report_notes_fits_computed_with_other_settings(workdir, reported):
  sweep = json.loads((workdir / 'sweep.json').read_text())
  (workdir / 'sweep.json').write_text(json.dumps(
      {'fit_options': dict(sweep['fit_options'], eps=0.04)}))
  try:
    w = report.load_workdir(str(workdir))
    (note,) = w['notes']
    assert 'eps=0.05' in note and 'eps=0.04' in note and 'mixlaw fit' in note
    assert f'**Note:** {note}' in report._md(report._blocks(w))
  finally:
    (workdir / 'sweep.json').write_text(json.dumps(sweep))


def test_bad_fit_options_are_one_line_errors(workdir, capsys, tmp_path):
  (tmp_path / 'results.jsonl').write_text((workdir / 'results.jsonl').read_text())
  (tmp_path / 'sweep.json').write_text(json.dumps({'fit_options': {'n_bootstrap': 3}}))
  rc, _, err = _cli(capsys, 'fit', '--workdir', str(tmp_path))
  assert rc == 2 and err.startswith('mixlaw: error:') and 'n_bootstrap' in err
  assert not (tmp_path / 'fits.json').exists()
  (tmp_path / 'sweep.json').unlink()
  rc, _, err = _cli(capsys, 'fit', '--workdir', str(tmp_path), '--eps', '-1')
  assert rc == 2 and 'eps' in err and not (tmp_path / 'fits.json').exists()
