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
from mixlaw.laws import fittables as tables


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
  # A flag beats a gin binding (seed), a gin binding beats sweep.json (smooth_k 4, n_boot 30 as
  # sweep.json's), sweep.json beats the default; unset ones leave sweep.json and the defaults.
  gin.clear_config()
  assert cli.main(['fit', '--workdir', str(workdir), '--seed', '3', '--gin.FitOptions.seed=7',
                   '--gin.FitOptions.smooth_k=4']) == 0
  return json.loads((workdir / 'fits.json').read_text())


def test_fit_applies_the_experiments_settings(fitted):
  o = fitted['options']
  assert (o['n_boot'], o['surface'], o['seed'], o['smooth_k'], o['eps']) == (30, False, 3, 4, 0.05)
  assert o['source'] == {'n_boot': 'sweep.json', 'surface': 'sweep.json', 'seed': 'flag',
                         'smooth_k': 'gin'}


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
  # Where each setting came from, as fits.json records it.
  assert ('settings from command-line flags: seed; gin bindings: smooth_k; sweep.json '
          'fit_options: n_boot, surface' in md)


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


# --------------------------------------------- a report regenerated from a real (tiny) sweep

SEQ = 32
REPORT_HEADINGS = (  # Every section of report.SECTIONS, in order.
    '# mixlaw report: critical mixture ratio for dom CPT', '## The answer: CMR per model size',
    '## Decisions, budgets without future data, and predictions of later evals',
    '## What this sweep can and cannot show', '### Gates / design checks', '## What was trained',
    '## Evidence', '### Across sizes: the ratio-size-steps surface', '## Reproduce')


@pytest.fixture(scope='module')
def swept(tmp_path_factory):
  """A tiny sweep trained by mixlaw (2 sizes x R in {0, 0.5, 1} x 2 CPT seeds, a few steps) on
  exported-style arrays of synthetic documents, whose meta.json says what the corpora are."""
  from mixlaw import arrays, sweep
  root = tmp_path_factory.mktemp('swept')
  data, work = root / 'arrays', root / 'w'
  rng = np.random.default_rng(0)
  meta = {'format': 'mixlaw-packed-v1', 'vocab_name': 'spm1k', 'vocab_size': 64,
          'seq_len': SEQ, 'eos_id': 1, 'pad_id': 0, 'corpora': {}}
  for name, shift in (('gen', 0), ('dom', 1)):
    os.makedirs(data / name)
    for split, n in (('train', 256), ('validation', 8)):
      docs = (rng.integers(3, 32, size=(n, SEQ)) * 2 + shift).astype(np.int32)
      docs[:, ::9] = 1  # eos: documents of 8 tokens
      np.save(arrays.split_path(str(data), name, split), docs)
    meta['corpora'][name] = {
        'docs': {'train': 256 * 4, 'validation': 32}, 'tokens': {'train': 256 * SEQ,
                                                                 'validation': 8 * SEQ},
        'bytes': {'train': 40_000, 'validation': 1_200}, 'bytes_per_token': 4.5,
        'language_shares': {'en': 1.0}, 'rows': {'train': 256, 'validation': 8},
        'max_validation_rows': 8}
  (data / arrays.META_FILE).write_text(json.dumps(meta))
  gin.clear_config()
  gin.parse_config_files_and_bindings([], [
      f"DataConfig.arrays_dir = '{data}'", f'DataConfig.seq_len = {SEQ}',
      "DataConfig.general = 'gen'", "DataConfig.domain = 'dom'",
      'DataConfig.max_validation_rows = 8', "plan.sizes = ['cpu_2xs', 'cpu_xs']",
      'plan.ratios = [0.0, 0.5, 1.0]', 'plan.cpt_seeds = [0, 1]',
      'pretrain/make_optimizer.peak_lr = 3e-3', 'cpt/make_optimizer.peak_lr = 3e-3',
      "cpt/make_optimizer.schedule = 'constant'", 'pretrain/PhaseConfig.steps = 12',
      'cpt/PhaseConfig.steps = 16', 'pretrain/PhaseConfig.batch_size = 8',
      'cpt/PhaseConfig.batch_size = 8', 'pretrain/PhaseConfig.eval_every = 4',
      'cpt/PhaseConfig.eval_every = 2', 'pretrain/PhaseConfig.checkpoint_every = 12',
      'cpt/PhaseConfig.checkpoint_every = 16', 'MeshConfig.num_devices = 2'],
      finalize_config=False)
  sweep.execute(str(work), show_progress=False)
  gin.clear_config()
  # The experiment's settings reach the fit through sweep.json (as the demo's do).
  stored = json.loads((work / 'sweep.json').read_text())
  (work / 'sweep.json').write_text(json.dumps(
      dict(stored, fit_options={'n_boot': 8, 'surface': False})))
  return work


@pytest.fixture(scope='module')
def swept_report(swept):
  gin.clear_config()
  assert cli.main(['fit', '--workdir', str(swept), '--ci-level', '0.9']) == 0
  gin.clear_config()
  assert cli.main(['report', '--workdir', str(swept)]) == 0
  return (swept / 'report.md').read_text()


@pytest.mark.slow
def test_report_of_a_sweep_has_every_section_and_the_corpora(swept, swept_report):
  md = swept_report
  at = [md.find(h + '\n') for h in REPORT_HEADINGS]
  assert -1 not in at and at == sorted(at), dict(zip(REPORT_HEADINGS, at))
  assert len(report.SECTIONS) == 8  # one per heading above but the gates subsection
  # The corpora table, from the arrays the runs trained on (run.json's data_source).
  assert '**Corpora**' in md and 'tokenizer `spm1k` (64 pieces)' in md
  for name in ('gen', 'dom'):
    assert re.search(rf'^\| {name} \| 1[,.]?0?\d* \|', md, flags=re.M), name
  assert '**Models and runs**' in md and '| cpu_2xs | 48 | 1 |' in md
  numbers = [int(n) for n in re.findall(r'^\*Figure (\d+)\.', md, flags=re.M)]
  assert numbers == list(range(1, len(report.FIGURES) + 1))
  fits = json.loads((swept / 'fits.json').read_text())
  # sweep.json also records how the runs' data orders were drawn (one per CPT seed index,
  # shared by every cell): the fit takes it from there.
  assert fits['options']['source'] == {'ci_level': 'flag', 'n_boot': 'sweep.json',
                                       'surface': 'sweep.json', 'data_orders': 'sweep.json'}
  assert fits['options']['data_orders_used'] == 'shared'
  assert 'settings from command-line flags: ci_level; gin bindings: none; sweep.json ' \
         'fit_options: data_orders, n_boot, surface' in md


@pytest.mark.slow
def test_report_captions_follow_ci_level(swept_report):
  assert '90%' in swept_report and '95%' not in swept_report
  captions = re.findall(r'^\*Figure \d+\. (.*)\*$', swept_report, flags=re.M)
  assert sum('90% interval' in c or '90% band' in c for c in captions) >= 3, captions
